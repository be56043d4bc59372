"""How an update is triggered during a run: the UpdateMethod protocol and its registry.

Each trigger returns one *update record* (JSON-ready), the unit summary.json and the plots work with:
    t_ns       monotonic ns when the harness triggered it (the centre of its ±1.5 s window)
    action     "apply" | "revert" | "restart" | "none"
    method     the update method's name
    outcome    "applied" | "reverted" | "refused" | "aborted" | "failed" | "restarted" | "none"
    timings    ms: sync, swap, total ... (the agent's PatchResult.timings; restart: down, gap)
    events     the agent's events (name, t_ns, thread, generation, detail), server-side monotonic ns
    window_ns  [start, end] of the migration window (requested -> finished; restart: shutdown -> ready)
    patch      {"functions": n, "bytes": b} of the patch applied (apply only)

Live methods apply the patch(es) and revert them alternately (apply at the 1st, 3rd, ... time, revert at
the 2nd, 4th, ...), so every update is a real code change and the server ends where it began. With
several patches (the patch-size sweep) the k-th apply uses patch k mod n.

Registering another method (validated update, failover) means adding a class with `name`, `needs_live`
and `trigger(server, index)` to METHODS below; a method that needs its own kind of server (the hot
standby's pair, lpbench.standby) also has `server_factory(port, data_dir)`.

Concurrency: triggers run on the harness's main thread, one at a time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from livepatch.runtime.lifecycle import Action, Outcome
from lpbench import agent
from lpbench.patches import BuiltPatch
from lpbench.servers import Server

# An update record's outcome: a patch's (lifecycle.Outcome) or one of the harness's own.
RESTARTED = "restarted"  # the restart method
NO_UPDATE = "none"  # the baseline method
FAILED_OVER = "failed-over"  # lpbench.standby: the standby serves after a kill -9 of the primary
SWITCHED_OVER = "switched-over"  # lpbench.standby: `livepatch switchover` done
UPDATE_OK: frozenset[str] = frozenset(
    {Outcome.APPLIED, Outcome.REVERTED, RESTARTED, NO_UPDATE, FAILED_OVER, SWITCHED_OVER}
)


class UpdateMethod(Protocol):
    name: str
    needs_live: bool  # needs the server's livepatch agent

    def trigger(self, server: Server, index: int) -> dict[str, Any]: ...


def event_window(events: list[dict[str, Any]], t_ns: int) -> list[int]:
    """[first, last] event time: the migration window ([t_ns, t_ns] when there are no events)."""
    times = [int(e["t_ns"]) for e in events if "t_ns" in e]
    return [min(times), max(times)] if times else [t_ns, t_ns]


class NoUpdate:
    """The baseline: nothing happens, but the record marks the time so windows compare like for like."""

    name = "none"
    needs_live = False

    def trigger(self, server: Server, index: int) -> dict[str, Any]:
        t = time.monotonic_ns()
        return {
            "t_ns": t, "action": "none", "method": self.name, "outcome": NO_UPDATE,
            "timings": {}, "events": [], "window_ns": [t, t],
        }  # fmt: skip


class LiveUpdate:
    def __init__(
        self,
        quiescence: str,
        patches: list[BuiltPatch],
        timeout_s: float = agent.PATCH_TIMEOUT_S,
        wait_s: float = agent.AGENT_TIMEOUT_S,
    ) -> None:
        if not patches:
            raise ValueError("a live update needs at least one patch")
        self.timeout_s = timeout_s  # the runtime's quiescence deadline per update
        self.wait_s = wait_s  # for the agent's answer (beyond it: the server hung)
        self.quiescence = quiescence  # "global" | "local"
        self.name = f"live-{quiescence}"
        self.needs_live = True
        self.patches = patches

    def trigger(self, server: Server, index: int) -> dict[str, Any]:
        sock = server.control_socket
        assert sock is not None
        t = time.monotonic_ns()
        patch: BuiltPatch | None = None
        try:
            if index % 2 == 0:
                patch = self.patches[(index // 2) % len(self.patches)]
                result = agent.apply(sock, patch.path, self.quiescence, self.timeout_s, self.wait_s)
            else:
                result = agent.revert(sock, self.quiescence, self.timeout_s, self.wait_s)
        except agent.AgentError as exc:
            action = Action.APPLY if index % 2 == 0 else Action.REVERT
            result = agent.failed("", action, self.quiescence, str(exc))
        events = result.to_dict()["events"]
        record = {
            "t_ns": t,
            "action": "apply" if index % 2 == 0 else "revert",
            "method": self.name,
            "outcome": result.outcome.value,
            "reason": result.reason,
            "patch_id": result.patch_id,
            "timings": dict(result.timings),
            "events": events,
            "window_ns": event_window(events, t),
        }
        if patch is not None:
            record["patch"] = {"functions": patch.n_functions, "bytes": patch.size_bytes}
        return record


class Restart:
    """Stop the server (it saves its data) and start it again; clients reconnect."""

    name = "restart"
    needs_live = False

    def trigger(self, server: Server, index: int) -> dict[str, Any]:
        times = server.restart()
        t, down, up = times["t_ns"], times["down_ns"], times["up_ns"]
        return {
            "t_ns": t, "action": "restart", "method": self.name, "outcome": RESTARTED,
            "timings": {"down": (down - t) / 1e6, "total": (up - t) / 1e6},
            "events": [{"name": "shutdown", "t_ns": t}, {"name": "exited", "t_ns": down},
                       {"name": "ready", "t_ns": up}],
            "window_ns": [t, up],
        }  # fmt: skip


# name -> factory(patches); patches are ignored by methods that do not patch.
METHODS: dict[str, Callable[[list[BuiltPatch]], UpdateMethod]] = {
    "none": lambda patches: NoUpdate(),
    "live-global": lambda patches: LiveUpdate("global", patches),
    "live-local": lambda patches: LiveUpdate("local", patches),
    "restart": lambda patches: Restart(),
    "failover": lambda patches: _standby_method("failover"),
    "switchover": lambda patches: _standby_method("switchover"),
}


def _standby_method(name: str) -> UpdateMethod:
    """A hot-standby method (lpbench.standby): it runs against a primary and standby pair, which
    its `server_factory` makes in place of the run's server."""
    from lpbench import standby

    return standby.Failover() if name == "failover" else standby.Switchover()


def make_update(name: str, patches: list[BuiltPatch]) -> UpdateMethod:
    try:
        factory = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown update method {name!r}; known: {', '.join(METHODS)}") from None
    return factory(patches)
