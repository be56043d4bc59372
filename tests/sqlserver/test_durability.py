"""Group commit (durability.py): every commit waits for an fsync that started after it, and
concurrent commits share fsyncs."""

from __future__ import annotations

import threading
import time

import pytest

from sqlserver.durability import WalSync
from sqlserver.protocol.errors import PgError


class RecordingSync(WalSync):
    """Records, for each fsync, the last ticket issued when it started (what it may cover)."""

    def __init__(self, path: str, fail: bool = False) -> None:
        super().__init__(path)
        self.started: list[int] = []
        self.fail = fail

    def _fsync(self) -> None:
        with self._cond:
            self.started.append(self._issued)
        time.sleep(0.002)  # an fsync takes time: commits pile up behind it
        if self.fail:
            raise OSError(5, "I/O error")


def test_each_commit_waits_for_a_covering_fsync_and_fsyncs_are_shared(tmp_path):
    ws = RecordingSync(str(tmp_path / "db-wal"))
    threads, per_thread = 10, 30
    barrier = threading.Barrier(threads)
    commit_lock = threading.Lock()  # the write lock: tickets are taken in commit order
    bad: list[tuple[int, list[int]]] = []

    def writer() -> None:
        barrier.wait()
        for _ in range(per_thread):
            with commit_lock:
                t = ws.ticket()
            ws.wait(t)
            with ws._cond:
                if not any(covered >= t for covered in ws.started):
                    bad.append((t, list(ws.started)))

    pool = [threading.Thread(target=writer) for _ in range(threads)]
    for th in pool:
        th.start()
    for th in pool:
        th.join(60)
    assert not any(th.is_alive() for th in pool)
    assert bad == []
    assert ws._issued == threads * per_thread
    assert ws.fsyncs < threads * per_thread  # shared: fewer fsyncs than commits


def test_a_failed_fsync_is_fatal_for_the_waiter_and_not_counted(tmp_path):
    ws = RecordingSync(str(tmp_path / "db-wal"), fail=True)
    t = ws.ticket()
    with pytest.raises(PgError) as e:
        ws.wait(t)
    assert e.value.fatal and ws._synced == 0
    ws.fail = False
    ws.wait(t)
    assert ws._synced >= t


def test_missing_wal_counts_as_synced(tmp_path):
    ws = WalSync(str(tmp_path / "none-wal"))
    ws.wait(ws.ticket())
    assert ws.fsyncs == 1
