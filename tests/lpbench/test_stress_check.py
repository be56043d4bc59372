"""The stress checker's rules (lpbench/stress/check.py) on hand-made timelines: each rule catches the
wrong reply it is for, and lets through the replies local quiescence legitimately produces."""

from __future__ import annotations

from lpbench.stress.check import ConnectionChecker, Timeline, WriteLog


def timeline(*transitions: tuple[int, int, int, bool], monotonic: bool = True) -> Timeline:
    """(start, end, target, ok) in arbitrary nanoseconds."""
    tl = Timeline()
    for start, end, target, ok in transitions:
        k = tl.begin(target, t_ns=start, monotonic=monotonic)
        tl.end(k, ok, t_ns=end)
    return tl


def judge(tl: Timeline, *replies: tuple[int, int, int]) -> list[str]:
    checker = ConnectionChecker(0, tl)
    for s, e, v in replies:
        checker.observe(s, e, v)
    checker.flush()
    assert checker.violations == len(checker.examples)
    return checker.examples


# apply over [100, 200], revert over [300, 400]
APPLY_REVERT = ((100, 200, 2, True), (300, 400, 1, True))


def test_stable_periods_need_their_version() -> None:
    tl = timeline(*APPLY_REVERT)
    assert judge(tl, (10, 20, 1), (210, 220, 2), (410, 420, 1)) == []
    assert "version 2 was in place" in judge(tl, (210, 220, 1))[0]  # old code after the apply
    assert "version 1 was in place" in judge(tl, (10, 20, 2))[0]  # patched code before it
    assert "version 1 was in place" in judge(tl, (410, 420, 2))[0]  # patched code after the revert


def test_either_version_while_a_transition_runs_but_never_back() -> None:
    tl = timeline(*APPLY_REVERT)
    assert judge(tl, (90, 110, 1), (120, 130, 1), (140, 150, 2), (160, 170, 2)) == []
    problems = judge(tl, (120, 130, 2), (140, 150, 1))
    assert len(problems) == 1 and "must not go back" in problems[0]
    # the same during a revert: once the connection saw version 1 again, not 2
    assert "must not go back" in judge(tl, (310, 320, 1), (330, 340, 2))[0]
    # a connection that hops between threads (a pool under local quiescence) is held to rules 1-2 only
    hopping = timeline(*APPLY_REVERT, monotonic=False)
    assert judge(hopping, (120, 130, 2), (140, 150, 1)) == []
    assert "version 2 was in place" in judge(hopping, (210, 220, 1))[0]  # rules 1-2 still hold


def test_a_reply_started_before_a_transition_may_show_either_version() -> None:
    tl = timeline(*APPLY_REVERT)
    assert judge(tl, (90, 150, 2)) == [] and judge(tl, (90, 250, 1)) == []
    # rule 3 counts the new version only when the reply ended after the transition began: here it did
    assert "must not go back" in judge(tl, (90, 150, 2), (160, 170, 1))[0]


def test_an_aborted_apply_changes_nothing() -> None:
    tl = timeline((100, 200, 2, False), (300, 400, 2, True))
    assert judge(tl, (210, 220, 1), (150, 160, 2)) == []  # during it either (local may have moved)
    assert "version 1 was in place" in judge(tl, (210, 220, 2))[0]
    assert judge(tl, (410, 420, 2)) == []


def test_replies_wait_for_the_outcome_of_a_running_transition() -> None:
    tl = Timeline()
    k = tl.begin(2, t_ns=100)
    checker = ConnectionChecker(0, tl)
    checker.observe(150, 160, 1)
    assert checker.by_version == {}  # not judged yet: the outcome decides
    tl.end(k, True, t_ns=200)
    checker.observe(210, 220, 1)  # settled now: both judged, in order
    assert checker.by_version == {1: 2}
    assert checker.violations == 1 and "version 2 was in place" in checker.examples[0]


def test_write_log_accepts_both_values_of_an_unanswered_write() -> None:
    log = WriteLog()
    log.acknowledged("k", b"1")
    assert log.expected("k") == {b"1"}
    log.unanswered("k", b"2")
    assert log.expected("k") == {b"1", b"2"}
    log.acknowledged("k", b"3")
    assert log.expected("k") == {b"3"}
    log.unanswered("new", b"x")  # never acknowledged: absent or x
    assert log.expected("new") == {None, b"x"}
    assert log.written() == ["k", "new"]


def test_sync_percentiles_are_nearest_rank_over_successful_transitions() -> None:
    from lpbench.stress.run import sync_percentiles

    p = sync_percentiles([None, 4.0, 1.0, 3.0, 2.0])  # None: a transition without a sync time
    assert (p["n"], p["p50"], p["p90"], p["max"], p["mean"]) == (4, 2.0, 4.0, 4.0, 2.5)
    assert sync_percentiles([None])["p50"] is None
