"""kill -9 under a write load with --synchronous full: every acknowledged COMMIT is there after a restart."""

from __future__ import annotations

import threading

import pytest

from tests.sqlserver.conftest import POLICIES

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("policy", POLICIES)
def test_kill_9_loses_no_acknowledged_commit(sql_factory, tmp_path, policy):
    data = str(tmp_path / "data")
    server = sql_factory("--policy", policy, "--dir", data, "--synchronous", "full")
    with psycopg.connect(server.dsn, autocommit=True) as c:
        c.execute("create table acked (w int, i int, primary key (w, i))")
    acked: list[list[int]] = [[] for _ in range(4)]
    enough = threading.Barrier(5)
    stop = threading.Event()

    def writer(w: int) -> None:
        try:
            with psycopg.connect(server.dsn) as c:
                i = 0
                while not stop.is_set():
                    c.execute("insert into acked values (%s, %s)", (w, i))
                    c.execute("insert into acked values (%s, %s)", (w, i + 1))
                    c.commit()  # acknowledged: both rows must survive
                    acked[w].append(i)
                    i += 2
                    if i == 40:
                        enough.wait(60)
        except psycopg.Error:
            pass  # the kill: whatever was not acknowledged may be lost
        except threading.BrokenBarrierError:
            pass

    writers = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in writers:
        t.start()
    enough.wait(60)  # every writer has 20 acknowledged commits and keeps writing
    server.kill()
    stop.set()
    for t in writers:
        t.join(30)
    restarted = sql_factory("--policy", policy, "--dir", data)
    with psycopg.connect(restarted.dsn) as c:
        present = set(c.execute("select w, i from acked").fetchall())
    missing = [
        (w, i + d) for w in range(4) for i in acked[w] for d in (0, 1) if (w, i + d) not in present
    ]
    assert not missing, f"{len(missing)} acknowledged rows lost, e.g. {missing[:5]}"
    assert sum(len(a) for a in acked) >= 80
