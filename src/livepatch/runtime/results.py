"""The runtime's records as every layer reads them: the events and the result of one patch attempt, as the
history keeps them and the control socket sends them (`to_dict` / `from_dict`), and the statistics
snapshot of the thread registry (`livepatch.statistics()`). The names they carry (EventName, Action,
Outcome) are lifecycle.py's table; events.py's Recorder collects the events while an attempt runs;
registry.py takes the snapshot.

Loaded by the first attempt (or statistics()), not by `import livepatch`: these are dataclasses, and `dataclasses` imports
`inspect` and `ast`, which a server running only quiescence points never needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from livepatch.runtime.lifecycle import Action, EventName, Outcome
from livepatch.runtime.registry import Priority

__all__ = ["Event", "PatchResult", "RuntimeStatistics", "ThreadInfo"]


@dataclass(frozen=True)
class Event:
    """One event of an attempt, with a monotonic timestamp (events.Recorder collects them)."""

    name: EventName
    t_ns: int  # time.monotonic_ns()
    thread: str | None = None
    generation: int | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name.value,
            "t_ns": self.t_ns,
            "thread": self.thread,
            "generation": self.generation,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class PatchResult:
    """One attempt, as the history keeps it and the control socket sends it (`to_dict`/`from_dict`).

    method: "global" | "local" | "force" (or the method asked for, when refused before resolving it)."""

    patch_id: str
    action: Action
    method: str
    outcome: Outcome
    reason: str = ""
    events: tuple[Event, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome.ok

    def to_dict(self) -> dict[str, Any]:
        return {
            "patch_id": self.patch_id,
            "action": self.action.value,
            "method": self.method,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "events": [e.to_dict() for e in self.events],
            "timings": dict(self.timings),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PatchResult:
        """Read a result from a reply (the CLI, lpbench). Raises ValueError/KeyError/TypeError when `d`
        is not one."""
        return cls(
            patch_id=str(d["patch_id"]),
            action=Action(d["action"]),
            method=str(d["method"]),
            outcome=Outcome(d["outcome"]),
            reason=str(d.get("reason") or ""),
            events=tuple(
                Event(
                    EventName(e["name"]),
                    int(e["t_ns"]),
                    e.get("thread"),
                    e.get("generation"),
                    str(e.get("detail") or ""),
                )
                for e in d.get("events") or ()
            ),
            timings={str(k): float(v) for k, v in (d.get("timings") or {}).items()},
        )


@dataclass(frozen=True)
class ThreadInfo:
    name: str
    ident: int
    role: str
    priority: Priority
    state: str
    generation: int


@dataclass(frozen=True)
class RuntimeStatistics:
    """A consistent snapshot of the registry (taken under its lock)."""

    generation: int  # newest completed code version
    transition: str | None  # "global" | "local" | None
    by_generation: dict[int, int] = field(default_factory=dict)
    by_state: dict[str, int] = field(default_factory=dict)
    by_priority: dict[str, int] = field(default_factory=dict)
    threads: tuple[ThreadInfo, ...] = ()

    @property
    def managed(self) -> int:
        return len(self.threads)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (generation keys as strings, priorities by name)."""
        return {
            "generation": self.generation,
            "transition": self.transition,
            "managed": self.managed,
            "by_generation": {str(g): n for g, n in sorted(self.by_generation.items())},
            "by_state": dict(self.by_state),
            "by_priority": dict(self.by_priority),
            "threads": [
                {
                    "name": t.name,
                    "ident": t.ident,
                    "role": t.role,
                    "priority": t.priority.name,
                    "state": t.state,
                    "generation": t.generation,
                }
                for t in self.threads
            ],
        }
