"""A tiny line-protocol service used by the agent's end-to-end tests (version 1)."""
