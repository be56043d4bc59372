"""Typed control-socket messages (agent/protocol.py): validate returns them, the client builds them, the
wire format stays the documented JSON; against a real agent on a real Unix socket."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

import livepatch
from livepatch.agent import client, protocol
from livepatch.patch import lpatch
from livepatch.patch.model import ChangeKind, DefinitionKind, ModulePatch, PatchSpec, TargetChange
from livepatch.runtime.lifecycle import Action, EventName, Outcome
from tests.agent.agent_helpers import socket_dir


def _spec() -> PatchSpec:
    change = TargetChange("f", ChangeKind.CHANGED, DefinitionKind.FUNCTION, "0" * 64, "1" * 64)
    module = ModulePatch("lp_not_loaded_anywhere", "def f():\n    return 2\n", (change,))
    return PatchSpec("p-typed", "lp", livepatch.Category.PROCESS, (module,))


REQUESTS: list[protocol.Request] = [
    protocol.StatusRequest(),
    protocol.HistoryRequest(),
    protocol.RevertRequest(),
    protocol.RevertRequest("abc", "global", 2.5, True),
    protocol.ApplyRequest({"manifest": {}}, "local", 1.0, None),
    protocol.ApplyRequest({"manifest": {}}, "auto", 3.0, protocol.WatchRequest(2.0, 1, 250.0, 3)),
]


@pytest.mark.parametrize("req", REQUESTS, ids=lambda r: type(r).__name__)
def test_what_the_client_builds_validate_gives_back(req: protocol.Request) -> None:
    wire = json.loads(protocol.encode(req.to_wire()))
    assert wire["op"] == req.op
    assert protocol.validate(wire) == req


def test_validate_fills_the_documented_defaults() -> None:
    assert protocol.validate({"op": "revert"}) == protocol.RevertRequest(None, "auto", 5.0, False)
    apply = protocol.validate({"op": "apply", "patch": {}, "watch": {}})
    assert apply == protocol.ApplyRequest({}, "auto", 5.0, protocol.WatchRequest(10.0, 0, None, 0))
    assert protocol.METHODS == ("auto", "global", "local")


@pytest.fixture()
def agent_socket() -> Iterator[str]:
    with socket_dir() as d, livepatch.Agent(socket_path=d / "a.sock", allow_unsigned=True):
        yield str(d / "a.sock")


def test_typed_replies_from_a_real_agent(agent_socket: str) -> None:
    status = client.send(agent_socket, protocol.StatusRequest())
    assert isinstance(status, protocol.StatusReply) and status.ok
    assert status.socket == agent_socket and status.allow_unsigned
    assert list(status.applied) == livepatch.applied_patches()

    # a process patch with --method local: refused by the verification step, a typed result
    doc = lpatch.build(_spec()).to_document()
    reply = client.send(agent_socket, protocol.ApplyRequest(doc, "local", 2.0))
    assert isinstance(reply, protocol.ResultReply) and not reply.ok
    assert reply.result.outcome is Outcome.REFUSED and reply.result.action is Action.APPLY
    assert reply.error == reply.result.reason and "--method global" in reply.error
    assert [e.name for e in reply.result.events] == [EventName.RECEIVED, EventName.REFUSED]
    # the wire form the CLI prints with --json is the agent's own reply, key for key
    raw = client.request(agent_socket, protocol.ApplyRequest(doc, "local", 2.0).to_wire())
    assert set(raw) == set(reply.to_wire()) == {"ok", "error", "result", "signed_by"}
    assert raw["result"]["outcome"] == "refused" and raw["ok"] is False

    history = client.send(agent_socket, protocol.HistoryRequest())
    assert isinstance(history, protocol.HistoryReply)
    assert history.history[-2:] == tuple(livepatch.history()[-2:])
    assert history.history[-1].patch_id == "p-typed"

    revert = client.send(agent_socket, protocol.RevertRequest(None, "auto", 2.0))
    assert isinstance(revert, protocol.ResultReply) and "nothing to revert" in (revert.error or "")


def test_error_replies_are_typed(agent_socket: str) -> None:
    bad = client.send(agent_socket, protocol.ApplyRequest({}, "auto", 2.0))
    assert isinstance(bad, protocol.ResultReply) and bad.result.outcome is Outcome.REFUSED
    with pytest.raises(protocol.ProtocolError, match="malformed status reply"):
        protocol.read_reply(protocol.StatusRequest(), {"ok": True, "error": None})
    reply = protocol.read_reply(protocol.HistoryRequest(), {"ok": False, "error": "stopping"})
    assert reply == protocol.ErrorReply("stopping") and not reply.ok
