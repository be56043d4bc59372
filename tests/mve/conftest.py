"""Fixtures for validated-update tests: kvserver processes (tests/kvserver's fixture) and patches."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import kvserver
from tests.kvserver.conftest import kv_factory  # noqa: F401 - the fixture, reused
from tests.support import livepatch_cli

SRC = Path(kvserver.__file__).resolve().parent
PING = "return argv[1] if len(argv) == 2 else PONG"
PANG = 'return argv[1] if len(argv) == 2 else SimpleString("PANG")'
GET_RETURN = "    return value\n"
GETRANGE_ARGS = "    start = parse_int(argv[2])\n    end = parse_int(argv[3])\n"
GETRANGE_SWAPPED = "    start = parse_int(argv[3])\n    end = parse_int(argv[2])\n"


def _variant(work: Path, name: str, edit: tuple[str, str, str] | None) -> Path:
    root = work / name
    shutil.copytree(SRC, root / "kvserver", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    if edit is not None:
        rel, old, new = edit
        f = root / "kvserver" / rel
        text = f.read_text()
        assert text.count(old) == 1, f"{rel}: {old!r} not found once (kvserver changed?)"
        f.write_text(text.replace(old, new))
    return root


@contextmanager
def built_patches(prefix: str, edits: dict[str, tuple[str, str, str]]) -> Iterator[dict[str, Path]]:
    """One .lpatch per edit (name -> (file, old, new) in kvserver), each diffed against unchanged
    kvserver with `livepatch diff`, as an operator does; the work directory is removed afterwards."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        v1 = _variant(work, "v1", None)
        out: dict[str, Path] = {}
        for name, edit in edits.items():
            root = _variant(work, name, edit)
            target = work / f"{name}.lpatch"
            done = livepatch_cli(
                "diff", str(v1), str(root), "--package", "kvserver", "-o", str(target)
            )
            assert done.returncode == 0, done.stdout + done.stderr
            out[name] = target
        yield out
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="session")
def patches() -> Iterator[dict[str, Path]]:
    """good: PING answers PANG; bad: GET appends '!' to every value; slow: GET takes 5 ms more;
    hang: GET never returns; getrange: GETRANGE key end start. Built with `livepatch diff`, as an operator does."""
    edits = {
        "good": ("commands/connection.py", PING, PANG),
        "bad": (
            "commands/strings.py",
            *_get_edit('({v} + b"!") if isinstance({v}, bytes) else {v}'),
        ),
        # Right answers, but slow (the follower falls behind) or never (it hangs).
        "slow": ("commands/strings.py", *_get_edit('__import__("time").sleep(0.005) or {v}')),
        "hang": ("commands/strings.py", *_get_edit("[0 for _ in iter(int, 1)] and {v}")),
        # v2's GETRANGE takes the end first (a request rewrite maps the old form to it).
        "getrange": ("commands/strings.py", GETRANGE_ARGS, GETRANGE_SWAPPED),
    }
    with built_patches("lp-mve-p-", edits) as out:
        yield out


def _get_edit(expression: str) -> tuple[str, str]:
    """get_command with its last `return X` made `return <expression with {v} = X>`."""
    text = (SRC / "commands" / "strings.py").read_text()
    start = text.index("def get_command(")
    end = text.index("\ndef ", start + 1)
    body = text[start:end]
    line = [ln for ln in body.splitlines() if ln.strip().startswith("return ")][-1]
    var = line.strip()[len("return ") :]
    return body, body.replace(
        line, line.replace(f"return {var}", "return " + expression.format(v=var))
    )


@pytest.fixture
def work_dir() -> Iterator[Path]:
    """A short directory (a Unix socket path has ~100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="lp-mve-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
