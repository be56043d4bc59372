"""The control socket's wire protocol: one JSON request line in, one JSON reply line out.

Requests (UTF-8 JSON object, terminated by "\\n", at most MAX_REQUEST_BYTES including the newline, nested at
most MAX_JSON_DEPTH deep, integers of at most MAX_JSON_INT_DIGITS digits: livepatch.patch.limits):

    {"op": "apply", "patch": <the .lpatch document>, "method": "global"|"local"|"auto",
     "timeout": 5.0, "watch": {"window_s": 10.0, "max_errors": 0, "max_call_ms": null | 500.0,
                               "max_slow_calls": 0} | null}
    {"op": "revert", "patch_id": "<id>" | null, "method": "auto", "timeout": 5.0, "force": false}
    {"op": "status"}
    {"op": "history"}

Replies (one line):

    {"ok": true|false, "error": "<message>" | null, ...op-specific fields}
    apply/revert: "result": PatchResult.to_dict(), "signed_by": "<key id>" | null
    status:       "pid", "uid", "applied": [ids], "statistics": {...}
    history:      "history": [PatchResult.to_dict() + {"start": N}, ...] oldest first, across restarts;
                  "dropped": older attempts no longer kept
                  with a state directory; "starts": [{"start", "pid", "started_at", "outcome",
                  "restore": [{"patch_id", "outcome", "detail"}]}] (empty without one)

`ok` is true only for an applied/reverted patch (or a successful query); a refused or aborted patch is
`ok: false` with the reason in `error` and the full result in `result`. This module is sans-IO except for
`read_line`, which both the agent and the client use on a blocking socket.

Typed messages: `validate` turns a decoded request into ApplyRequest / RevertRequest / StatusRequest /
HistoryRequest (defaults filled in); the client builds the same classes and sends `to_wire()`. Replies
are ResultReply (apply/revert), StatusReply, HistoryReply and ErrorReply; the agent returns them and the
control server sends `to_wire()`, the client reads them back with `read_reply`. The wire format above is
the one compatibility promise: the classes only name it.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from livepatch.agent.mve_protocol import MVE_OPS, MveReply, MveRequest
from livepatch.agent.mve_protocol import validate as mve_validate
from livepatch.patch.limits import MAX_REPLY_BYTES as MAX_REPLY_BYTES  # re-exported for the agent
from livepatch.patch.limits import MAX_REQUEST_BYTES as MAX_REQUEST_BYTES  # and the client
from livepatch.patch.limits import JSONLimitError, loads_json
from livepatch.runtime.lifecycle import PatchResult
from livepatch.runtime.verify import METHODS as METHODS  # the one list of quiescence methods

OPS = ("apply", "revert", "status", "history")
MAX_TIMEOUT_S = 300.0
MAX_WATCH_S = 24 * 3600.0


class ProtocolError(Exception):
    """A request or reply that does not follow this protocol; the message is the reply's `error`."""


class LineTooLong(ProtocolError):
    pass


def encode(obj: dict[str, Any]) -> bytes:
    # ensure_ascii keeps the line free of raw newlines whatever the payload holds.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"


def decode(line: bytes, between: Callable[[], None] | None = None) -> dict[str, Any]:
    """One decoded line; `between` as limits.loads_json's (the control thread's Pacer)."""
    try:
        obj = loads_json(line, between)
    except JSONLimitError as exc:
        raise ProtocolError(f"not a JSON line: {exc}") from exc
    if not isinstance(obj, dict):
        raise ProtocolError("the line must be a JSON object")
    return obj


def read_line(sock: socket.socket, limit: int, deadline: float) -> bytes:
    """Read up to and including the first newline; raise LineTooLong past `limit` bytes, TimeoutError
    past `deadline` (time.monotonic()), ConnectionError if the peer closes before the newline."""
    chunks: list[bytes] = []
    size = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("timed out reading a line")
        sock.settimeout(remaining)
        chunk = sock.recv(min(1 << 20, limit + 1 - size))
        if not chunk:
            raise ConnectionError("the peer closed the connection before the end of the line")
        nl = chunk.find(b"\n")
        if nl >= 0:
            chunks.append(chunk[: nl + 1])
            size += nl + 1
            if size > limit:
                raise LineTooLong(f"line longer than the limit of {limit} bytes")
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            raise LineTooLong(f"line longer than the limit of {limit} bytes")


def _number(req: dict[str, Any], key: str, default: float, maximum: float) -> float:
    value = req.get(key, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= maximum:
        raise ProtocolError(f"{key!r} must be a number in (0, {maximum}]")
    return float(value)


# -- requests ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchRequest:
    """The watch window of an apply (runtime.watch.WatchPolicy's fields)."""

    window_s: float = 10.0
    max_errors: int = 0
    max_call_ms: float | None = None
    max_slow_calls: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "window_s": self.window_s,
            "max_errors": self.max_errors,
            "max_call_ms": self.max_call_ms,
            "max_slow_calls": self.max_slow_calls,
        }


@dataclass(frozen=True)
class ApplyRequest:
    patch: dict[str, Any]  # the .lpatch document
    method: str = "auto"
    timeout: float = 5.0
    watch: WatchRequest | None = None
    op = "apply"

    def to_wire(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "patch": self.patch,
            "method": self.method,
            "timeout": self.timeout,
            "watch": None if self.watch is None else self.watch.to_wire(),
        }


@dataclass(frozen=True)
class RevertRequest:
    patch_id: str | None = None
    method: str = "auto"
    timeout: float = 5.0
    force: bool = False
    op = "revert"

    def to_wire(self) -> dict[str, Any]:
        return {
            "op": self.op,
            "patch_id": self.patch_id,
            "method": self.method,
            "timeout": self.timeout,
            "force": self.force,
        }


@dataclass(frozen=True)
class StatusRequest:
    op = "status"

    def to_wire(self) -> dict[str, Any]:
        return {"op": self.op}


@dataclass(frozen=True)
class HistoryRequest:
    op = "history"

    def to_wire(self) -> dict[str, Any]:
        return {"op": self.op}


Request = ApplyRequest | RevertRequest | StatusRequest | HistoryRequest | MveRequest


def _method(req: dict[str, Any]) -> str:
    method = req.get("method", "auto") or "auto"
    if method not in METHODS:
        raise ProtocolError(f"unknown method {method!r} (expected one of {', '.join(METHODS)})")
    return str(method)


def _watch(watch: Any) -> WatchRequest | None:
    if watch is None:
        return None
    if not isinstance(watch, dict):
        raise ProtocolError("'watch' must be an object or null")
    max_errors = watch.get("max_errors", 0)
    if isinstance(max_errors, bool) or not isinstance(max_errors, int) or max_errors < 0:
        raise ProtocolError("'watch.max_errors' must be an integer >= 0")
    max_slow = watch.get("max_slow_calls", 0)
    if isinstance(max_slow, bool) or not isinstance(max_slow, int) or max_slow < 0:
        raise ProtocolError("'watch.max_slow_calls' must be an integer >= 0")
    return WatchRequest(
        window_s=_number(watch, "window_s", 10.0, MAX_WATCH_S),
        max_errors=max_errors,
        max_call_ms=(
            None
            if watch.get("max_call_ms") is None
            else _number(watch, "max_call_ms", 0.0, MAX_WATCH_S * 1e3)
        ),
        max_slow_calls=max_slow,
    )


def validate(req: dict[str, Any]) -> Request:
    """Check a decoded request's fields and fill defaults; raise ProtocolError with what is wrong."""
    op = req.get("op")
    if op in MVE_OPS:  # validated updates (mve_protocol.py)
        return mve_validate(req)
    if op not in OPS:
        raise ProtocolError(f"unknown op {op!r} (expected one of {', '.join(OPS)})")
    if op == "status":
        return StatusRequest()
    if op == "history":
        return HistoryRequest()
    method = _method(req)
    timeout = _number(req, "timeout", 5.0, MAX_TIMEOUT_S)
    if op == "apply":
        if not isinstance(req.get("patch"), dict):
            raise ProtocolError("apply needs a 'patch' object (the .lpatch document)")
        return ApplyRequest(req["patch"], method, timeout, _watch(req.get("watch")))
    patch_id = req.get("patch_id")
    if patch_id is not None and not isinstance(patch_id, str):
        raise ProtocolError("'patch_id' must be a string or null")
    force = req.get("force", False)
    if not isinstance(force, bool):
        raise ProtocolError("'force' must be true or false")
    return RevertRequest(patch_id, method, timeout, force)


# -- replies -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorReply:
    """A request that got no result: bad request, permission denied, agent stopping, no outcome yet."""

    error: str
    ok = False

    def to_wire(self) -> dict[str, Any]:
        return {"ok": False, "error": self.error}


@dataclass(frozen=True)
class ResultReply:
    """The outcome of an apply or revert."""

    result: PatchResult
    signed_by: str | None = None

    @property
    def ok(self) -> bool:
        return self.result.ok

    @property
    def error(self) -> str | None:
        return None if self.result.ok else (self.result.reason or self.result.outcome.value)

    def to_wire(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "error": self.error,
            "result": self.result.to_dict(),
            "signed_by": self.signed_by,
        }


@dataclass(frozen=True)
class StatusReply:
    pid: int
    uid: int
    socket: str
    trusted_keys: tuple[str, ...]
    allow_unsigned: bool
    applied: tuple[str, ...]
    statistics: dict[str, Any]  # RuntimeStatistics.to_dict()
    ok = True
    error = None

    def to_wire(self) -> dict[str, Any]:
        return {
            "ok": True,
            "error": None,
            "pid": self.pid,
            "uid": self.uid,
            "socket": self.socket,
            "trusted_keys": list(self.trusted_keys),
            "allow_unsigned": self.allow_unsigned,
            "applied": list(self.applied),
            "statistics": self.statistics,
        }


@dataclass(frozen=True)
class HistoryReply:
    """Every attempt, oldest first. With a state directory, across restarts: `entry_starts[i]` is the
    start `history[i]` belongs to and `starts` describes each start (StartRecord.summary(): number, pid,
    time, outcome, what its restore did, how many of its older attempts were dropped). Without one both
    are empty. `dropped`: older attempts not in `history` (the server keeps the newest; runtime/history.py
    and, per start, the state directory)."""

    history: tuple[PatchResult, ...] = field(default=())
    entry_starts: tuple[int, ...] = field(default=())
    starts: tuple[dict[str, Any], ...] = field(default=())
    dropped: int = 0
    ok = True
    error = None

    def to_wire(self) -> dict[str, Any]:
        entries = [r.to_dict() for r in self.history]
        for entry, start in zip(entries, self.entry_starts, strict=False):
            entry["start"] = start
        return {
            "ok": True,
            "error": None,
            "history": entries,
            "starts": list(self.starts),
            "dropped": self.dropped,
        }


Reply = ErrorReply | ResultReply | StatusReply | HistoryReply | MveReply


def read_reply(request: Request, wire: dict[str, Any]) -> Reply:
    """The typed reply to `request` (the client's side). Raises ProtocolError when `wire` is not one."""
    try:
        if not wire.get("ok") and not isinstance(wire.get("result"), dict):
            return ErrorReply(str(wire.get("error") or "failed"))
        if isinstance(request, ApplyRequest | RevertRequest):
            signed_by = wire.get("signed_by")
            return ResultReply(
                PatchResult.from_dict(wire["result"]),
                None if signed_by is None else str(signed_by),
            )
        if isinstance(request, StatusRequest):
            return StatusReply(
                pid=int(wire["pid"]),
                uid=int(wire["uid"]),
                socket=str(wire["socket"]),
                trusted_keys=tuple(str(k) for k in wire.get("trusted_keys") or ()),
                allow_unsigned=bool(wire.get("allow_unsigned")),
                applied=tuple(str(a) for a in wire.get("applied") or ()),
                statistics=dict(wire["statistics"]),
            )
        entries = wire["history"]
        starts = wire.get("starts") or []
        if not isinstance(starts, list) or not all(isinstance(st, dict) for st in starts):
            raise ValueError("'starts' is not a list of objects")
        return HistoryReply(
            tuple(PatchResult.from_dict(r) for r in entries),
            tuple(int(r["start"]) for r in entries if "start" in r),
            tuple(starts),
            int(wire.get("dropped") or 0),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ProtocolError(f"malformed {request.op} reply: {exc!r}") from exc
