"""kvserver: a Redis-protocol key-value server on one event loop, prepared for live patching."""
