"""PLACEHOLDER with the final public signatures of in-process patching (the runtime helper implements it).

CONTRACT (the agent, the CLI and lpbench are written against these):

    apply_patch(spec: PatchSpec, *, method: str = "auto", timeout: float = 5.0,
                allow_active: bool = False, use_priorities: bool = True,
                watch: WatchPolicy | None = None) -> PatchResult
        method: "global" | "local" | "auto" (auto: local when spec.category is thread-local, else global).
        Never raises for a refused/aborted patch: the outcome says it. One transition at a time: a second
        caller waits for the first to finish. May be called from any thread except a managed one.

    revert_patch(patch_id: str | None = None, *, method: str = "auto", timeout: float = 5.0) -> PatchResult
        Undo the newest applied patch (or the named one when no later applied patch touches its targets).

    history() -> list[PatchResult]          every attempt, oldest first
    applied_patches() -> list[str]          ids of applied patches, oldest first (the stack)
    statistics() -> RuntimeStatistics       threads by generation, state and priority; current generation

Event names, in order: requested, verified, staged, reached (per thread, global), quiescent, swapped,
migrated (per thread, local), finished, aborted, refused, watch-started, rolled-back.
Timings (milliseconds) in PatchResult.timings: verify, stage, sync (request -> quiescent/all migrated),
swap, total.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class WatchPolicy:
    """After applying: count exceptions escaping patched functions for `window_s` seconds; more than
    `max_errors` of them revert the patch automatically (the history says why)."""

    window_s: float = 10.0
    max_errors: int = 0


@dataclass(frozen=True)
class Event:
    name: str
    t_ns: int  # time.monotonic_ns()
    thread: str | None = None
    generation: int | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "t_ns": self.t_ns,
            "thread": self.thread,
            "generation": self.generation,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class PatchResult:
    patch_id: str
    action: str  # "apply" | "revert"
    method: str  # "global" | "local"
    outcome: str  # "applied" | "reverted" | "refused" | "aborted" | "failed" | "rolled-back"
    reason: str = ""
    events: tuple[Event, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome in ("applied", "reverted")

    def to_dict(self) -> dict[str, Any]:
        return {
            "patch_id": self.patch_id,
            "action": self.action,
            "method": self.method,
            "outcome": self.outcome,
            "reason": self.reason,
            "events": [e.to_dict() for e in self.events],
            "timings": dict(self.timings),
        }
