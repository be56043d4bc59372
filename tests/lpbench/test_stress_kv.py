"""`livepatch stress` against the real kvserver through the real command: a short clean run passes
(the CI stress), and each planted failure makes it exit 1 naming the failure."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from lpbench.servers import livepatch_executable


def stress(*args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [livepatch_executable(), "stress", "--server", "kv", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.timeout(90)
def test_short_stress_passes(tmp_path: Path) -> None:
    proc = stress(
        "--cycles", "50", "--methods", "global,local", "--workload", "mixed", "--json",
        "--out", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    report = json.loads(proc.stdout)
    assert report["ok"] and report["failures"] == []
    assert report["cycles"] == 50 and report["transitions"] == 100
    assert report["load_requests"] > 0  # the mixed GET/SET load ran beside the checkers
    # both versions were seen, by every check, and nothing went wrong
    assert report["probes_by_version"]["1"] > 0 and report["probes_by_version"]["2"] > 0
    for key in ("failed_requests", "hung_requests", "wrong_version_replies", "lost_writes",
                "aborted_patches", "failed_patches", "hung_patches", "unchecked_writes"):  # fmt: skip
        assert report[key] == 0, key
    for method in ("global", "local"):
        assert report["sync_ms"][method]["n"] == 50  # 25 cycles of apply + revert each
    assert json.loads((tmp_path / "report.json").read_text())["ok"]
    assert (tmp_path / "stress.lpatch").exists() and (tmp_path / "server.log").exists()


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("plant", "named"),
    [
        ("wrong-write", "failed requests"),
        ("stale-version", "wrong-version replies"),
        ("kill-server", "the server exited"),
    ],
)
def test_planted_failure_is_caught(plant: str, named: str) -> None:
    proc = stress("--cycles", "6", "--plant", plant, "--request-deadline", "2")
    assert proc.returncode == 1, proc.stderr + proc.stdout
    assert "stress FAILED" in proc.stderr and named in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_arguments_exit_2() -> None:
    proc = stress("--methods", "global,sideways", "--cycles", "1")
    assert proc.returncode == 2 and "--methods takes global and/or local" in proc.stderr
    proc = stress("--plant", "nonsense", "--cycles", "1")
    assert proc.returncode == 2 and "unknown --plant 'nonsense'" in proc.stderr
    proc = stress("--workload", "tpcc", "--cycles", "1")
    assert proc.returncode == 2 and "--workload tpcc does not fit --server kv" in proc.stderr
