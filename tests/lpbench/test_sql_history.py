"""Patches #1-#5 from the repository's history (lpbench.sql.history): the choosing rule on made-up
commits, and one real chosen commit built from git and applied/reverted on its parent's real server."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lpbench.sql import history
from lpbench.sql.history import HistoryCommit

ROOT = Path(__file__).resolve().parents[2]


def c(sha: str, functions: int, size: int) -> HistoryCommit:
    return HistoryCommit(sha, functions, size, f"commit {sha}")


def test_one_commit_per_size_the_smallest_file_evenly_spaced() -> None:
    applied = [c("a", 1, 500), c("b", 1, 100), c("d", 2, 300), c("e", 3, 50), c("f", 5, 10),
               c("g", 8, 10), c("h", 13, 10), c("i", 21, 10)]  # fmt: skip
    chosen = history.choose(applied, n=5)
    # sizes 1, 2, 3, 5, 8, 13, 21 -> ranks 0, 2 (rounded 1.5), 3, 4 (rounded 4.5), 6
    assert [x.sha for x in chosen] == ["b", "e", "f", "g", "i"]


def test_fewer_sizes_than_patches_fill_up_with_the_largest_files() -> None:
    applied = [c("a", 1, 100), c("b", 1, 900), c("d", 1, 400), c("e", 2, 300), c("f", 6, 50)]
    chosen = history.choose(applied, n=4)
    assert [x.sha for x in chosen] == ["a", "b", "e", "f"]  # groups a, e, f; then b (900 bytes)
    assert [x.functions for x in chosen] == sorted(x.functions for x in chosen)


def test_fewer_commits_than_patches_are_all_chosen() -> None:
    assert [x.sha for x in history.choose([c("a", 2, 1), c("b", 1, 1)], n=5)] == ["b", "a"]


def test_the_chosen_commits_are_five_of_growing_size() -> None:
    assert len(history.CHOSEN) == 5
    sizes = [(x.functions, x.bytes) for x in history.CHOSEN]
    assert sizes == sorted(sizes) and sizes[0][0] < sizes[-1][0]


@pytest.mark.timeout(180)
def test_chosen_patch_applies_and_reverts_on_its_parents_server(tmp_path: Path) -> None:
    """Patch #3 (two functions of the session layer) built from git, applied and reverted with both
    methods on a server running its parent, a client connected throughout (history.trial)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and this repository's history")
    number = 3
    commit = history.CHOSEN[number - 1]
    has = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{commit.sha}^{{commit}}"],
                         capture_output=True)  # fmt: skip
    if has.returncode != 0:
        pytest.skip(f"this clone does not hold commit {commit.sha[:10]} (a shallow clone?)")
    patch = history.build_one(ROOT, number, commit, tmp_path / "build")
    assert patch.patch.n_functions == commit.functions
    assert (patch.code / "src" / "sqlserver" / "cli.py").exists()  # the parent's tree, not ours
    assert history.trial(patch, tmp_path) is None


@pytest.mark.timeout(180)
def test_todays_patch_applies_and_reverts_on_its_parents_server(tmp_path: Path) -> None:
    """history.TODAY (figures 1-4: its parent runs today's pool) passes the same trial as CHOSEN's."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and this repository's history")
    commit = history.TODAY
    has = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{commit.sha}^{{commit}}"],
                         capture_output=True)  # fmt: skip
    if has.returncode != 0:
        pytest.skip(f"this clone does not hold commit {commit.sha[:10]} (a shallow clone?)")
    patch = history.build_one(ROOT, 0, commit, tmp_path / "build")
    assert patch.patch.n_functions == commit.functions
    assert (patch.code / "src" / "sqlserver" / "server" / "pool.py").exists()
    assert history.trial(patch, tmp_path) is None
