"""The replication link's shared secret (--replication-secret-file), with real processes (issue 15):
the same secret on both sides replicates; a different secret, or a secret on one side only, is refused
with a line saying which option to set, and nothing is shipped; an unusable secret file stops the
server at start with a clear error and no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.conftest import free_port
from tests.replication.nodes import Node, wait_serving

pytestmark = pytest.mark.timeout(120)


def _secret(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> str:
    path = tmp_path / name
    path.write_text(text + "\n")
    path.chmod(mode)
    return str(path)


def test_the_same_secret_replicates(pair: tuple[int, Node, Node], tmp_path: Path) -> None:
    port, a, b = pair
    secret = _secret(tmp_path, "s", "correct horse battery staple")
    b.start_standby(port, a, "--replication-secret-file", secret)
    a.start_primary(port, b, "--replication-secret-file", secret)
    a.wait_protected()
    with redis.Redis(port=port) as c:
        assert c.set("k", "v")
    a.kill()
    wait_serving(port, 30)
    with redis.Redis(port=port) as c:
        assert c.get("k") == b"v"


def test_a_switchover_with_the_secret_resumes_without_a_full_sync(
    pair: tuple[int, Node, Node], tmp_path: Path
) -> None:
    """The resume offer (switchover, no full sync) goes through the authenticated handshake too:
    the standby's WELCOME answers it before the primary's proof, and it applies it once proven."""
    port, a, b = pair
    secret = _secret(tmp_path, "s", "correct horse battery staple")
    b.start_standby(port, a, "--replication-secret-file", secret)
    a.start_primary(
        port, b, "--replication-secret-file", secret,
        "--replication-listen", f"127.0.0.1:{a.repl_port}",
    )  # fmt: skip
    a.wait_protected()
    with redis.Redis(port=port) as c:
        assert c.set("before", "1")
    done = subprocess.run(
        [sys.executable, "-m", "livepatch.cli", "switchover", "--socket", a.status_socket],
        capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    new = b.wait_protected()
    assert new["full_syncs"] == 0 and a.status()["full_syncs"] == 0
    with redis.Redis(port=port) as c:
        assert c.get("before") == b"1"
        assert c.set("after", "2")  # acknowledged once a holds it (commit protection)
    b.kill()
    wait_serving(port, 30)
    with redis.Redis(port=port) as c:
        assert c.get("before") == b"1" and c.get("after") == b"2"


@pytest.mark.parametrize(
    ("primary_secret", "standby_secret", "why"),
    [
        ("one secret of enough bytes", "another secret, also long", "did not prove"),
        (None, "a secret only the standby has", "has no --replication-secret-file"),
        ("a secret only the primary has", None, "this standby has none"),
    ],
)
def test_a_peer_without_the_secret_is_refused(
    pair: tuple[int, Node, Node],
    tmp_path: Path,
    primary_secret: str | None,
    standby_secret: str | None,
    why: str,
) -> None:
    port, a, b = pair
    b_args = (
        ["--replication-secret-file", _secret(tmp_path, "b", standby_secret)]
        if standby_secret
        else []
    )
    a_args = (
        ["--replication-secret-file", _secret(tmp_path, "a", primary_secret)]
        if primary_secret
        else []
    )
    b.start_standby(port, a, *b_args)
    a.start_primary(port, b, *a_args)
    status = a.wait_status(lambda s: bool(s.get("refused")), 30, "a refusal")
    assert why in status["refused"] and "--replication-secret-file" in status["refused"]
    assert status["full_syncs"] == 0 and status["acked_epoch"] == 0
    assert b.status()["full_syncs"] == 0
    assert "REFUSED" in a.log_path.read_text() + b.log_path.read_text()
    with redis.Redis(port=port) as c:  # the primary serves, unprotected (it has no standby)
        assert c.set("k", "v")


@pytest.mark.parametrize(
    ("text", "mode", "message"),
    [
        ("long enough secret here", 0o644, "chmod 600"),
        ("short", 0o600, "shorter than 16 bytes"),
        (None, 0o600, "cannot read the replication secret file"),
    ],
)
def test_an_unusable_secret_file_is_a_clear_error(
    tmp_path: Path, text: str | None, mode: int, message: str
) -> None:
    path = _secret(tmp_path, "s", text, mode) if text else str(tmp_path / "missing")
    port, repl = free_port(), free_port()
    result = subprocess.run(
        [
            *(sys.executable, "-m", "kvserver", "--no-livepatch", "--port", str(port)),
            *("--replicate-to", f"127.0.0.1:{repl}", "--replication-secret-file", path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
