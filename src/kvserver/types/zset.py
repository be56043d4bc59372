"""SortedSet: Redis's sorted set (members ordered by score, then by member bytes).

Theory of operation
-------------------
Two structures hold the same pairs, like Redis's dict + skiplist:
* `_scores`: member -> score, for O(1) ZSCORE / membership;
* `_order`: a sortedcontainers.SortedList of (score, member) tuples. Tuple order is exactly Redis's
  order (score, then memcmp of the member), and SortedList gives O(log N) insert/remove/rank and
  O(log N + k) slices by index, so ZRANGE by index never sorts.
Score bounds are looked up with probe tuples: `(s,)` sorts before every `(s, member)` and `(s, _TOP)`
after every one, which turns inclusive/exclusive score bounds into plain bisections.
Scores are floats, never NaN (callers reject NaN; Redis does too). -0.0 and 0.0 compare equal.

Concurrency: not thread-safe; owned by the event-loop thread like the Keyspace holding it.
Picklable (snapshots): the state is the ordered list of (score, member) pairs.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sortedcontainers import SortedList


class _Top:
    """Compares greater than any bytes member: the probe for 'just after every member of score s'."""

    __slots__ = ()

    def __lt__(self, other: object) -> bool:
        return False

    def __gt__(self, other: object) -> bool:
        return True

    def __reduce__(self) -> str:
        return "_TOP"


_TOP: Any = _Top()
# Public name for callers building lex bounds ("+" used as a lower bound).
ABOVE_ALL_MEMBERS: Any = _TOP


class SortedSet:
    """Members (bytes) with float scores, ordered by (score, member)."""

    def __init__(self, pairs: Any = ()) -> None:
        self._scores: dict[bytes, float] = {}
        self._order: SortedList = SortedList()
        for member, score in pairs:
            self.add(member, score)

    def __len__(self) -> int:
        return len(self._scores)

    def __contains__(self, member: object) -> bool:
        return member in self._scores

    def __iter__(self) -> Iterator[tuple[bytes, float]]:
        """(member, score) in ascending order."""
        for score, member in self._order:
            yield member, score

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SortedSet) and self._scores == other._scores

    __hash__ = None  # type: ignore[assignment]

    def __getstate__(self) -> list[tuple[float, bytes]]:
        # Snapshots store the ordered pairs once (not the dict and the list's internals): smaller,
        # and independent of sortedcontainers' layout. Sorting sorted input on load is linear.
        return list(self._order)

    def __setstate__(self, state: list[tuple[float, bytes]]) -> None:
        self._order = SortedList(state)
        self._scores = {member: score for score, member in state}

    def __repr__(self) -> str:
        return f"SortedSet({list(self)!r})"

    # ------------------------------------------------------------------ updates
    def score(self, member: bytes) -> float | None:
        return self._scores.get(member)

    def add(self, member: bytes, score: float) -> bool:
        """Insert or re-score `member`; True if it was new."""
        old = self._scores.get(member)
        if old is not None:
            if old == score:
                return False
            self._order.remove((old, member))
            self._scores[member] = score
            self._order.add((score, member))
            return False
        self._scores[member] = score
        self._order.add((score, member))
        return True

    def remove(self, member: bytes) -> bool:
        score = self._scores.pop(member, None)
        if score is None:
            return False
        self._order.remove((score, member))
        return True

    def pop_min(self, count: int = 1) -> list[tuple[bytes, float]]:
        out = []
        order = self._order
        for _ in range(min(count, len(order))):
            score, member = order.pop(0)
            del self._scores[member]
            out.append((member, score))
        return out

    def pop_max(self, count: int = 1) -> list[tuple[bytes, float]]:
        out = []
        order = self._order
        for _ in range(min(count, len(order))):
            score, member = order.pop()
            del self._scores[member]
            out.append((member, score))
        return out

    # ------------------------------------------------------------------ queries
    def rank(self, member: bytes, reverse: bool = False) -> int | None:
        score = self._scores.get(member)
        if score is None:
            return None
        index: int = self._order.index((score, member))
        return len(self._order) - 1 - index if reverse else index

    def range_by_index(
        self, start: int, stop: int, reverse: bool = False
    ) -> list[tuple[bytes, float]]:
        """Elements at ranks start..stop inclusive (Redis's negative indices allowed), in order."""
        n = len(self._order)
        if start < 0:
            start += n
        if stop < 0:
            stop += n
        start = max(start, 0)
        if start > stop or start >= n:
            return []
        stop = min(stop, n - 1)
        if reverse:
            lo, hi = n - 1 - stop, n - start
            items = self._order[lo:hi]
            items.reverse()
        else:
            items = self._order[start : stop + 1]
        return [(m, s) for s, m in items]

    def _score_bounds(self, lo: float, lo_ex: bool, hi: float, hi_ex: bool) -> tuple[int, int]:
        order = self._order
        i = order.bisect_left((lo, _TOP) if lo_ex else (lo,))
        j = order.bisect_left((hi,) if hi_ex else (hi, _TOP))
        return i, max(i, j)

    def count_by_score(self, lo: float, lo_ex: bool, hi: float, hi_ex: bool) -> int:
        i, j = self._score_bounds(lo, lo_ex, hi, hi_ex)
        return j - i

    def range_by_score(
        self,
        lo: float,
        lo_ex: bool,
        hi: float,
        hi_ex: bool,
        reverse: bool = False,
        offset: int = 0,
        count: int = -1,
    ) -> list[tuple[bytes, float]]:
        """Elements with lo <= score <= hi (bounds optionally exclusive), after LIMIT offset count."""
        i, j = self._score_bounds(lo, lo_ex, hi, hi_ex)
        return self._window(i, j, reverse, offset, count)

    def _lex_bounds(
        self,
        lo: bytes | None,
        lo_ex: bool,
        hi: bytes | None,
        hi_ex: bool,
        reverse: bool = False,
    ) -> tuple[int, int]:
        """Index window for a lex range; None means '-' for lo and '+' for hi.

        Redis defines BYLEX for members that share one score; then the window is two bisections.
        With mixed scores Redis's answer is whatever its walk finds (zzlFirstInLexRange /
        zzlLastInLexRange of t_zset.c): give up unless the last element is >= min and the first <=
        max, then from the first element >= min (from the last element <= max, for REV) extend while
        the members stay in range. We do the same walk, in O(N).
        """
        order = self._order
        n = len(order)
        if not n:
            return 0, 0

        def gte_min(m: bytes) -> bool:
            if lo is None:
                return True
            if lo is _TOP:
                return False
            return m > lo if lo_ex else m >= lo

        def lte_max(m: bytes) -> bool:
            if hi is None:
                return True
            return m < hi if hi_ex else m <= hi

        if order[0][0] == order[-1][0]:  # one score: members are sorted, bisect
            s0 = order[0][0]
            if lo is None:
                i = 0
            else:
                i = order.bisect_right((s0, lo)) if lo_ex else order.bisect_left((s0, lo))
            if hi is None:
                j = n
            else:
                j = order.bisect_left((s0, hi)) if hi_ex else order.bisect_right((s0, hi))
            return i, max(i, j)
        if not gte_min(order[-1][1]) or not lte_max(order[0][1]):
            return 0, 0
        if reverse:
            j = n - 1
            while j >= 0 and not lte_max(order[j][1]):
                j -= 1
            if j < 0 or not gte_min(order[j][1]):
                return 0, 0
            i = j
            while i > 0 and gte_min(order[i - 1][1]):
                i -= 1
            return i, j + 1
        i = 0
        while i < n and not gte_min(order[i][1]):
            i += 1
        if i == n or not lte_max(order[i][1]):
            return 0, 0
        j = i + 1
        while j < n and lte_max(order[j][1]):
            j += 1
        return i, j

    def count_by_lex(self, lo: bytes | None, lo_ex: bool, hi: bytes | None, hi_ex: bool) -> int:
        i, j = self._lex_bounds(lo, lo_ex, hi, hi_ex)
        return j - i

    def range_by_lex(
        self,
        lo: bytes | None,
        lo_ex: bool,
        hi: bytes | None,
        hi_ex: bool,
        reverse: bool = False,
        offset: int = 0,
        count: int = -1,
    ) -> list[tuple[bytes, float]]:
        i, j = self._lex_bounds(lo, lo_ex, hi, hi_ex, reverse)
        return self._window(i, j, reverse, offset, count)

    def _window(
        self, i: int, j: int, reverse: bool, offset: int, count: int
    ) -> list[tuple[bytes, float]]:
        """Elements of index range [i, j) after LIMIT offset count (count < 0: all), in order."""
        if offset < 0 or count == 0:
            return []
        if reverse:
            hi = j - offset
            lo = i if count < 0 else max(i, hi - count)
            if hi <= lo:
                return []
            items = self._order[lo:hi]
            items.reverse()
        else:
            lo = i + offset
            hi = j if count < 0 else min(j, lo + count)
            if hi <= lo:
                return []
            items = self._order[lo:hi]
        return [(m, s) for s, m in items]
