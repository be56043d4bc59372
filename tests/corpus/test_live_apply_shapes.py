"""scripts/live_apply_history.py's state check (session 11): the attribute names the live instances of a
package's classes carry, in a patched process against a fresh process at the new commit.

The real setup, as small as it goes: a two-commit package in a temp git repository whose only live
instances are made at import and then frozen by `gc.freeze()` (kvserver does that to its EventLoop: the
transformer that skipped frozen instances, found in session 11, left it without `begin_batch`). Its
process runs under `livepatch run` through the harness's own target script, probe only; the patch is the
one `livepatch diff --accept-transformer` makes, applied with `livepatch apply`; the shapes come over the
harness's probe channel. Before the patch the live Loop lacks the attribute the new code reads: the
check must say so (and it can only see that instance through the frozen heap). After it, it must not.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
_spec = importlib.util.spec_from_file_location(
    "live_apply_history", SCRIPTS / "live_apply_history.py"
)
assert _spec is not None and _spec.loader is not None
lah = importlib.util.module_from_spec(_spec)
sys.modules["live_apply_history"] = lah  # its dataclass looks its module up
_spec.loader.exec_module(lah)

sys.path.insert(0, str(SCRIPTS))  # live_apply_history imports patchability from there
import live_apply_target as target  # noqa: E402

LIVEPATCH = str(Path(sys.executable).parent / "livepatch")
_GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
}

V1 = """import gc


class Loop:
    def __init__(self):
        self.ticks = 0

    def tick(self):
        self.ticks += 1
        return self.ticks


class Slotted:
    __slots__ = ("a", "__b")

    def __init__(self):
        self.a = 1


LOOP = Loop()
ITEMS = [Slotted()]
gc.freeze()  # as kvserver does at start-up: these instances leave gc.get_objects()
"""
# the new code reads an attribute its __init__ now sets: a live Loop without it would fail in tick()
V2 = V1.replace(
    "        self.ticks = 0\n", "        self.ticks = 0\n        self.batch = []\n"
).replace("        return self.ticks\n", "        return self.ticks + len(self.batch)\n")


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(repo), *args],
        capture_output=True, text=True, env=_GIT_ENV, check=True, timeout=60,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, str, str]:
    repo = tmp_path / "repo"
    (repo / "lahtiny").mkdir(parents=True)
    _git(repo, "init", "-q")
    shas = []
    for text in (V1, V2):
        (repo / "lahtiny" / "__init__.py").write_text(text)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", "v")
        shas.append(_git(repo, "rev-parse", "HEAD"))
    return repo, shas[0], shas[1]


def _tree(repo: Path, sha: str, work: Path) -> Path:
    tree = lah.materialise(repo, sha, work / f"tree-{sha[:8]}")
    return lah.package_root(tree, "lahtiny", None, work / f"path-{sha[:8]}")


class _Server:
    """The harness's target (probe only) at one commit, under `livepatch run`; always stopped."""

    def __init__(self, root: Path, work: Path) -> None:
        work.mkdir()
        self.probe = lah.free_port()
        self.proc, self.sock = lah.start_target("lahtiny", root, work, lah.free_port(), self.probe)

    def shapes(self) -> dict[str, Any]:
        return dict(lah.ask(self.probe, {"op": "shapes"}, timeout=60))

    def __enter__(self) -> _Server:
        return self

    def __exit__(self, *exc: object) -> None:
        lah.stop(self.proc)


def test_compare_shapes_reports_what_fresh_instances_always_have_and_live_ones_lack() -> None:
    fresh = {
        "classes": {
            # the new class binds `old` (a fresh instance reads the class value); not `gone`
            "p:A": {"n": 2, "attrs": {"x": 2, "y": 2, "z": 1}, "class_values": ["old"]},
            "p:B": {"n": 1, "attrs": {"x": 1}},
            "p:OnlyFresh": {"n": 1, "attrs": {"x": 1}},
        }
    }
    live = {
        "classes": {
            # one lacks y (z is not always there); `old` hides a class value, `older` does not, and
            # `gone` hides the value of a class-level name the new class no longer binds (a leftover)
            "p:A": {
                "n": 3,
                "attrs": {"x": 3, "y": 2, "old": 1, "older": 3, "gone": 3},
                "shadows": {"old": 1, "gone": 3},
            },
            "p:B": {"n": 1, "attrs": {"x": 1}},
            "p:OnlyLive": {"n": 1, "attrs": {}},
        }
    }
    diff = lah.compare_shapes(fresh, live)
    assert diff.missing == ["p:A.y (1 of 3 live lack it)"]
    assert diff.shadowing == ["p:A.old (1 of 3 live hide the class value)"]
    assert diff.stale == ["p:A.gone (3 of 3 live)", "p:A.older (3 of 3 live)"]
    assert diff.compared == 2
    notes: list[str] = []
    assert lah.state_cell(fresh, live, notes) == (
        "1 missing (p:A.y (1 of 3 live lack it)); 1 shadowing (p:A.old (1 of 3 live hide the class value))"
    )
    assert notes == ["stale: p:A.gone (3 of 3 live), p:A.older (3 of 3 live)"]
    assert lah.state_cell(fresh, fresh, []) == "3 classes like fresh"
    incomplete = {**live, "note": "stopped after 5 instances"}
    assert lah.state_cell(fresh, incomplete, []).startswith("not compared: patched: stopped")


def test_shadowing_is_an_instance_value_hiding_a_different_class_value() -> None:
    """waitress ca95fa2108ab: the new class binds `clear_untrusted_proxy_headers = True` and the new
    __init__ no longer stores it; a live instance keeps the False the old __init__ stored, so the new
    code reads False where a fresh instance reads True."""

    class Base:
        clear = True

    class Adjustments(Base):
        port = 0
        label = "x"

        def method(self) -> int:
            return 1

    adj = Adjustments()
    adj.clear = False  # hides True
    adj.port = 0  # the class's value: reading it is the same
    adj.label = "".join(["x"])  # equal, not identical: a simple value compares by ==
    adj.__dict__["method"] = 1  # a function is not a value a fresh instance would read
    adj.other = 2  # no class value
    assert target._shadowing(adj) == ["clear"]
    assert target._class_values(Adjustments) == [
        "clear",
        "label",
        "port",
    ]  # the MRO's, no functions


@pytest.mark.timeout(240)
def test_the_state_check_sees_a_frozen_instance_without_the_new_attribute_and_the_patch_fix_it(
    history: tuple[Path, str, str], tmp_path: Path
) -> None:
    repo, old, new = history
    old_root, new_root = _tree(repo, old, tmp_path), _tree(repo, new, tmp_path)
    patch = tmp_path / "v2.lpatch"
    made = subprocess.run(
        [LIVEPATCH, "diff", "--git", str(repo), old, new, "-p", "lahtiny",
         "--accept-transformer", "-o", str(patch)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert made.returncode == 0 and patch.exists(), made.stdout + made.stderr

    with _Server(new_root, tmp_path / "fresh-new") as fresh_new:
        fresh = fresh_new.shapes()
    with _Server(old_root, tmp_path / "fresh-old") as fresh_old:
        fresh_before = fresh_old.shapes()
    assert fresh["complete"] and fresh["classes"]["lahtiny:Loop"] == {
        "n": 1,
        "attrs": {"ticks": 1, "batch": 1},
        "shadows": {},
        "class_values": [],
    }
    # a filled slot counts (by its mangled name), an empty one does not
    slotted = fresh["classes"]["lahtiny:Slotted"]
    assert (slotted["n"], slotted["attrs"], slotted["shadows"]) == (1, {"a": 1}, {})

    with _Server(old_root, tmp_path / "live") as live:
        before = live.shapes()
        # the only Loop is frozen: found through the frozen heap, or the check would see no Loop at all
        diff = lah.compare_shapes(fresh, before)
        assert diff.missing == ["lahtiny:Loop.batch (1 of 1 live lack it)"]
        assert diff.compared == 2
        assert lah.state_cell(fresh, before, []).startswith("1 missing (lahtiny:Loop.batch")

        applied = subprocess.run(
            [LIVEPATCH, "apply", str(patch), "--socket", str(live.sock), "--json", "--timeout", "10"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert lah._apply_outcome(applied) == "", applied.stdout + applied.stderr
        after = live.shapes()

    assert lah.compare_shapes(fresh, after) == lah.ShapeDiff(compared=2)
    notes: list[str] = []
    assert lah.state_cell(fresh, after, notes) == "2 classes like fresh" and notes == []
    # the reverse direction: state the old code never sets is a note, not a failure
    diff = lah.compare_shapes(fresh_before, after)
    assert diff.missing == diff.shadowing == [] and diff.stale == [
        "lahtiny:Loop.batch (1 of 1 live)"
    ]
