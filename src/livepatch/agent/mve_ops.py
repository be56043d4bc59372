"""The agent's handling of validated updates (livepatch.mve): update, promote, discard, update-status.

One update at a time per agent. The patch goes through the agent's own checks (structure, signature,
refusals, not applied already) before a follower is forked. `update` waits for the outcome on the
connection thread (promote/discard/update-status arrive on other connections meanwhile). After a
promotion the old leader replies, then exits; the follower starts a fresh agent on the same control
socket once the old one is gone (`after_takeover`).
"""

from __future__ import annotations

import atexit
import logging
import threading
from typing import Any

from livepatch.agent.mve_protocol import MveReply, MveRequest
from livepatch.errors import PatchRefused
from livepatch.patch import lpatch

log = logging.getLogger("livepatch.agent")

_lock = threading.Lock()
_session: Any = None  # the running livepatch.mve.Session
_last: dict[str, Any] | None = None  # the last outcome
_OUTCOME_WAIT_S = 24 * 3600.0


def handle(agent: Any, req: MveRequest) -> MveReply:
    return MveReply(_handle(agent, req))


def _handle(agent: Any, req: MveRequest) -> dict[str, Any]:
    from livepatch.mve import State, fallback

    op = req["op"]
    if op == "update":
        return _update(agent, req)
    session = _session
    if op == "update-status":
        return {
            "ok": True,
            "error": None,
            "update": session.status() if session is not None else None,
            "last": _last,
            "follow_back": fallback.status(),
        }
    if op == "retire":
        try:
            return {"ok": True, "error": None, "follow_back": fallback.retire()}
        except (RuntimeError, OSError) as exc:
            return {"ok": False, "error": str(exc), "follow_back": fallback.status()}
    if session is None:
        return {"ok": False, "error": "no validated update is running (see `livepatch update`)"}
    if session.options.promote != "manual" and op == "promote":
        return {"ok": False, "error": "this update promotes itself (--promote auto)"}
    if op == "promote":
        if session.state is not State.VALIDATED:
            return {
                "ok": False,
                "error": f"the follower is not validated yet (state {session.state}); "
                "see `livepatch update-status`, try again when it says validated",
            }
        session.promote()
    else:
        session.discard()
    return {"ok": True, "error": None, "state": session.state}


def _update(agent: Any, req: MveRequest) -> dict[str, Any]:
    global _session, _last
    from livepatch import mve

    host = mve.current()
    if host is None:
        return {
            "ok": False,
            "error": "this server does not support validated updates (no livepatch.mve host is "
            "registered); apply the patch with `livepatch apply` instead",
        }
    try:
        rules = mve.ruleset(req["rules"], req["rules_name"])
        options = mve.Options(
            window_requests=req["window_requests"],
            window_s=_window_s(req),
            promote=req["promote"],
            max_lag=req["max_lag"],
            coverage_timeout=req.get("exercise_wait_s", 60.0),
            transform=req.get("transform"),
            follow_back=bool(req.get("follow_back", False)),
        )
        if options.follow_back and not hasattr(host, "fallback_argv"):
            raise ValueError(
                "--follow-back: this server cannot start its old version again (its livepatch.mve "
                "host has no fallback_argv)"
            )
        _check_transform(req.get("transform"))
        pf = lpatch.from_document(req["patch"], source="the patch")
        spec, _signed_by = pf.verified_spec(agent.trusted_keys, allow_unsigned=agent.allow_unsigned)
        if spec.refusals:
            raise PatchRefused(
                f"the patch records changes that cannot be patched: {spec.refusals[0]}"
            )
    except (mve.RulesError, lpatch.PatchFileError, PatchRefused, ValueError) as exc:
        return {"ok": False, "error": str(exc)}
    with _lock:
        if _session is not None:
            return {
                "ok": False,
                "error": "a validated update is already running: wait for it, or "
                "`livepatch discard` it",
            }
        session = mve.Session(host, spec, rules, options, after_takeover=_respawner(agent))
        _session = session
    try:
        try:
            session.start()
        except RuntimeError as exc:
            return {"ok": False, "error": str(exc)}
        outcome = session.wait(_OUTCOME_WAIT_S) or {
            "outcome": mve.Outcome.UNKNOWN,
            "reason": "no outcome",
        }
    finally:
        with _lock:
            _session = None
    _last = outcome
    ok = mve.Outcome(outcome["outcome"]).ok
    return {"ok": ok, "error": None if ok else outcome["reason"], "update": outcome}


def _check_transform(transform: str | None) -> None:
    """Refuse before forking a --transform whose module the server cannot find (the follower imports
    it: nothing of it runs in the leader; a missing FUNC discards the follower with the reason)."""
    if transform is None:
        return
    import importlib.util

    module = transform.partition(":")[0]
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        found = None
        detail = f" ({exc})"
    else:
        detail = ""
    if found is None:
        raise ValueError(
            f"--transform {transform}: the server cannot import the module {module!r}{detail}; put "
            "it on the server's Python path (PYTHONPATH) or install it, then run the update again"
        )


def _window_s(req: MveRequest) -> float | None:
    if req["window_requests"] is not None:
        return None
    return req["window_s"] if req["window_s"] is not None else 5.0


def _respawner(agent: Any) -> Any:
    """What the promoted follower runs once the old leader exited: the same agent, new threads."""
    settings = dict(
        socket_path=agent.socket_path,
        trusted_keys=getattr(agent, "trusted_key_paths", ()),
        allow_unsigned=agent.allow_unsigned,
        state_dir=getattr(agent, "state_dir", None),
        on_stale=getattr(agent, "on_stale", "refuse"),
    )

    def respawn() -> None:
        global _session
        _session = None
        from livepatch.agent.agent import Agent

        try:
            fresh = Agent(**settings)
            fresh.start()
        except Exception:
            log.exception("the promoted server could not start its livepatch agent")
            return
        atexit.register(fresh.stop)

    return respawn
