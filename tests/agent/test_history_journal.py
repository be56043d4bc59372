"""The bounded history through the agent, and the state directory's append-only journal (state_dir.py,
keeper.py, runtime/history.py).

On the real test service (a subprocess with its agent, metrics and state directory, the history bound
lowered to KEEP): after more transitions than it keeps, the metrics still count every one, `livepatch
history` shows the newest and says how many were dropped, the attempts went to the journal as they
happened, and after a restart the history of the earlier start is still there; after a SIGKILL, the
stack the journal holds is re-applied. File-level: a torn last line is ignored with a warning and
nothing before it is lost; a corrupt earlier line is a clear error; lines a snapshot already holds are
not counted twice; the stack in force is the newest journal line's past stack.json's position.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from livepatch.agent import client as agent_client
from livepatch.agent import state_dir as sd
from tests.agent.agent_helpers import SERVICE_DIR, cli, run_service, socket_dir

pytestmark = pytest.mark.timeout(180)

KEEP = 5
CYCLES = 8  # 16 transitions: 11 dropped


def _entry(i: int) -> dict[str, Any]:
    return {
        "patch_id": f"p{i}",
        "action": "apply",
        "method": "global",
        "outcome": "applied",
        "reason": "",
        "events": [],
        "timings": {"sync": 0.1},
    }


def _patch(tmp_path: Path) -> dict[str, Any]:
    out = tmp_path / "fix.lpatch"
    proc = cli(
        "diff", str(SERVICE_DIR / "v1"), str(SERVICE_DIR / "v2"), "--package", "greetsvc",
        "-o", str(out), "--patch-id", "fix-greet", "--category", "thread-local",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc: dict[str, Any] = json.loads(out.read_bytes())
    return doc


def _transition(sock: str, doc: dict[str, Any] | None) -> None:
    if doc is not None:
        req = {"op": "apply", "patch": doc, "method": "global", "timeout": 30.0, "watch": None}
    else:
        req = {"op": "revert", "patch_id": None, "method": "global", "timeout": 30.0}
    reply = agent_client.request(sock, req, timeout=120)
    assert reply["result"]["outcome"] in ("applied", "reverted"), reply


def _history(sock: str) -> dict[str, Any]:
    proc = cli("history", "--socket", sock, "--json")
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def test_more_transitions_than_kept_through_the_agent_and_a_restart(tmp_path: Path) -> None:
    doc = _patch(tmp_path)
    with socket_dir() as d:
        sock = str(d / "agent.sock")
        journal = Path(f"{sock}.state") / "starts" / "000001.journal"
        with run_service(
            d / "agent.sock", allow_unsigned=True, metrics=True, max_history=KEEP
        ) as svc:
            for _ in range(CYCLES):
                _transition(sock, doc)
                _transition(sock, None)
            assert journal.exists() and journal.stat().st_size > 0  # appended as they happened

            body = (
                urllib.request.urlopen(f"http://127.0.0.1:{svc.metrics_port}/metrics", timeout=30)
                .read()
                .decode()
            )
            assert f'livepatch_patches_total{{action="apply",outcome="applied"}} {CYCLES}.0' in body
            assert (
                f'livepatch_patches_total{{action="revert",outcome="reverted"}} {CYCLES}.0' in body
            )
            assert f"livepatch_history_dropped_total {2 * CYCLES - KEEP}.0" in body
            assert f'livepatch_sync_seconds_count{{method="global"}} {2 * CYCLES}.0' in body

            h = _history(sock)
            assert len(h["history"]) == KEEP
            assert h["dropped"] == 2 * CYCLES - KEEP
            assert [s["dropped"] for s in h["starts"]] == [2 * CYCLES - KEEP]
            assert [e["action"] for e in h["history"]][-2:] == ["apply", "revert"]
            text = cli("history", "--socket", sock)
            assert text.returncode == 0, text.stderr
            assert f"{2 * CYCLES - KEEP} older attempts dropped" in text.stdout

        # stopped: the journal was folded into the start's snapshot
        assert not journal.exists() or journal.stat().st_size == 0
        with run_service(d / "agent.sock", allow_unsigned=True, max_history=KEEP) as svc:
            h = _history(sock)
            assert [s["start"] for s in h["starts"]] == [1, 2]
            assert [s["dropped"] for s in h["starts"]] == [2 * CYCLES - KEEP, 0]
            assert [e["start"] for e in h["history"]] == [1] * KEEP
            assert h["history"][-1]["action"] == "revert"
            for _ in range(3):  # the last one leaves the patch applied
                _transition(sock, doc)
                _transition(sock, None)
            _transition(sock, doc)
            svc.proc.kill()  # a crash: no snapshot; the stack is only in the journal
            svc.proc.wait(timeout=30)
        assert (
            json.loads((Path(f"{sock}.state") / "stack.json").read_bytes())["body"]["patches"] == []
        )
        with run_service(d / "agent.sock", allow_unsigned=True, max_history=KEEP):
            h = _history(sock)
            assert [s["start"] for s in h["starts"]] == [1, 2, 3]
            third = h["starts"][2]
            assert [(n["patch_id"], n["outcome"]) for n in third["restore"]] == [
                ("fix-greet", "re-applied")
            ]
            assert [(e["start"], e["action"]) for e in h["history"][-KEEP - 1 :]] == [
                *[(2, a) for a in ("revert", "apply", "revert", "apply", "revert", "apply")][
                    -KEEP:
                ],
                (3, "apply"),
            ]


def _state_with_journal(tmp_path: Path, journal: bytes) -> sd.StateDir:
    state = sd.StateDir(tmp_path / "state")
    state.lock()
    state.save_start(sd.StartRecord(1, os.getpid(), 0.0, history=(_entry(0),)))
    state.append_journal(1, [(1, _entry(1), None), (2, _entry(2), None)])
    with open(tmp_path / "state" / "starts" / "000001.journal", "ab") as f:
        f.write(journal)
    return state


@pytest.mark.parametrize(
    "tail",
    [b'{"entry":{"patch_id":"p3","act', b"\x00\x00\x00\x00\n"],
    ids=["cut-mid-line", "garbage-line"],
)
def test_a_torn_last_line_is_ignored_with_a_warning(
    tmp_path: Path, tail: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    state = _state_with_journal(tmp_path, tail)
    try:
        with caplog.at_level(logging.WARNING, logger="livepatch.agent"):
            (start,) = state.load_starts()
        assert [e["patch_id"] for e in start.history] == ["p0", "p1", "p2"]
        assert start.dropped == 0
        assert any("incomplete line" in r.getMessage() for r in caplog.records)
        # the next start folds it in and clears the torn line away
        state.compact_start(start)
        caplog.clear()
        (again,) = state.load_starts()
        assert again == start and not caplog.records
    finally:
        state.unlock()


def test_a_corrupt_earlier_line_is_a_clear_error(tmp_path: Path) -> None:
    state = _state_with_journal(tmp_path, b"")
    try:
        path = tmp_path / "state" / "starts" / "000001.journal"
        path.write_bytes(path.read_bytes().replace(b'"p1"', b'"pX"', 1))
        with pytest.raises(sd.StateError, match=r"000001\.journal is corrupt at line 1"):
            state.load_starts()
    finally:
        state.unlock()


def test_lines_the_snapshot_has_are_not_counted_twice_and_gaps_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = _state_with_journal(tmp_path, b"")
    try:
        # a crash after a compaction's snapshot, before it emptied the journal: p1, p2 in both
        state.save_start(
            sd.StartRecord(1, os.getpid(), 0.0, history=(_entry(0), _entry(1), _entry(2)))
        )
        state.append_journal(1, [(3, _entry(3), None), (6, _entry(6), None)])  # 4, 5: never seen
        (start,) = state.load_starts()
        assert [e["patch_id"] for e in start.history] == ["p0", "p1", "p2", "p3", "p6"]
        assert start.dropped == 2
        monkeypatch.setattr(sd, "MAX_START_HISTORY", 3)  # and the newest are kept
        (start,) = state.load_starts()
        assert [e["patch_id"] for e in start.history] == ["p2", "p3", "p6"]
        assert start.dropped == 4
        # ... within the byte budget too (an attempt of a pool server is ~23 KB)
        monkeypatch.setattr(sd, "MAX_START_HISTORY_BYTES", 2 * len(sd.canonical(_entry(0))))
        (start,) = state.load_starts()
        assert [e["patch_id"] for e in start.history] == ["p3", "p6"]
        assert start.dropped == 5
    finally:
        state.unlock()


def test_the_stack_in_force_is_the_newest_journal_line_s(tmp_path: Path) -> None:
    state = sd.StateDir(tmp_path / "state")
    state.lock()
    try:
        sha = state.save_document({"format": "lpatch", "manifest": {"patch_id": "abc"}})
        stored = sd.StoredPatch("abc", sha, "global", 5.0, None, 1)
        state.save_stack([], (1, 0))
        state.save_start(sd.StartRecord(1, os.getpid(), 0.0, history=(_entry(0),)))
        # n=0 is at stack.json's position: its stack is older; n=1 is newer; n=2 changed nothing
        state.append_journal(1, [(0, _entry(0), [stored]), (1, _entry(1), [stored])])
        state.append_journal(1, [(2, _entry(2), None)])
        assert state.load_stack() == [stored]
        # the next start folds it into stack.json and empties the journal
        state.fold_journals(state.load_starts())
        body = json.loads((tmp_path / "state" / "stack.json").read_bytes())["body"]
        assert body["as_of"] == [1, 1] and len(body["patches"]) == 1
        assert (tmp_path / "state" / "starts" / "000001.journal").stat().st_size == 0
        assert state.load_stack() == [stored]
        (start,) = state.load_starts()
        assert [e["patch_id"] for e in start.history] == ["p0", "p1", "p2"]
        # a later line that empties the stack wins over stack.json
        state.append_journal(1, [(3, _entry(3), [])])
        assert state.load_stack() == []
    finally:
        state.unlock()
