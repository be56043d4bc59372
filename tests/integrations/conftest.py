"""tests/integrations: unmodified servers under `livepatch run`.

The agent tests' helpers (the installed `livepatch` command, socket directories) are reused from
tests/agent/agent_helpers.py, not copied.
"""

from __future__ import annotations
