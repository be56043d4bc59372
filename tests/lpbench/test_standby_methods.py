"""`livepatch bench --update failover,switchover` (lpbench.standby): the same load generator through a
kill -9 of a replicating primary and through a planned switchover, against a real kvserver pair."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lpbench.servers import livepatch_executable


@pytest.mark.timeout(240)
def test_bench_failover_and_switchover(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = subprocess.run(
        [livepatch_executable(), "bench", "--server", "kv", "--update", "failover,switchover",
         "--duration", "3", "--at", "1,2", "--connections", "6", "--keys", "500",
         "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=220,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    methods = json.loads(proc.stdout)
    for name, outcome in (("failover", "failed-over"), ("switchover", "switched-over")):
        assert methods[name]["updates"] == 2 and methods[name]["updates_ok"] == 2, methods[name]
        events = json.loads((out / name / "run0" / "events.json").read_text())
        assert [u["outcome"] for u in events["updates"]] == [outcome, outcome]
        for u in events["updates"]:
            assert 0 < u["timings"]["gap"] <= u["timings"]["resync"]
    # A kill breaks every connection; the load reconnects to the standby at the same address.
    assert methods["failover"]["connections_lost"] >= 6
    assert (out / "throughput.png").stat().st_size > 1000
