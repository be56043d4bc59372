"""The control socket's requests for validated updates (livepatch.mve), validated like protocol.py's:

{"op": "update", "patch": <the .lpatch document>, "rules": "<rules file text>" | null,
 "rules_name": "RULES.py", "window_requests": N | null, "window_s": S | null,
 "promote": "auto"|"manual", "max_lag": N}
    -> waits for the outcome: {"ok": promoted?, "error": reason | null, "update": {...report}}
{"op": "promote"} / {"op": "discard"}   (the running manual update) -> {"ok", "error"}
{"op": "update-status"}                 -> {"ok", "error", "update": Session.status() | null,
                                            "last": the last outcome | null}
"""

from __future__ import annotations

from typing import Any

from livepatch.agent.protocol import ProtocolError

MVE_OPS = ("update", "promote", "discard", "update-status")
MAX_WINDOW_S = 3600.0


def _positive_int(req: dict[str, Any], key: str, default: int | None) -> int | None:
    value = req.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ProtocolError(f"{key!r} must be a positive integer")
    return value


def validate(req: dict[str, Any]) -> dict[str, Any]:
    op = req["op"]
    out: dict[str, Any] = {"op": op}
    if op != "update":
        return out
    if not isinstance(req.get("patch"), dict):
        raise ProtocolError("update needs a 'patch' object (the .lpatch document)")
    out["patch"] = req["patch"]
    rules = req.get("rules")
    if rules is not None and not isinstance(rules, str):
        raise ProtocolError("'rules' must be the text of a rules file or null")
    out["rules"] = rules
    out["rules_name"] = str(req.get("rules_name") or "<rules>")
    out["window_requests"] = _positive_int(req, "window_requests", None)
    window_s = req.get("window_s")
    if window_s is not None and (
        isinstance(window_s, bool)
        or not isinstance(window_s, int | float)
        or not 0 < window_s <= MAX_WINDOW_S
    ):
        raise ProtocolError(f"'window_s' must be a number in (0, {MAX_WINDOW_S:g}]")
    if out["window_requests"] is not None and window_s is not None:
        raise ProtocolError("give 'window_requests' or 'window_s', not both")
    out["window_s"] = float(window_s) if window_s is not None else None
    promote = req.get("promote", "auto")
    if promote not in ("auto", "manual"):
        raise ProtocolError("'promote' must be 'auto' or 'manual'")
    out["promote"] = promote
    out["max_lag"] = _positive_int(req, "max_lag", 100_000)
    wait = req.get("exercise_wait_s", 60.0)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= MAX_WINDOW_S:
        raise ProtocolError(f"'exercise_wait_s' must be a number in [0, {MAX_WINDOW_S:g}]")
    out["exercise_wait_s"] = float(wait)
    return out
