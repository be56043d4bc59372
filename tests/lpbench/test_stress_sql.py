"""`livepatch stress --server sql` against the real sqlserver through the real command, per connection
policy: every reply checked against the version that served it, read-backs, the write log, no aborted
patch; with TPC-C as background load (its transactions must not fail, its consistency checks must hold)."""

from __future__ import annotations

import json
import subprocess

import pytest

from lpbench.servers import livepatch_executable

pytest.importorskip("sqlglot")


def stress(*args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [livepatch_executable(), "stress", "--server", "sql", "--json", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(110)
@pytest.mark.parametrize(
    ("policy", "methods", "workload"),
    [("thread-per-connection", "global,local", "tpcc"), ("pool", "global,local", None)],
)
def test_short_sql_stress_passes(policy: str, methods: str, workload: str | None) -> None:
    load = ["--workload", workload, "--load-connections", "3"] if workload else []
    proc = stress(
        "--policy", policy, "--methods", methods, "--cycles", "12", "--connections", "5", *load
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout
    report = json.loads(proc.stdout)
    assert report["ok"] and report["transitions"] == 24
    assert report["probes_by_version"]["1"] > 0 and report["probes_by_version"]["2"] > 0
    assert report["wrong_version_replies"] == 0 and report["lost_writes"] == 0
    assert report["failed_requests"] == 0 and report["aborted_patches"] == 0
    if workload:  # TPC-C ran beside the checkers, and its consistency checks held afterwards
        assert report["load_requests"] > 0 and report["consistency_problems"] == 0


@pytest.mark.timeout(110)
def test_sql_server_killed_mid_run_fails_the_stress() -> None:
    proc = stress(
        "--cycles", "6", "--connections", "3", "--plant", "kill-server", "--request-deadline", "2"
    )
    assert proc.returncode == 1, proc.stderr + proc.stdout
    report = json.loads(proc.stdout)
    assert not report["ok"] and report["server_exit"] == -9
    assert "the server exited" in proc.stderr and "Traceback" not in proc.stderr
