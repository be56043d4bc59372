"""Patch events with monotonic timestamps, and the thread-safe recorder that collects them for one attempt."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any


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


class Recorder:
    """Collects the events of one patch attempt.

    Concurrency: `emit` may be called from any thread (managed threads emit "reached"/"migrated" while
    holding the registry lock); it only appends to a list under its own short lock, never blocks on
    anything else and never calls out.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []

    def emit(
        self,
        name: str,
        *,
        thread: str | None = None,
        generation: int | None = None,
        detail: str = "",
    ) -> Event:
        ev = Event(name, time.monotonic_ns(), thread, generation, detail)
        with self._lock:
            self._events.append(ev)
        return ev

    def events(self) -> tuple[Event, ...]:
        with self._lock:
            return tuple(self._events)

    def first(self, name: str) -> Event | None:
        with self._lock:
            return next((e for e in self._events if e.name == name), None)
