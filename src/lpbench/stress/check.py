"""The two checks of `livepatch stress`: which code version may have served a reply, and was every
acknowledged write kept.

Versions: 1 is the installed code, 2 the code with the stress patch applied. The harness applies and
reverts the patch one transition at a time; each transition k is recorded around the agent call:
`start_k` (taken before the request is sent), `end_k` (after the reply), `target_k` (2 for an apply, 1 for
a revert) and `ok_k` (applied / reverted). The *stable* version after `end_k` is `target_k` if `ok_k`,
else the version before transition k (an aborted or failed transition changes nothing); before the first
transition it is 1.

A probe reply on connection c, sent at s and received at e, that shows version v is WRONG when:
  1. no transition overlaps [s, e] and v is not the stable version at s (a reply of the old code after
     the patch was reported applied, or of the patched code before it was requested or after it was
     reported reverted);
  2. transitions overlap [s, e] and v is neither the version before the first of them nor a target of
     one of them;
  3. per connection, versions go back: c saw `target_k` in a reply that ended after `start_k`, and a
     later reply on c that also overlaps transition k (and no later one) shows another version.
Rule 3 is what local quiescence promises: threads (and so the connections they serve) move to the new
code at their own quiescence points, at different times, but never back while the transition runs. It
holds per connection, not across connections: during a local transition connection a may already see
v2 while connection b still sees v1, and both are right. (With a connection pool whose requests of one
connection run on different threads, rule 3 does not hold under local quiescence: such a server is
checked with rules 1 and 2 only: Timeline.begin(monotonic=False) for such a transition.)

A reply is judged only once every transition that started before its end has ended (its outcome decides
what was right), so judging lags the load by at most one transition; `flush()` judges the rest.

Writes: each connection writes its own keys, so the value of a key is the value of its connection's last
acknowledged write. A write whose reply never came (timeout, broken connection) may or may not have
happened: both the old and the new value are then accepted. A key whose final value is anything else is a
lost write.

Concurrency: a Timeline is shared (the patch loop writes, every client thread reads; one lock). A
ConnectionChecker and a WriteLog belong to one client thread each.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from dataclasses import dataclass, field

MAX_EXAMPLES = 20  # violations kept verbatim per connection (all are counted)


class Timeline:
    """The transitions of one run, in order. Starts and ends are time.monotonic_ns()."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.targets: list[int] = []
        self.oks: list[bool] = []
        self.stable_before: list[int] = []  # the stable version when transition k started
        self.monotonic: list[bool] = []  # does rule 3 apply to transition k
        self.stable = 1
        self._open = False

    def begin(self, target: int, t_ns: int | None = None, monotonic: bool = True) -> int:
        """Record a transition's start (call right before the agent request); returns its index."""
        with self._lock:
            if self._open:
                raise RuntimeError("transitions are sequential: end the previous one first")
            self.starts.append(time.monotonic_ns() if t_ns is None else t_ns)
            self.ends.append(-1)
            self.targets.append(target)
            self.oks.append(False)
            self.stable_before.append(self.stable)
            self.monotonic.append(monotonic)
            self._open = True
            return len(self.starts) - 1

    def end(self, index: int, ok: bool, t_ns: int | None = None) -> None:
        with self._lock:
            self.ends[index] = time.monotonic_ns() if t_ns is None else t_ns
            self.oks[index] = ok
            if ok:
                self.stable = self.targets[index]
            self._open = False

    def settled(self, t_ns: int) -> bool:
        """Is every transition that started at or before t_ns finished (its outcome known)?"""
        with self._lock:
            return not self._open or self.starts[-1] > t_ns

    def overlapping(self, s: int, e: int) -> list[int]:
        """Indexes of the transitions overlapping [s, e], oldest first. Only for settled times."""
        k = bisect.bisect_right(self.starts, e) - 1
        out = []
        while k >= 0 and self.ends[k] >= s:
            out.append(k)
            k -= 1
        return out[::-1]

    def stable_at(self, t: int) -> int:
        """The stable version at t, which no transition overlaps."""
        k = bisect.bisect_right(self.starts, t) - 1
        if k < 0:
            return 1
        return self.targets[k] if self.oks[k] else self.stable_before[k]


@dataclass
class ConnectionChecker:
    """Judges one connection's probe replies, in the order they were received (rule 3 needs it)."""

    conn: int
    timeline: Timeline
    by_version: dict[int, int] = field(default_factory=dict)
    violations: int = 0
    examples: list[str] = field(default_factory=list)
    _pending: deque[tuple[int, int, int]] = field(default_factory=deque)
    _moved_in: int = -1  # the transition whose target this connection has seen while it ran

    def observe(self, s: int, e: int, version: int) -> None:
        self._pending.append((s, e, version))
        if self.timeline.settled(e):
            self.flush()

    def flush(self) -> None:
        while self._pending:
            s, e, v = self._pending.popleft()
            self.by_version[v] = self.by_version.get(v, 0) + 1
            problem = self._judge(s, e, v)
            if problem is not None:
                self.violations += 1
                if len(self.examples) < MAX_EXAMPLES:
                    self.examples.append(f"connection {self.conn}: {problem}")

    def _judge(self, s: int, e: int, v: int) -> str | None:
        tl = self.timeline
        ks = tl.overlapping(s, e)
        if not ks:
            want = tl.stable_at(s)
            if v != want:
                return f"reply of version {v} while version {want} was in place (no transition running)"
            return None
        allowed = {tl.stable_before[ks[0]], *(tl.targets[k] for k in ks)}
        if v not in allowed:
            return f"reply of version {v} during transition {ks[-1]} (allowed {sorted(allowed)})"
        last = ks[-1]
        if not tl.monotonic[last]:
            return None
        target = tl.targets[last]
        if v == target and e >= tl.starts[last]:
            self._moved_in = last
        elif self._moved_in == last:
            return (
                f"reply of version {v} after this connection had seen version {target} "
                f"during transition {last} (versions must not go back while it runs)"
            )
        return None


@dataclass
class WriteLog:
    """One connection's writes: the last acknowledged value of each key, and the unsure ones."""

    acked: dict[str, bytes] = field(default_factory=dict)
    unsure: dict[str, set[bytes | None]] = field(default_factory=dict)

    def acknowledged(self, key: str, value: bytes) -> None:
        self.acked[key] = value
        self.unsure.pop(key, None)

    def unanswered(self, key: str, value: bytes) -> None:
        """The write may or may not have happened."""
        allowed = self.unsure.setdefault(key, {self.acked.get(key)})
        allowed.add(value)

    def expected(self, key: str) -> set[bytes | None]:
        return self.unsure.get(key) or {self.acked.get(key)}

    def written(self) -> list[str]:
        return sorted(set(self.acked) | set(self.unsure))
