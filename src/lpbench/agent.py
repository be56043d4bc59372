"""Talk to a running server's livepatch agent over its control socket (apply, revert, history).

The harness uses the agent's own client (livepatch.agent.client: one JSON line each way) instead of
starting the `livepatch` command for every update: a Python start-up costs a few hundred ms of CPU,
which on a 2-core machine would show in the very throughput we are measuring.

Concurrency: every call is an independent connection; safe from any thread.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from livepatch.agent import client

AGENT_TIMEOUT_S = 120.0
PATCH_TIMEOUT_S = 10.0  # the runtime's quiescence deadline per update


class AgentError(Exception):
    """The agent could not be reached or answered with a protocol error."""


def _request(socket_path: Path, req: dict[str, Any]) -> dict[str, Any]:
    try:
        return client.request(str(socket_path), req, timeout=AGENT_TIMEOUT_S)
    except Exception as exc:  # AgentUnreachable, ProtocolError: both mean no result to record
        raise AgentError(f"{type(exc).__name__}: {exc}") from exc


def _result(reply: dict[str, Any]) -> dict[str, Any]:
    """The PatchResult dict of an apply/revert reply; a refusal without a result becomes one."""
    result = reply.get("result")
    if isinstance(result, dict):
        return result
    return {
        "outcome": "failed",
        "reason": reply.get("error") or "no result",
        "events": [],
        "timings": {},
    }


def apply(socket_path: Path, patch: Path, method: str) -> dict[str, Any]:
    document = json.loads(patch.read_bytes())
    req = {
        "op": "apply",
        "patch": document,
        "method": method,
        "timeout": PATCH_TIMEOUT_S,
        "watch": None,
    }
    return _result(_request(socket_path, req))


def revert(socket_path: Path, method: str) -> dict[str, Any]:
    req = {"op": "revert", "patch_id": None, "method": method, "timeout": PATCH_TIMEOUT_S}
    return _result(_request(socket_path, req))


def history(socket_path: Path) -> list[dict[str, Any]]:
    reply = _request(socket_path, {"op": "history"})
    return list(reply.get("history") or [])
