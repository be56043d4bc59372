"""`livepatch update --validate --transform MODULE:FUNC`: the data transformer comes from a module the
server imports (not from the patch's hooks), runs in the follower on its copy of the data, and is
validated like a hook's: a right one is promoted, a wrong one discarded at the first read it broke."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.mve.intenc import BUGGY_CHECK, EDITS, GOOD_CHECK, HOOKS, _tree
from tests.mve.mve_helpers import Traffic, held, update
from tests.support import livepatch_cli, source_env, wait_for

COUNTERS = 5_000


@pytest.fixture(scope="module")
def no_hooks_patch() -> Iterator[tuple[Path, Path]]:
    """(the int-encoding patch WITHOUT a transform hook, a directory with the transformer module)."""
    work = Path(tempfile.mkdtemp(prefix="lp-mve-t-"))
    try:
        v1, v2 = _tree(work, "v1", ()), _tree(work, "v2", EDITS)
        target = work / "intenc-nohooks.lpatch"
        done = subprocess.run(
            [sys.executable, "-m", "livepatch.cli", "diff", str(v1), str(v2), "--package",
             "kvserver", "--category", "data", "-o", str(target)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        lib = work / "lib"
        lib.mkdir()
        good = HOOKS.replace("{CHECK}", GOOD_CHECK).replace("def transform(", "def pack_ints(")
        buggy = HOOKS.replace("{CHECK}", BUGGY_CHECK).replace("def transform(", "def pack_digits(")
        (lib / "lp_intenc_migration.py").write_text(good + buggy)
        yield target, lib
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _server(kv_factory: Any, work_dir: Path, lib: Path) -> Any:
    env = source_env()
    env["PYTHONPATH"] = f"{lib}:{env['PYTHONPATH']}"
    return kv_factory("--livepatch-socket", str(work_dir / "lp.sock"), "--allow-unsigned", env=env)


def _fill(r: Any) -> None:
    r.mset({f"c:{i}": str(i) for i in range(COUNTERS)})
    r.mset({"padded": "007", "word": "hello"})


@pytest.mark.timeout(240)
def test_transform_option_runs_in_the_follower_and_is_promoted(
    kv_factory: Any, no_hooks_patch: tuple[Path, Path], work_dir: Path
) -> None:
    patch, lib = no_hooks_patch
    server = _server(kv_factory, work_dir, lib)
    r = held(server)
    _fill(r)
    with Traffic(server) as traffic:
        done = update(
            work_dir, patch, "--transform", "lp_intenc_migration:pack_ints",
            "--window", "1s", "--exercise-wait", "2",
        )  # fmt: skip
        assert r.get("padded") == b"007" and r.get("c:7") == b"7"
    assert done.returncode == 0, done.stdout + done.stderr
    assert "promoted" in done.stdout, done.stdout
    assert not traffic.errors, traffic.errors[:5]
    # The promoted process's history says what the transformer did (ctx.record): it ran, on every key.
    sock = str(work_dir / "lp.sock")

    seen: list[str] = []

    def history() -> bool:  # the agent restarts in the promoted process once the old one is gone
        out = livepatch_cli("history", "--socket", sock, "--json")
        seen.append(out.stdout)
        return out.returncode == 0 and "packed" in out.stdout

    wait_for(history, timeout=30, what="the promoted server's history")
    text = seen[-1]
    assert f"packed {COUNTERS} integer strings" in text, text
    assert r.get("padded") == b"007" and r.get(f"c:{COUNTERS - 1}") == str(COUNTERS - 1).encode()


@pytest.mark.timeout(240)
def test_a_wrong_transformer_is_discarded_at_the_first_read_it_broke(
    kv_factory: Any, no_hooks_patch: tuple[Path, Path], work_dir: Path
) -> None:
    patch, lib = no_hooks_patch
    server = _server(kv_factory, work_dir, lib)
    r = held(server)
    _fill(r)
    proc = subprocess.Popen(
        [sys.executable, "-m", "livepatch.cli", "update", str(patch), "--socket",
         str(work_dir / "lp.sock"), "--validate", "--transform", "lp_intenc_migration:pack_digits",
         "--window", "60s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        # Read the broken key until the follower has replayed a read of it (it diverges there).
        wait_for(
            lambda: r.get("padded") == b"007" and proc.poll() is not None,
            timeout=120,
            what="the update to end",
        )
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 1, out + err
    assert "discarded" in out and "padded" in out and "007" in out, out
    assert r.get("padded") == b"007"  # the leader's clients only ever saw the old value


def test_a_transform_module_the_server_cannot_import_is_refused_before_forking(
    kv_factory: Any, no_hooks_patch: tuple[Path, Path], work_dir: Path
) -> None:
    patch, lib = no_hooks_patch
    server = _server(kv_factory, work_dir, lib)
    r = held(server)
    done = update(work_dir, patch, "--transform", "lp_no_such_migration:pack")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot import the module 'lp_no_such_migration'" in done.stderr, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    bad = update(work_dir, patch, "--transform", "not a module")
    assert bad.returncode == 2 and "MODULE:FUNC" in bad.stderr, bad.stderr
    missing = update(work_dir, patch, "--transform", "lp_intenc_migration:nope", "--window", "1s")
    assert missing.returncode == 1 and "has no function 'nope'" in missing.stdout, missing.stdout
    assert r.ping() and r.set("after", "1") and r.get("after") == b"1"  # the server serves on
