"""Live patch of a command handler while redis-benchmark and other clients keep running.

The patch is built the way an operator builds one: copy the running kvserver source (OLD), write a v2 of
a handler module (NEW), `livepatch diff OLD NEW`, `livepatch apply --socket`. Connections opened before
the patch must see the new behaviour on their next command; no client sees an error; no key is lost.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
import redis

import kvserver
from tests.conftest import require_tool
from tests.support import livepatch_cli

SRC = Path(kvserver.__file__).resolve().parent
OLD_ECHO = "    return argv[1]\n"
NEW_ECHO = '    return b"v2:" + argv[1]\n'


def build_patch(work: Path) -> Path:
    old, new = work / "old", work / "new"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(SRC, old / "kvserver", ignore=ignore)
    shutil.copytree(SRC, new / "kvserver", ignore=ignore)
    handler = new / "kvserver" / "commands" / "connection.py"
    text = handler.read_text()
    start = text.index("def echo_command")
    assert text.count(OLD_ECHO, start, start + 200) == 1
    handler.write_text(text[:start] + text[start:].replace(OLD_ECHO, NEW_ECHO, 1))
    out = work / "echo-v2.lpatch"
    done = livepatch_cli("diff", str(old), str(new), "--package", "kvserver", "-o", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    return out


@pytest.mark.timeout(240)
def test_live_patch_of_a_handler_under_redis_benchmark(kv_factory):
    benchmark = require_tool("redis-benchmark")
    work = Path(tempfile.mkdtemp(prefix="lp-kv-"))  # short: a Unix socket path has ~100 bytes
    try:
        sock = work / "agent.sock"
        server = kv_factory("--livepatch-socket", str(sock), "--allow-unsigned")
        patch = build_patch(work)

        # Connections opened before the patch, each used once with the old code.
        before = [server.client() for _ in range(5)]
        for r in before:
            assert r.echo("x") == b"x"

        # A writer that records every acknowledged write, and redis-benchmark, both running across it.
        stop = threading.Event()
        acked: list[str] = []
        errors: list[BaseException] = []
        started = threading.Event()
        continued = threading.Event()  # set once the writer got `target[0]` acknowledgements
        target = [10**9]

        def write() -> None:
            r = server.client()
            i = 0
            try:
                while not stop.is_set():
                    r.set(f"lp:{i}", i)
                    acked.append(f"lp:{i}")
                    i += 1
                    if i == 200:
                        started.set()
                    if i >= target[0]:
                        continued.set()
            except BaseException as exc:
                errors.append(exc)
                started.set()
                continued.set()

        writer = threading.Thread(target=write)
        writer.start()
        bench = subprocess.Popen(
            [benchmark, "-h", server.host, "-p", str(server.port), "-t", "set,get",
             "-n", "2000000", "-c", "20", "-r", "10000", "-q"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            assert started.wait(60) and not errors
            done = livepatch_cli("apply", str(patch), "--socket", str(sock), "--json")
            assert done.returncode == 0, done.stdout + done.stderr
            # Old connections run the new handler on their next command.
            for r in before:
                assert r.echo("x") == b"v2:x"
            assert server.client().echo("y") == b"v2:y"
            # Keep the load going a little after the swap, then stop.
            target[0] = len(acked) + 200
            assert continued.wait(60)
        finally:
            stop.set()
            writer.join(30)
            bench.terminate()
            bench_out = bench.communicate(timeout=30)[0].decode(errors="replace")
        assert not errors, errors
        assert "SET" in bench_out and "error" not in bench_out.lower(), bench_out
        r = server.client()
        pipe = r.pipeline(transaction=False)
        for key in acked:
            pipe.exists(key)
        assert all(pipe.execute()), "a key written before or during the patch is missing"
        assert server.alive()
        history = livepatch_cli("history", "--socket", str(sock))
        assert history.returncode == 0, history.stdout + history.stderr
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_no_livepatch_mode_serves_without_the_runtime(kv_factory):
    server = kv_factory("--no-livepatch")
    r = server.client()
    assert r.set("a", "1") and r.get("a") == b"1"
    assert r.info("server")["livepatch"] == "no"
    with pytest.raises(redis.ResponseError):
        r.execute_command("NOSUCH")


def test_trusted_key_accepts_signed_patches_and_refuses_unsigned(kv_factory):
    work = Path(tempfile.mkdtemp(prefix="lp-kv-"))
    try:
        keys = work / "keys"
        keys.mkdir()
        done = livepatch_cli("keygen", "--out", str(keys))
        assert done.returncode == 0, done.stdout + done.stderr
        sock = work / "agent.sock"
        server = kv_factory(
            "--livepatch-socket", str(sock), "--trusted-key", str(keys / "livepatch.pub")
        )
        unsigned = build_patch(work)
        signed = work / "echo-v2-signed.lpatch"
        done = livepatch_cli(
            "diff", str(work / "old"), str(work / "new"), "--package", "kvserver",
            "-o", str(signed), "--key", str(keys / "livepatch.key"),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        r = server.client()
        refused = livepatch_cli("apply", str(unsigned), "--socket", str(sock))
        assert refused.returncode != 0
        assert r.echo("x") == b"x"  # nothing changed
        applied = livepatch_cli("apply", str(signed), "--socket", str(sock))
        assert applied.returncode == 0, applied.stdout + applied.stderr
        assert r.echo("x") == b"v2:x"
    finally:
        shutil.rmtree(work, ignore_errors=True)
