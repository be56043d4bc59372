"""tests/integrations: unmodified servers under `livepatch run`.

The agent tests' helpers (the installed `livepatch` command, socket directories) are reused from
tests/agent/agent_helpers.py, not copied.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "agent"))
