"""Figure 6's judge (lpbench.sql.deadlocks): which aborted patch is a deadlock, on made-up recordings;
and two real runs on sqlserver's pool: the shipped priority-based protocol takes every patch, the
experiment-only naive one (`serve sql --pool-quiescence naive`) deadlocks under TPC-C."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from lpbench.recording import Recording
from lpbench.sql import deadlocks

MS = 1_000_000


def recording(done_ms: list[float], status: list[int] | None = None) -> Recording:
    """Transactions of 1 ms each, completing at the given times (ms after t0 = 0)."""
    end = np.array([int(t * MS) for t in done_ms], dtype=np.int64)
    return Recording(
        start_ns=end - MS, latency_ns=np.full(len(end), MS, dtype=np.int64),
        conn=np.zeros(len(end), dtype=np.int32),
        status=np.array(status or [0] * len(end), dtype=np.int8),
        reconnects=np.zeros((0, 3), dtype=np.int64), t0_ns=0, t_end_ns=10_000 * MS, connections=1,
    )  # fmt: skip


def update(at_ms: float, outcome: str, end_ms: float, action: str = "apply") -> dict[str, object]:
    return {"t_ns": int(at_ms * MS), "action": action, "outcome": outcome,
            "window_ns": [int(at_ms * MS), int(end_ms * MS)], "timings": {"sync": 1.0}}  # fmt: skip


def test_an_abort_with_no_completion_in_its_second_half_is_a_deadlock() -> None:
    # aborted 1000..4000 ms; completions only early in the wait (threads parking one by one)
    v = deadlocks.judge(recording([500, 1200, 2000]), [update(1000, "aborted", 4000)])
    assert (v["aborted"], v["deadlocks"], v["deadlocked"]) == (1, 1, True)
    assert v["aborts"][0]["completed"] == 2 and v["aborts"][0]["completed_second_half"] == 0


def test_an_abort_with_progress_to_the_end_is_slow_not_a_deadlock() -> None:
    v = deadlocks.judge(recording([1200, 3900]), [update(1000, "aborted", 4000)])
    assert (v["aborted"], v["deadlocks"], v["deadlocked"]) == (1, 0, False)


def test_lost_transactions_are_no_progress() -> None:
    v = deadlocks.judge(recording([3000, 3500], status=[2, 2]), [update(1000, "aborted", 4000)])
    assert v["deadlocked"]


def test_patches_that_took_effect_count_and_none_records_do_not() -> None:
    ups = [update(100, "applied", 101), update(200, "reverted", 202, "revert"),
           {"t_ns": 300 * MS, "action": "none", "outcome": "none", "window_ns": [0, 0], "timings": {}}]  # fmt: skip
    v = deadlocks.judge(recording([50, 150, 250]), ups)
    assert (v["patches"], v["patches_ok"], v["aborted"], v["sync_ms"]) == (2, 2, 0, [1.0, 1.0])


def test_a_failed_patch_is_reported_apart() -> None:
    ups = [dict(update(100, "failed", 101), reason="agent unreachable")]
    v = deadlocks.judge(recording([]), ups)
    assert v["other_failures"] == ["apply failed: agent unreachable"] and not v["deadlocked"]


def test_no_answer_from_the_agent_is_a_hung_server_not_a_deadlock() -> None:
    ups = [update(100, "applied", 101),
           dict(update(200, "failed", 200), reason="AgentUnreachable: no reply from the agent within 23 s")]  # fmt: skip
    v = deadlocks.judge(recording([50, 150]), ups)
    assert (v["hangs"], v["other_failures"], v["deadlocked"]) == (
        ["apply: AgentUnreachable: no reply from the agent within 23 s"], [], False)  # fmt: skip


def test_a_patch_every_100ms_from_half_a_second_to_half_a_second_before_the_end() -> None:
    at = deadlocks.DeadlockConfig(duration_s=6.0).at_s()
    assert (len(at), at[0], at[-1]) == (51, 0.5, 5.5)
    assert all(abs(b - a - 0.1) < 1e-9 for a, b in itertools.pairwise(at))


def test_summary_counts_per_protocol_and_workload() -> None:
    cfg = deadlocks.DeadlockConfig(workloads=("tpcc",), runs=2)
    runs = [
        {"protocol": "naive", "workload": "tpcc", "deadlocked": True, "aborted": 1, "patches": 1,
         "patches_ok": 0, "sync_ms": [], "other_failures": []},
        {"protocol": "priority", "workload": "tpcc", "deadlocked": False, "aborted": 0, "patches": 51,
         "patches_ok": 51, "sync_ms": [2.0] * 51, "other_failures": []},
    ]  # fmt: skip
    rows = {r["protocol"]: r for r in deadlocks.summarize(cfg, runs, [])["rows"]}
    assert rows["naive"]["runs_deadlocked"] == 1 and rows["naive"]["patches_ok"] == 0
    assert rows["priority"]["runs_deadlocked"] == 0 and rows["priority"]["patches_ok"] == 51


@pytest.fixture(scope="module")
def patch(tmp_path_factory: pytest.TempPathFactory) -> list[object]:
    from lpbench.sql.patches import builtin_patch

    return [builtin_patch(tmp_path_factory.mktemp("patch"))]


@pytest.mark.timeout(120)
def test_priority_based_pool_takes_every_patch_under_tpcc(patch: list, tmp_path: Path) -> None:
    cfg = deadlocks.DeadlockConfig(duration_s=3.0, connections=8)
    v = deadlocks.one_run(cfg, "tpcc", "priority", 0, patch, tmp_path)  # type: ignore[arg-type]
    assert v["patches"] == len(cfg.at_s()) == 21
    assert (v["patches_ok"], v["aborted"], v["other_failures"]) == (21, 0, [])
    assert v["transactions"] > 0


@pytest.mark.timeout(180)
def test_naive_pool_deadlocks_under_tpcc(patch: list, tmp_path: Path) -> None:
    """The naive protocol deadlocked in every TPC-C run of figure 6; three tries bound the rare run
    in which no worker happened to wait for the write lock when a patch began."""
    cfg = deadlocks.DeadlockConfig(duration_s=3.0, connections=8, deadline_s=1.0)
    verdicts = []
    for i in range(3):
        v = deadlocks.one_run(cfg, "tpcc", "naive", i, patch, tmp_path)  # type: ignore[arg-type]
        verdicts.append(v)
        if v["deadlocked"]:
            break
    assert verdicts[-1]["deadlocked"], verdicts
    reason = verdicts[-1]["aborts"][0]["reason"]
    assert "acquire_write" in reason  # a worker waits for the write lock whose COMMIT nobody reads
    # the run's data is kept for a deadlocked run (to see where it hung)
    run_dir = tmp_path / "naive" / "tpcc" / f"run{len(verdicts) - 1}"
    assert (run_dir / "server.log").exists()
    # The run ended at its first aborted patch: no trigger after it, and the drivers were told to stop
    # then (their end is the earlier of the scheduled one and that moment).
    events = json.loads((run_dir / "events.json").read_text())
    ups = events["updates"]
    assert len(ups) == verdicts[-1]["patches"] and ups[-1]["outcome"] == "aborted"
    assert all(u["outcome"] in ("applied", "reverted") for u in ups[:-1])
    assert events["ended_early_ns"] is not None and events["ended_early_ns"] >= ups[-1]["t_ns"]
    scheduled_end = events["t0_ns"] + int(cfg.duration_s * 1e9)
    assert events["t_end_ns"] == min(scheduled_end, events["ended_early_ns"])
