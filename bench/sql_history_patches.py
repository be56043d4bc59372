"""Patches #1-#5 of the sqlserver figures: `bench/history_patches.py --server sql` (the same commands,
kept under this name because docs/results-sql.md and lpbench.sql.history cite it).

.venv/bin/python bench/sql_history_patches.py choose|today|check [--since REV] [--rev HEAD] [--repo .] [--out DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from history_patches import main

if __name__ == "__main__":
    sys.exit(main(server="sql"))
