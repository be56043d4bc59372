"""The control socket's requests for validated updates (livepatch.mve), validated like protocol.py's:

{"op": "update", "patch": <the .lpatch document>, "rules": "<rules file text>" | null,
 "rules_name": "RULES.py", "transform": "MODULE:FUNC" | null, "window_requests": N | null, "window_s": S | null,
 "promote": "auto"|"manual", "max_lag": N}
    -> waits for the outcome: {"ok": promoted?, "error": reason | null, "update": {...report}}
{"op": "promote"} / {"op": "discard"}   (the running manual update) -> {"ok", "error"}
{"op": "update-status"}                 -> {"ok", "error", "update": Session.status() | null,
                                            "last": the last outcome | null,
                                            "follow_back": livepatch.mve.fallback.status() | null}
{"op": "retire"}                        (a server promoted with "follow_back": true) the old version
                                        stops standing by -> {"ok", "error", "follow_back"}
"update" also takes "follow_back": true|false (default false).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MVE_OPS = ("update", "promote", "discard", "update-status", "retire")
MAX_WINDOW_S = 3600.0


@dataclass(frozen=True)
class MveRequest:
    """A validated request of MVE_OPS (`fields` as validate() filled them in)."""

    fields: dict[str, Any]

    @property
    def op(self) -> str:
        return str(self.fields["op"])

    def __getitem__(self, key: str) -> Any:
        return self.fields[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    def to_wire(self) -> dict[str, Any]:
        return dict(self.fields)


@dataclass(frozen=True)
class MveReply:
    """The reply to an MveRequest: {"ok", "error", ...op-specific fields} as sent."""

    fields: dict[str, Any]

    @property
    def ok(self) -> bool:
        return bool(self.fields.get("ok"))

    @property
    def error(self) -> str | None:
        error = self.fields.get("error")
        return None if error is None else str(error)

    def to_wire(self) -> dict[str, Any]:
        return dict(self.fields)


def _protocol_error(message: str) -> Exception:
    from livepatch.agent.protocol import ProtocolError  # protocol imports this module

    return ProtocolError(message)


def _positive_int(req: dict[str, Any], key: str, default: int | None) -> int | None:
    value = req.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _protocol_error(f"{key!r} must be a positive integer")
    return value


def validate(req: dict[str, Any]) -> MveRequest:
    return MveRequest(_fields(req))


def _fields(req: dict[str, Any]) -> dict[str, Any]:
    op = req["op"]
    out: dict[str, Any] = {"op": op}
    if op != "update":
        return out
    if not isinstance(req.get("patch"), dict):
        raise _protocol_error("update needs a 'patch' object (the .lpatch document)")
    out["patch"] = req["patch"]
    rules = req.get("rules")
    if rules is not None and not isinstance(rules, str):
        raise _protocol_error("'rules' must be the text of a rules file or null")
    out["rules"] = rules
    out["rules_name"] = str(req.get("rules_name") or "<rules>")
    transform = req.get("transform")
    if transform is not None and (
        not isinstance(transform, str)
        or len(transform) > 512
        or transform.count(":") != 1
        or not all(part.isidentifier() for part in transform.replace(":", ".").split("."))
    ):
        raise _protocol_error("'transform' must be 'MODULE:FUNC' or null")
    out["transform"] = transform
    out["window_requests"] = _positive_int(req, "window_requests", None)
    window_s = req.get("window_s")
    if window_s is not None and (
        isinstance(window_s, bool)
        or not isinstance(window_s, int | float)
        or not 0 < window_s <= MAX_WINDOW_S
    ):
        raise _protocol_error(f"'window_s' must be a number in (0, {MAX_WINDOW_S:g}]")
    if out["window_requests"] is not None and window_s is not None:
        raise _protocol_error("give 'window_requests' or 'window_s', not both")
    out["window_s"] = float(window_s) if window_s is not None else None
    promote = req.get("promote", "auto")
    if promote not in ("auto", "manual"):
        raise _protocol_error("'promote' must be 'auto' or 'manual'")
    out["promote"] = promote
    out["max_lag"] = _positive_int(req, "max_lag", 100_000)
    wait = req.get("exercise_wait_s", 60.0)
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= MAX_WINDOW_S:
        raise _protocol_error(f"'exercise_wait_s' must be a number in [0, {MAX_WINDOW_S:g}]")
    out["exercise_wait_s"] = float(wait)
    follow_back = req.get("follow_back", False)
    if not isinstance(follow_back, bool):
        raise _protocol_error("'follow_back' must be true or false")
    out["follow_back"] = follow_back
    return out
