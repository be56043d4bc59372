"""`livepatch stress` against the real kvserver through the real command: a short clean run passes
(the CI stress), and each planted failure makes it exit 1 naming the failure."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
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
        "--agent-state", "--out", str(tmp_path),  # the agent's journal under stress too
        "--progress-every", "0",  # stderr is a pipe here: a plain line per cycle
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr + proc.stdout
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("stress kv: ")]
    assert len(lines) == 50 and lines[-1].startswith("stress kv: 50/50 cycles in "), proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["failures"] == []
    assert report["cycles"] == 50 and report["transitions"] == 100
    assert report["load_requests"] > 0  # the mixed GET/SET load ran beside the checkers
    # both versions were seen, by every check, and nothing went wrong
    assert report["probes_by_version"]["1"] > 0 and report["probes_by_version"]["2"] > 0
    for key in ("failed_requests", "hung_requests", "wrong_version_replies", "lost_writes",
                "aborted_patches", "failed_patches", "hung_patches", "unchecked_writes"):  # fmt: skip
        assert report[key] == 0, key
    rss = report["server_rss_mb"]  # the server's memory, at the start and the end of the cycles
    assert rss["start"] > 0 and rss["end"] > 0 and rss["trace"][-1][0] == 50
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


@pytest.mark.timeout(120)
def test_a_hang_is_recorded_with_its_time_connection_transitions_and_cause() -> None:
    """The planted stall (the event loop asleep STALL_S, once) against a 1 s request deadline: every
    request in flight then hangs; each is recorded with a timestamp, its connection and request, the
    transitions around it, and who was not running; those sent while the loop slept say the server was
    blocked (neither on a CPU nor waiting for one)."""
    started = datetime.now(UTC)
    proc = stress(
        "--cycles", "4", "--connections", "3", "--plant", "stall-server", "--request-deadline", "1",
        "--json",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr + proc.stdout
    report = json.loads(proc.stdout)
    assert report["hung_requests"] >= 1 and len(report["hangs"]) == report["hung_requests"]
    assert "hung requests (" in "; ".join(report["failures"])
    finished = datetime.now(UTC)
    for hang in report["hangs"]:
        assert started <= datetime.fromisoformat(hang["at_utc"]) <= finished
        assert hang["connection"] in range(3)
        assert hang["request"].split()[0] in ("write", "read", "probe")
        assert hang["waited_s"] >= 1.0
        assert isinstance(hang["overlapped_transition"], bool)
        for t in hang["transitions"]:
            assert t["action"] in ("apply", "revert") and t["start_s"] <= t["end_s"]
            assert t["start_s"] <= hang["waited_s"]  # started before the hang ended
    # Requests sent while the loop slept: the server was blocked. (Others may also hang on a loaded
    # machine, a 1 s deadline being short there; their verdict may then be the machine's.)
    blocked = [
        h for h in report["hangs"] if h["sched"]["verdict"].startswith("server: it neither ran")
    ]
    assert blocked, [h["sched"] for h in report["hangs"]]
    assert all(h["sched"]["server_cpu_s"] < h["waited_s"] for h in blocked)
    assert sum(report["hang_verdicts"].values()) == len(report["hangs"])


def test_bad_arguments_exit_2() -> None:
    proc = stress("--methods", "global,sideways", "--cycles", "1")
    assert proc.returncode == 2 and "--methods takes global and/or local" in proc.stderr
    proc = stress("--plant", "nonsense", "--cycles", "1")
    assert proc.returncode == 2 and "unknown --plant 'nonsense'" in proc.stderr
    proc = stress("--workload", "tpcc", "--cycles", "1")
    assert proc.returncode == 2 and "--workload tpcc does not fit --server kv" in proc.stderr


@pytest.mark.timeout(120)
def test_ctrl_c_stops_after_the_cycle_and_still_checks_and_reports(tmp_path: Path) -> None:
    """A long run interrupted with SIGINT once transitions are under way: it still reads back every
    write and prints the report (exit 1, 'interrupted'), nothing lost, its server stopped."""
    import os
    import signal
    import time

    env = dict(os.environ, TMPDIR=str(tmp_path))  # the run's server directory appears here
    proc = subprocess.Popen(
        [livepatch_executable(), "stress", "--server", "kv", "--cycles", "100000", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        generation = 0
        while generation < 20 and time.monotonic() < deadline:  # polls a condition, bounded
            socks = list(tmp_path.glob("lps-*/data/livepatch.sock"))
            if socks:
                status = subprocess.run(
                    [livepatch_executable(), "status", "--socket", str(socks[0]), "--json"],
                    capture_output=True, text=True, timeout=30,
                )  # fmt: skip
                if status.returncode == 0:
                    generation = int(json.loads(status.stdout)["statistics"]["generation"])
            time.sleep(0.2)
        assert generation >= 20, "no transitions within 60 s"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, err
    report = json.loads(out)
    assert 10 <= report["cycles"] < 100000
    assert any("interrupted" in f for f in report["failures"]), report["failures"]
    assert report["requests"] > 0 and report["unchecked_writes"] == 0  # the writes were read back
    for key in ("failed_requests", "hung_requests", "wrong_version_replies", "lost_writes"):
        assert report[key] == 0, key
    assert "Traceback" not in err
    assert not list(tmp_path.glob("lps-*"))  # the server and its directory are gone
