"""The thread-safe recorder that collects the events of one attempt (the Event type is results.py's, its
EventName lifecycle.py's). Imported by the first attempt, not by `import livepatch`."""

from __future__ import annotations

import threading
import time

from livepatch.runtime.lifecycle import EventName
from livepatch.runtime.results import Event

__all__ = ["Recorder"]


class Recorder:
    """Collects the events of one patch attempt.

    Concurrency: `emit` may be called from any thread (managed threads emit reached/migrated while
    holding the registry lock); it only appends to a list under its own short lock, never blocks on
    anything else and never calls out.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []

    def emit(
        self,
        name: EventName,
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

    def first(self, name: EventName) -> Event | None:
        with self._lock:
            return next((e for e in self._events if e.name == name), None)
