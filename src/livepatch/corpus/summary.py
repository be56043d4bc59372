"""The corpus's figures: what issue 13's patchability goal is measured against.

- `changing`: commits that change the package's code (everything but `skipped`);
- `accepted_pct`: accepted / changing, THE figure (an empty commit needs no patch, but it is not a
  patch produced either, so it counts against the goal; `accepted_of_code_pct` leaves them out);
- per refusal kind: the commits with at least one refusal of that kind, and `sole`: those whose only
  refusal kind it is, i.e. the commits that widening this one rule would turn into patches. `sole`
  is what tells which rule to widen first;
- `widening`: the refusal kinds in the order that turns the most refused commits into patches (greedy:
  each step adds the kind that unlocks the most further commits, a commit being unlocked when all its
  refusal kinds are widened), with the accepted % each step would reach. An upper bound: it assumes
  every refusal of a widened kind becomes patchable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from livepatch.corpus.classify import CommitResult, Outcome


@dataclass(frozen=True)
class KindCount:
    kind: str
    commits: int
    sole: int
    example: str  # sha of the first commit (oldest) with this kind
    example_reason: str


@dataclass(frozen=True)
class Summary:
    seen: int
    outcomes: dict[str, int]
    refusals: list[KindCount]  # most commits first
    errors: list[KindCount]  # by error kind
    widening: list[tuple[str, float]]  # (kind, accepted % once it and those before it are widened)
    with_transformer: int = 0  # refused commits `livepatch diff --accept-transformer` would patch
    does_not_compile: int = 0  # error commits whose code does not compile under this Python

    @property
    def changing(self) -> int:
        return self.seen - self.outcomes.get(Outcome.SKIPPED.value, 0)

    def pct(self, n: int, of: int | None = None) -> float:
        total = self.changing if of is None else of
        return round(100.0 * n / total, 1) if total else 0.0

    @property
    def accepted_pct(self) -> float:
        return self.pct(self.outcomes.get(Outcome.ACCEPTED.value, 0))

    @property
    def accepted_of_code_pct(self) -> float:
        code = self.changing - self.outcomes.get(Outcome.EMPTY.value, 0)
        return self.pct(self.outcomes.get(Outcome.ACCEPTED.value, 0), code)

    @property
    def accepted_with_transformer_pct(self) -> float:
        """accepted_pct when the author confirms every generated transformer."""
        return self.pct(self.outcomes.get(Outcome.ACCEPTED.value, 0) + self.with_transformer)

    @property
    def compiling_code_changes(self) -> int:
        """Commits whose code changed and compiles under this Python (a Python 2 commit cannot run in
        the server, so there is nothing to patch live)."""
        return self.changing - self.outcomes.get(Outcome.EMPTY.value, 0) - self.does_not_compile

    def to_dict(self) -> dict[str, Any]:
        def kinds(items: list[KindCount]) -> list[dict[str, Any]]:
            return [
                {
                    "kind": k.kind,
                    "commits": k.commits,
                    "pct_of_changing": self.pct(k.commits),
                    "sole": k.sole,
                    "example": k.example,
                    "example_reason": k.example_reason,
                }
                for k in items
            ]

        return {
            "commits_seen": self.seen,
            "commits_changing_package": self.changing,
            "outcomes": self.outcomes,
            "accepted_pct": self.accepted_pct,
            "accepted_of_code_changes_pct": self.accepted_of_code_pct,
            "refusals_by_kind": kinds(self.refusals),
            "errors_by_kind": kinds(self.errors),
            "widening": [{"kind": k, "accepted_pct": pct} for k, pct in self.widening],
            "refused_but_accepted_with_transformer": self.with_transformer,
            "accepted_with_transformer_pct": self.accepted_with_transformer_pct,
            "compiling_code_changes": self.compiling_code_changes,
            "accepted_of_compiling_code_changes_pct": self.pct(
                self.outcomes.get(Outcome.ACCEPTED.value, 0), self.compiling_code_changes
            ),
            "accepted_with_transformer_of_compiling_code_changes_pct": self.pct(
                self.outcomes.get(Outcome.ACCEPTED.value, 0) + self.with_transformer,
                self.compiling_code_changes,
            ),
        }


def summarise(results: list[CommitResult]) -> Summary:
    outcomes = {o.value: 0 for o in Outcome}
    refusals: dict[str, list[CommitResult]] = {}
    errors: dict[str, list[CommitResult]] = {}
    for r in results:
        outcomes[r.outcome.value] += 1
        for kind in r.refusal_kinds:
            refusals.setdefault(kind, []).append(r)
        if r.error_kind is not None:
            errors.setdefault(r.error_kind.value, []).append(r)

    def counts(groups: dict[str, list[CommitResult]], refusal: bool) -> list[KindCount]:
        out = []
        for kind, rs in groups.items():
            first = rs[0]
            reason = (
                next(x["reason"] for x in first.refusals if x["kind"] == kind)
                if refusal
                else first.reason
            )
            sole = sum(1 for r in rs if r.refusal_kinds == [kind]) if refusal else len(rs)
            out.append(KindCount(kind, len(rs), sole, first.sha, reason))
        return sorted(out, key=lambda k: (-k.commits, -k.sole, k.kind))

    accepted = outcomes[Outcome.ACCEPTED.value]
    changing = len(results) - outcomes[Outcome.SKIPPED.value]
    return Summary(
        len(results),
        outcomes,
        counts(refusals, True),
        counts(errors, False),
        _widening([set(r.refusal_kinds) for r in results if r.refusals], accepted, changing),
        with_transformer=sum(1 for r in results if r.with_transformer),
        does_not_compile=len(errors.get("does-not-compile", [])),
    )


def _widening(blocked: list[set[str]], accepted: int, changing: int) -> list[tuple[str, float]]:
    widened: set[str] = set()
    steps = []
    while blocked:
        gains = {
            kind: (
                sum(1 for b in blocked if b <= widened | {kind}),  # commits it unlocks now
                sum(1 for b in blocked if kind in b),  # tie-break: commits it is part of
            )
            for kind in sorted({k for b in blocked for k in b} - widened)  # always progress
        }
        best = max(gains, key=lambda k: gains[k])
        widened.add(best)
        accepted += gains[best][0]
        blocked = [b for b in blocked if not b <= widened]
        steps.append((best, round(100.0 * accepted / changing, 1) if changing else 0.0))
    return steps
