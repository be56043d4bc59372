"""Fuzzing the control socket of a real agent (issue 10): arbitrary bytes, arbitrary JSON requests,
hostile JSON values, truncated lines and mutated patch documents. Every complete line gets exactly one
JSON reply (`ok: false` with an error, unless it happened to be a valid query), nothing is changed, the
service keeps serving, and the agent's log holds no traceback."""

from __future__ import annotations

import copy
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livepatch.agent.protocol import METHODS, OPS
from livepatch.patch import lpatch, signing
from tests.agent.agent_helpers import Service, cli, run_service, socket_dir
from tests.hardening.fuzzing import (
    FUZZ,
    FUZZ_TIMEOUT_S,
    HOSTILE_JSON_TEXT,
    JSON_VALUES,
    paths,
    set_path,
)
from tests.hardening.hardening_helpers import greet_spec, no_traceback, raw_request

pytestmark = pytest.mark.timeout(FUZZ_TIMEOUT_S)


@pytest.fixture(scope="module")
def agent(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Service, Path, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("fuzz-control")
    private, public, _ = signing.generate_keypair(tmp / "keys")
    doc = lpatch.build(greet_spec(patch_id="fuzz"), signing.load_private_key(private)).to_document()
    log = tmp / "service.log"
    with socket_dir() as d, run_service(d / "a.sock", trusted_keys=(public,), log_path=log) as svc:
        client = svc.connect()
        yield svc, log, doc
        assert client.request("GREET fuzz") == "hello fuzz (v1)"  # nothing was ever applied
        assert (
            json.loads(cli("status", "--socket", svc.socket_path, "--json").stdout)["applied"] == []
        )
    no_traceback(log.read_text())


def _check_reply(reply: dict[str, Any]) -> None:
    assert isinstance(reply.get("ok"), bool), reply
    if not reply["ok"]:
        assert isinstance(reply.get("error"), str) and reply["error"], reply


def _send(svc: Service, payload: bytes) -> None:
    _check_reply(raw_request(svc.socket_path, payload.replace(b"\n", b" ") + b"\n"))


@FUZZ
@given(st.binary(max_size=3000))
def test_arbitrary_bytes(agent: tuple[Service, Path, dict[str, Any]], data: bytes) -> None:
    _send(agent[0], data)


@FUZZ
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "op": st.sampled_from([*OPS, "", "APPLY", "shutdown"]) | JSON_VALUES,
            "method": st.sampled_from(METHODS) | JSON_VALUES,
            "timeout": st.floats(allow_nan=False) | JSON_VALUES,
            "patch_id": st.text(max_size=20) | JSON_VALUES,
            "patch": JSON_VALUES,
            "watch": st.fixed_dictionaries(
                {}, optional={"window_s": JSON_VALUES, "max_errors": JSON_VALUES}
            )
            | JSON_VALUES,
        },
    )
)
def test_arbitrary_requests(
    agent: tuple[Service, Path, dict[str, Any]], req: dict[str, Any]
) -> None:
    if req.get("op") == "revert" and req.get("timeout") is not None:
        req["timeout"] = 0.5  # bounded: there is nothing to revert anyway
    _send(agent[0], json.dumps(req).encode())


@FUZZ
@given(HOSTILE_JSON_TEXT, st.sampled_from(["{}", '{"op": %s}', '{"op": "apply", "patch": %s}']))
def test_hostile_values(agent: tuple[Service, Path, dict[str, Any]], text: str, shape: str) -> None:
    payload = shape % text if "%s" in shape else text
    _send(agent[0], payload.encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=st.data())
def test_mutated_patch_documents_are_refused(
    agent: tuple[Service, Path, dict[str, Any]], data: st.DataObject
) -> None:
    svc, _, doc = agent
    where = data.draw(st.sampled_from(paths(doc)))
    value = data.draw(JSON_VALUES)
    mutated = set_path(copy.deepcopy(doc), where, value)
    if mutated == doc:
        return
    req = {"op": "apply", "patch": mutated, "method": "global", "timeout": 1.0}
    reply = raw_request(svc.socket_path, json.dumps(req).encode() + b"\n")
    _check_reply(reply)
    canonical = lpatch.canonical_bytes
    if isinstance(mutated.get("manifest"), dict) and canonical(mutated["manifest"]) != canonical(
        doc["manifest"]
    ):
        assert reply["ok"] is False, reply  # a changed manifest never applies


@FUZZ
@given(st.binary(min_size=1, max_size=500))
def test_truncated_lines_then_the_agent_still_answers(
    agent: tuple[Service, Path, dict[str, Any]], data: bytes
) -> None:
    svc = agent[0]
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(svc.socket_path)
        sock.sendall(data.replace(b"\n", b""))
        sock.shutdown(socket.SHUT_WR)  # the peer closes before the end of the line: no reply is due
        sock.recv(1)
    _send(svc, b'{"op": "status"}')
