"""Every request a driver made, in compact columns, and every reconnect.

Times are `time.monotonic_ns()` values. On Linux CLOCK_MONOTONIC is one clock for the whole machine, so
the driver's request times and the agent's patch events (also monotonic_ns, taken inside the server)
share one time axis without any offset correction.

A request's `start_ns` is when it *should* have been sent: the scheduled time in an open-loop run (so a
stall of the server counts against every request that had to wait: no coordinated omission), the send
time in a closed-loop run. `latency_ns` runs from `start_ns` to the moment its reply was parsed (or the
connection was found broken).

Concurrency: a Recorder belongs to the one thread that drives the connections; Recording is immutable
once built and may be shared.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OK = 0  # a reply that is not an error
ERROR_REPLY = 1  # the server answered with an error (-ERR ...)
CONNECTION_LOST = 2  # the connection broke while the request was in flight


class Recorder:
    """Appends one row per request; cheap enough for the driver's hot loop (array.array appends)."""

    def __init__(self) -> None:
        self._start = array("q")
        self._latency = array("q")
        self._conn = array("i")
        self._status = array("b")
        self._reconnects = array("q")  # flat triples: conn, lost_ns, back_ns

    def request(self, start_ns: int, end_ns: int, conn: int, status: int) -> None:
        self._start.append(start_ns)
        self._latency.append(end_ns - start_ns)
        self._conn.append(conn)
        self._status.append(status)

    def reconnect(self, conn: int, lost_ns: int, back_ns: int) -> None:
        self._reconnects.extend((conn, lost_ns, back_ns))

    def build(self, t0_ns: int, t_end_ns: int, connections: int) -> Recording:
        return Recording(
            start_ns=np.frombuffer(self._start, dtype=np.int64).copy(),
            latency_ns=np.frombuffer(self._latency, dtype=np.int64).copy(),
            conn=np.frombuffer(self._conn, dtype=np.int32).copy(),
            status=np.frombuffer(self._status, dtype=np.int8).copy(),
            reconnects=np.frombuffer(self._reconnects, dtype=np.int64).reshape(-1, 3).copy(),
            t0_ns=t0_ns,
            t_end_ns=t_end_ns,
            connections=connections,
        )


@dataclass(frozen=True)
class Recording:
    """Columns of equal length, one row per request, in no particular order (merged from processes)."""

    start_ns: np.ndarray  # int64, monotonic ns
    latency_ns: np.ndarray  # int64
    conn: np.ndarray  # int32, connection number (unique across driver processes)
    status: np.ndarray  # int8: OK, ERROR_REPLY, CONNECTION_LOST
    reconnects: np.ndarray  # int64 (k, 3): conn, lost_ns, back_ns (-1: never came back)
    t0_ns: int  # when the measurement began (all processes start together)
    t_end_ns: int  # when it ended (no request was scheduled at or after it)
    connections: int

    def __len__(self) -> int:
        return int(self.start_ns.shape[0])

    @property
    def duration_s(self) -> float:
        return (self.t_end_ns - self.t0_ns) / 1e9

    @property
    def end_ns(self) -> np.ndarray:
        """When each request completed (reply parsed or failure seen)."""
        return self.start_ns + self.latency_ns

    def save(self, path: Path) -> None:
        np.savez_compressed(
            path,
            start_ns=self.start_ns,
            latency_ns=self.latency_ns,
            conn=self.conn,
            status=self.status,
            reconnects=self.reconnects,
            meta=np.array([self.t0_ns, self.t_end_ns, self.connections], dtype=np.int64),
        )

    @classmethod
    def load(cls, path: Path) -> Recording:
        with np.load(path) as data:
            t0, t_end, conns = (int(x) for x in data["meta"])
            return cls(
                start_ns=data["start_ns"],
                latency_ns=data["latency_ns"],
                conn=data["conn"],
                status=data["status"],
                reconnects=data["reconnects"].reshape(-1, 3),
                t0_ns=t0,
                t_end_ns=t_end,
                connections=conns,
            )

    @classmethod
    def merge(cls, parts: list[Recording]) -> Recording:
        """One recording from several driver processes that shared t0 and t_end."""
        if not parts:
            raise ValueError("nothing to merge")
        return cls(
            start_ns=np.concatenate([p.start_ns for p in parts]),
            latency_ns=np.concatenate([p.latency_ns for p in parts]),
            conn=np.concatenate([p.conn for p in parts]),
            status=np.concatenate([p.status for p in parts]),
            reconnects=np.concatenate([p.reconnects for p in parts]).reshape(-1, 3),
            t0_ns=min(p.t0_ns for p in parts),
            t_end_ns=max(p.t_end_ns for p in parts),
            connections=sum(p.connections for p in parts),
        )
