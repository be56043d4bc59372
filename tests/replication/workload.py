"""Clients that record what the server acknowledged, to check it after every failover.

`Writer`: SET w:<i> <i> with a fresh i each time, and INCR ctr; a reply is an acknowledgement, an error
(the primary died mid-request) is an unknown outcome and not recorded. `Reader`: GET ctr, recording the
largest value any read returned. `check` then says what a failover lost: an acknowledged SET missing or
changed, or ctr below an acknowledged INCR or a value read (a value going backwards).
"""

from __future__ import annotations

import threading
import time

import redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry


def retrying_client(port: int) -> redis.Redis:
    """redis-py as docs/standby.md recommends: retried across a failover or a switchover."""
    return redis.Redis(
        port=port,
        socket_timeout=5.0,
        socket_connect_timeout=0.5,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.01), retries=20),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def single_shot_client(port: int, timeout_s: float = 120.0) -> redis.Redis:
    """redis-py that never retries (redis-py 6+ retries a failed command by default): a reply it
    returns is the answer to the one attempt, an error is that attempt's fate."""
    return redis.Redis(port=port, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0))


class Writer(threading.Thread):
    """retrying: a retrying_client (an error that reaches it is counted in `errors` all the same)."""

    def __init__(self, port: int, name: str = "w", retrying: bool = False) -> None:
        super().__init__(daemon=True, name=f"writer-{name}")
        self.port = port
        self.prefix = name
        self.retrying = retrying
        self.incrs = 0  # acknowledged INCRs
        self.acked: list[int] = []
        self.max_incr = 0
        self.errors = 0
        self.latencies: list[tuple[float, float]] = []  # (start, seconds) of acknowledged SETs
        self.stop_event = threading.Event()
        self.lock = threading.Lock()

    def _client(self) -> redis.Redis:
        if self.retrying:
            return retrying_client(self.port)
        return redis.Redis(port=self.port, socket_timeout=5.0, socket_connect_timeout=0.5)

    def run(self) -> None:
        i = 0
        client = self._client()
        while not self.stop_event.is_set():
            i += 1
            try:
                t = time.monotonic()
                client.set(f"{self.prefix}:{i}", i)
                done = time.monotonic()
                with self.lock:
                    self.acked.append(i)
                    self.latencies.append((t, done - t))
                value = int(client.incr(f"{self.prefix}:ctr"))
                with self.lock:
                    self.max_incr = max(self.max_incr, value)
                    self.incrs += 1
            except (redis.ConnectionError, redis.TimeoutError):
                self.errors += 1
                client.close()
                client = self._client()
                self.stop_event.wait(0.002)
        client.close()

    def snapshot(self) -> tuple[list[int], int]:
        with self.lock:
            return list(self.acked), self.max_incr

    def snapshot_latencies(self) -> list[tuple[float, float]]:
        with self.lock:
            return list(self.latencies)

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=15)


class Reader(threading.Thread):
    def __init__(self, port: int, key: str) -> None:
        super().__init__(daemon=True, name="reader")
        self.port = port
        self.key = key
        self.max_read = 0
        self.reads = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        client = redis.Redis(port=self.port, socket_timeout=5.0, socket_connect_timeout=0.5)
        while not self.stop_event.is_set():
            try:
                value = client.get(self.key)
                self.reads += 1
                if value is not None:
                    self.max_read = max(self.max_read, int(value))
            except (redis.ConnectionError, redis.TimeoutError):
                client.close()
                client = redis.Redis(port=self.port, socket_timeout=5.0, socket_connect_timeout=0.5)
                self.stop_event.wait(0.002)
        client.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(timeout=15)


def check(port: int, writer: Writer, max_read: int = 0) -> list[str]:
    """What the server at port lost of what `writer` saw acknowledged (empty: nothing)."""
    acked, max_incr = writer.snapshot()
    problems: list[str] = []
    with redis.Redis(port=port, socket_timeout=10.0) as c:
        for start in range(0, len(acked), 1000):
            batch = acked[start : start + 1000]
            values = c.mget([f"{writer.prefix}:{i}" for i in batch])
            for i, v in zip(batch, values, strict=True):
                if v is None or int(v) != i:
                    problems.append(f"acknowledged SET {writer.prefix}:{i} {i} lost (found {v!r})")
        ctr = int(c.get(f"{writer.prefix}:ctr") or 0)
    if ctr < max_incr:
        problems.append(f"{writer.prefix}:ctr is {ctr}, below the acknowledged INCR {max_incr}")
    if ctr < max_read:
        problems.append(f"{writer.prefix}:ctr is {ctr}, below the value {max_read} a read returned")
    return problems
