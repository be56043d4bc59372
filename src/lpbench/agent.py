"""Talk to a running server's livepatch agent over its control socket (apply, revert, history).

The harness uses the agent's own client (livepatch.agent.client: one JSON line each way) instead of
starting the `livepatch` command for every update: a Python start-up costs a few hundred ms of CPU,
which on a 2-core machine would show in the very throughput we are measuring.

Concurrency: every call is an independent connection; safe from any thread.
"""

from __future__ import annotations

import json
from pathlib import Path

from livepatch.agent import client, protocol
from livepatch.runtime.lifecycle import Action, Outcome, PatchResult

AGENT_TIMEOUT_S = 120.0
PATCH_TIMEOUT_S = 10.0  # the runtime's quiescence deadline per update


class AgentError(Exception):
    """The agent could not be reached or answered with a protocol error."""


def _send(
    socket_path: Path, req: protocol.Request, wait_s: float = AGENT_TIMEOUT_S
) -> protocol.Reply:
    try:
        return client.send(str(socket_path), req, timeout=wait_s)
    except Exception as exc:  # AgentUnreachable, ProtocolError: both mean no result to record
        raise AgentError(f"{type(exc).__name__}: {exc}") from exc


def failed(patch_id: str, action: Action, method: str, reason: str) -> PatchResult:
    """A result for an update that got none from the agent (unreachable, or an error reply)."""
    return PatchResult(patch_id, action, method, Outcome.FAILED, reason)


def _result(reply: protocol.Reply, action: Action, method: str) -> PatchResult:
    """The PatchResult of an apply/revert reply; an error reply without a result becomes a failed one."""
    if isinstance(reply, protocol.ResultReply):
        return reply.result
    return failed("", action, method, reply.error or "no result")


def apply(
    socket_path: Path,
    patch: Path,
    method: str,
    timeout_s: float = PATCH_TIMEOUT_S,
    wait_s: float = AGENT_TIMEOUT_S,
) -> PatchResult:
    """timeout_s: the runtime's quiescence deadline; wait_s: how long to wait for the agent's answer."""
    document = json.loads(patch.read_bytes())
    req = protocol.ApplyRequest(document, method, timeout_s)
    return _result(_send(socket_path, req, wait_s), Action.APPLY, method)


def revert(
    socket_path: Path,
    method: str,
    timeout_s: float = PATCH_TIMEOUT_S,
    wait_s: float = AGENT_TIMEOUT_S,
) -> PatchResult:
    req = protocol.RevertRequest(None, method, timeout_s)
    return _result(_send(socket_path, req, wait_s), Action.REVERT, method)


def history(socket_path: Path) -> list[PatchResult]:
    reply = _send(socket_path, protocol.HistoryRequest())
    return list(reply.history) if isinstance(reply, protocol.HistoryReply) else []
