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
    history:      "history": [PatchResult.to_dict(), ...] oldest first

`ok` is true only for an applied/reverted patch (or a successful query); a refused or aborted patch is
`ok: false` with the reason in `error` and the full result in `result`. This module is sans-IO except for
`read_line`, which both the agent and the client use on a blocking socket.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any

from livepatch.patch.limits import MAX_REPLY_BYTES as MAX_REPLY_BYTES  # re-exported for the agent
from livepatch.patch.limits import MAX_REQUEST_BYTES as MAX_REQUEST_BYTES  # and the client
from livepatch.patch.limits import JSONLimitError, loads_json

OPS = ("apply", "revert", "status", "history")
METHODS = ("global", "local", "auto")
MAX_TIMEOUT_S = 300.0
MAX_WATCH_S = 24 * 3600.0


class ProtocolError(Exception):
    """A request or reply that does not follow this protocol; the message is the reply's `error`."""


class LineTooLong(ProtocolError):
    pass


def encode(obj: dict[str, Any]) -> bytes:
    # ensure_ascii keeps the line free of raw newlines whatever the payload holds.
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode("ascii") + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    try:
        obj = loads_json(line)
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


def validate(req: dict[str, Any]) -> dict[str, Any]:
    """Check a decoded request's fields and fill defaults; raise ProtocolError with what is wrong."""
    op = req.get("op")
    from livepatch.agent import mve_protocol  # validated updates (additive)

    if op in mve_protocol.MVE_OPS:
        return mve_protocol.validate(req)
    if op not in OPS:
        raise ProtocolError(f"unknown op {op!r} (expected one of {', '.join(OPS)})")
    out: dict[str, Any] = {"op": op}
    if op in ("apply", "revert"):
        method = req.get("method", "auto") or "auto"
        if method not in METHODS:
            raise ProtocolError(f"unknown method {method!r} (expected one of {', '.join(METHODS)})")
        out["method"] = method
        out["timeout"] = _number(req, "timeout", 5.0, MAX_TIMEOUT_S)
    if op == "apply":
        if not isinstance(req.get("patch"), dict):
            raise ProtocolError("apply needs a 'patch' object (the .lpatch document)")
        out["patch"] = req["patch"]
        watch = req.get("watch")
        if watch is not None:
            if not isinstance(watch, dict):
                raise ProtocolError("'watch' must be an object or null")
            max_errors = watch.get("max_errors", 0)
            if isinstance(max_errors, bool) or not isinstance(max_errors, int) or max_errors < 0:
                raise ProtocolError("'watch.max_errors' must be an integer >= 0")
            max_slow = watch.get("max_slow_calls", 0)
            if isinstance(max_slow, bool) or not isinstance(max_slow, int) or max_slow < 0:
                raise ProtocolError("'watch.max_slow_calls' must be an integer >= 0")
            out["watch"] = {
                "window_s": _number(watch, "window_s", 10.0, MAX_WATCH_S),
                "max_errors": max_errors,
                "max_call_ms": (
                    None
                    if watch.get("max_call_ms") is None
                    else _number(watch, "max_call_ms", 0.0, MAX_WATCH_S * 1e3)
                ),
                "max_slow_calls": max_slow,
            }
        else:
            out["watch"] = None
    if op == "revert":
        patch_id = req.get("patch_id")
        if patch_id is not None and not isinstance(patch_id, str):
            raise ProtocolError("'patch_id' must be a string or null")
        out["patch_id"] = patch_id
        force = req.get("force", False)
        if not isinstance(force, bool):
            raise ProtocolError("'force' must be true or false")
        out["force"] = force
    return out
