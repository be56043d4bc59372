"""The one error the integrations raise: a server livepatch cannot patch as it is built."""

from __future__ import annotations

from livepatch.errors import LivepatchError


class IntegrationRefused(LivepatchError):
    """A framework feature that live patching cannot cover (a forking server): raised where the server
    is built, before it accepts a client. `livepatch run` reports the message and exits 1."""
