"""`livepatch bench --server sql` end to end: the SQL workload through the multi-process driver, live
patches (the built-in sql patch, both methods) under TPC-C, the same outputs as for kv."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lpbench.servers import livepatch_executable

pytest.importorskip("sqlglot")


def bench(*args: str, timeout: float = 150) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [livepatch_executable(), "bench", "--server", "sql", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(160)
def test_bench_sql_tpcc_live_updates(tmp_path: Path) -> None:
    out = tmp_path / "b"
    proc = bench(
        "--workload", "tpcc", "--scale", "0.05", "--policy", "thread-per-connection",
        "--connections", "4", "--update", "live-global,live-local", "--duration", "2.4",
        "--at", "0.8,1.6", "--out", str(out), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    methods = json.loads(proc.stdout)
    for name in ("live-global", "live-local"):
        m = methods[name]
        assert m["updates"] == 2 and m["updates_ok"] == 2  # apply, then revert
        assert m["errors"] == 0 and m["connections_lost"] == 0
        assert m["throughput_rps"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["config"]["workload"] == "tpcc"
        and summary["config"]["policy"] == "thread-per-connection"
    )
    for fig in ("throughput.png", "latency.png", "sync_swap.png"):
        assert (out / fig).stat().st_size > 1000


def test_bench_sql_refuses_a_kv_workload() -> None:
    proc = bench("--workload", "get", "--duration", "1", "--update", "none")
    assert proc.returncode == 2
    assert "--workload get does not fit --server sql" in proc.stderr
