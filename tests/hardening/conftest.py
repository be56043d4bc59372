"""tests/hardening: attacks and malformed input against the control socket, `.lpatch` files and the CLI.

The agent tests' helpers (the test service as a subprocess, the installed `livepatch` command) are reused
from tests/agent/agent_helpers.py, not copied.
"""

from __future__ import annotations
