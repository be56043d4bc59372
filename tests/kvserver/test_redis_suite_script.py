"""scripts/redis_suite.py: parsing the Redis runner's output and scoring kvserver against Redis.

The parser is held to output recorded from `./runtest` (ANSI colours, repeated test names, an
exception ending a unit). With REDIS_SUITE=<dir holding Redis 7.0.15's runtest and tests/> set, the
script also runs the small `info-command` unit end to end against both servers.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_tool

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "redis_suite.py"
_spec = importlib.util.spec_from_file_location("redis_suite", SCRIPT)
assert _spec is not None and _spec.loader is not None
suite = importlib.util.module_from_spec(_spec)
sys.modules["redis_suite"] = suite  # dataclasses look their module up
_spec.loader.exec_module(suite)

G, R, Y, C, E = "\x1b[0;32;49m", "\x1b[0;31;49m", "\x1b[0;33;49m", "\x1b[0;36;49m", "\x1b[0m"
FINISHED = f"""[ready]: 11985
[{G}ok{E}]: SET and GET an item (0 ms)
[{R}err{E}]: MGET in tests/unit/type/string.tcl
Expected 'a' to equal or match 'b'
[{C}ignore{E}]: GETDEL propagate: Tag: needs:repl denied
[{G}ok{E}]: Same name (1 ms)
[{G}ok{E}]: Same name (2 ms)
[{Y}skip{E}]: Skipped one
[1/1 {Y}done{E}]: unit/type/string (10 seconds)
"""
CRASHED = f"""[{G}ok{E}]: Same name (1 ms)
[{R}exception{E}]: Executing test client: ERR unknown command 'XADD', with args beginning with: 'k'.
    while executing
"""


def test_parse_a_finished_unit() -> None:
    run = suite.parse_output(FINISHED)
    assert run.crashed == ""
    assert run.outcomes == {
        "SET and GET an item#1": "ok",
        "MGET#1": "err",
        "Same name#1": "ok",
        "Same name#2": "ok",
        "Skipped one#1": "skip",
    }


def test_a_unit_ended_by_an_exception_is_crashed_and_unreached_tests_fail() -> None:
    redis_run = suite.parse_output(FINISHED)
    kv_run = suite.parse_output(CRASHED)
    assert kv_run.crashed.startswith("exception: Executing test client: ERR unknown command 'XADD'")
    score = suite.score("strings", redis_run, kv_run)
    assert (score.redis_passed, score.kv_passed) == (3, 1)
    assert score.failing == ["SET and GET an item (not run)", "Same name (not run)"]
    assert suite.parse_output("[ready]: 1\n").crashed == "the unit did not finish"


@pytest.mark.timeout(600)
def test_the_script_runs_a_unit_against_both_servers() -> None:
    path = os.environ.get("REDIS_SUITE")
    if not path:
        pytest.skip("set REDIS_SUITE to a Redis 7.0.15 test suite directory (a manual step)")
    require_tool("redis-server")
    require_tool("tclsh8.6")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), path, "--units", "info-command", "--json"],
        capture_output=True,
        text=True,
        timeout=580,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["redis_passed"] == 3 and doc["units"][0]["kv_crashed"] == ""
    assert doc["kv_passed"] == 3, doc
