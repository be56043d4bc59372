"""Helpers shared by the hardening tests: raw control-socket requests and patch files for the test
service (tests/agent/service), built with the real differ and written with the real file format."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from livepatch.agent import protocol
from livepatch.patch import lpatch
from livepatch.patch.model import Category, PatchSpec
from livepatch.patch.package import build_patch, read_directory
from tests.agent.agent_helpers import SERVICE_DIR


def raw_request(socket_path: str, payload: bytes, timeout: float = 30.0) -> dict[str, Any]:
    """Send `payload` as it is (it should end with a newline) and decode the one reply line."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(socket_path)
        try:
            sock.sendall(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the agent answered early (e.g. a line over the limit): its reply says why
        line = protocol.read_line(sock, protocol.MAX_REPLY_BYTES, time.monotonic() + timeout)
    return json.loads(line)


def greet_spec(
    *,
    new: str = "v2",
    category: Category = Category.PROCESS,
    hooks_source: str | None = None,
    patch_id: str | None = None,
    description: str = "",
) -> PatchSpec:
    """The service's v1 -> `new` patch, as `livepatch diff` builds it."""
    pp = build_patch(
        read_directory(SERVICE_DIR / "v1", "greetsvc"),
        read_directory(SERVICE_DIR / new, "greetsvc"),
        category=category,
        hooks_source=hooks_source,
        patch_id=patch_id,
        description=description,
    )
    assert pp.spec.refusals == (), pp.spec.refusals
    return pp.spec


def write_patch(path: Path, spec: PatchSpec) -> Path:
    lpatch.write(path, lpatch.build(spec))  # unsigned: the services here run with --allow-unsigned
    return path


def no_traceback(text: str) -> None:
    assert "Traceback" not in text, text[-3000:]
