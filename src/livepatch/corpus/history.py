"""Reading a git history for the corpus: the commits of a range, what each one changes, and the package
materialised at a revision. Read-only: `git log`, `git diff-tree`, `git cat-file` and `git archive`, so a
bare repository works and a work tree is never touched. Every git call has a timeout.
"""

from __future__ import annotations

import io
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from livepatch.errors import LivepatchError
from livepatch.patch.package import PackageVersion, read_directory

GIT_TIMEOUT_S = 120.0
# Where a package may live when --paths is not given: flat (PKG/) or src layout (src/PKG/), tried in
# this order at every revision (a project may move from one to the other during its history).
DEFAULT_ROOTS = ("", "src")
# Directory and file names that make a module a test module: never part of a live patch (a server does
# not import its tests), so commits that change only these are skipped and they are left out of the diff.
_TEST_DIRS = frozenset({"test", "tests", "testing"})


class CorpusError(LivepatchError):
    """Bad input for the corpus: not a repository, a bad range, no package."""


@dataclass(frozen=True)
class Commit:
    sha: str
    parent: str | None  # first parent; None for a root commit
    subject: str


@dataclass(frozen=True)
class FileChange:
    path: str  # repository-relative, POSIX
    lines: int  # added + deleted lines (0 for a binary file or a pure rename)
    old_path: str | None = None  # where a renamed file came from


def _run(repo: Path, args: tuple[str, ...], timeout: float) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError as exc:
        raise CorpusError("git is not installed (the corpus reads histories with git)") from exc
    except subprocess.TimeoutExpired as exc:
        raise CorpusError(f"git {args[0]} took longer than {timeout:.0f} s in {repo}") from exc


def git(repo: Path, *args: str, timeout: float = GIT_TIMEOUT_S) -> bytes:
    """stdout of `git -C REPO ARGS`; CorpusError (with git's own message) when it fails."""
    proc = _run(repo, args, timeout)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise CorpusError(f"git {' '.join(args[:2])} failed in {repo}: {err}")
    return proc.stdout


def succeeds(repo: Path, *args: str) -> bool:
    """Whether `git -C REPO ARGS` exits 0 (for questions git answers with its exit status)."""
    return _run(repo, args, GIT_TIMEOUT_S).returncode == 0


def check_repository(repo: Path) -> None:
    if not repo.is_dir():
        raise CorpusError(
            f"{repo} is not a directory (give the path of a git clone or bare repository)"
        )
    try:
        git(repo, "rev-parse", "--git-dir")
    except CorpusError as exc:
        raise CorpusError(
            f"{repo} is not a git repository (give the path of a git clone or bare repository)"
        ) from exc


def resolve(repo: Path, rev: str) -> str:
    """The commit sha REV names; CorpusError when it names none."""
    if not rev or rev.startswith("-"):
        raise CorpusError(f"{rev!r} is not a revision")  # never let a revision become a git option
    proc = _run(repo, ("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"), GIT_TIMEOUT_S)
    if proc.returncode != 0:
        raise CorpusError(f"{rev!r} is not a commit in {repo} (try `git -C {repo} log --oneline`)")
    return proc.stdout.decode().strip()


def parse_range(repo: Path, spec: str) -> tuple[str | None, str]:
    """`OLD..NEW` -> (sha of OLD, sha of NEW); `..NEW` means from the root commit (all of NEW's history)."""
    if "..." in spec or spec.count("..") != 1:
        raise CorpusError(
            f"{spec!r} is not a range: give OLD..NEW (e.g. v1.0..main), or ..NEW for all of NEW's history"
        )
    old, new = spec.split("..")
    return (resolve(repo, old) if old else None), resolve(repo, new)


def first_parent_commits(repo: Path, old: str | None, new: str) -> list[Commit]:
    """The first-parent chain from NEW back to (not including) OLD, newest first."""
    rng = f"{old}..{new}" if old else new
    out = git(repo, "log", "--first-parent", "--format=%H%x1f%P%x1f%s%x1e", rng)
    commits = []
    for record in out.decode("utf-8", "replace").split("\x1e"):
        record = record.strip("\n")
        if not record:
            continue
        sha, parents, subject = record.split("\x1f", 2)
        commits.append(Commit(sha, parents.split()[0] if parents else None, subject))
    return commits


def changed_files(repo: Path, parent: str, sha: str) -> list[FileChange]:
    """What SHA changes against PARENT. Renames are detected (-M) so that moving a package (to src/,
    say) counts the lines that changed, not every line of every file moved."""
    out = git(repo, "diff-tree", "-r", "-M", "--numstat", "-z", parent, sha)
    # -z numstat: "ADDED\tDELETED\tPATH\0", or for a rename "ADDED\tDELETED\t\0OLD\0NEW\0"
    tokens = iter(out.decode("utf-8", "replace").split("\0"))
    changes = []
    for entry in tokens:
        if not entry:
            continue
        added, deleted, path = entry.split("\t", 2)
        lines = (int(added) if added.isdigit() else 0) + (int(deleted) if deleted.isdigit() else 0)
        if path:
            changes.append(FileChange(path, lines))
        else:
            old_path, new_path = next(tokens, ""), next(tokens, "")
            changes.append(FileChange(new_path, lines, old_path))
    return changes


def is_test_module(relative: PurePosixPath) -> bool:
    """RELATIVE is a path below the package directory (with or without `.py`)."""
    stem = relative.name.removesuffix(".py")
    return (
        any(part in _TEST_DIRS for part in relative.parts[:-1])
        or stem.startswith("test_")
        or stem.endswith("_test")
        or stem in ("conftest", "tests", "test")
    )


def package_dir(root: str, package: str) -> PurePosixPath:
    return PurePosixPath(root, *package.split("."))


def code_changes(
    changes: list[FileChange], package: str, roots: tuple[str, ...]
) -> list[FileChange]:
    """The changes to the package's code: `.py` files below PKG under one of ROOTS, tests excluded."""
    dirs = [package_dir(r, package) for r in roots]

    def is_code(name: str | None) -> bool:
        path = PurePosixPath(name or "")
        return path.suffix == ".py" and any(
            path.is_relative_to(d) and not is_test_module(path.relative_to(d)) for d in dirs
        )

    return [c for c in changes if is_code(c.path) or is_code(c.old_path)]


def package_root(repo: Path, rev: str, package: str, roots: tuple[str, ...]) -> str | None:
    """The first of ROOTS under which PKG/__init__.py exists at REV, or None."""
    for root in roots:
        init = package_dir(root, package) / "__init__.py"
        if succeeds(repo, "cat-file", "-e", f"{rev}:{init}"):
            return root
    return None


def materialise(repo: Path, rev: str, root: str, package: str, dest: Path) -> PackageVersion:
    """The package at REV (found under ROOT), extracted into DEST with `git archive` and read with the
    differ's package reader, test modules left out. Raises PackageError (livepatch.patch.package) when
    a module is over the differ's limits or not UTF-8."""
    where = package_dir(root, package)
    data = git(repo, "archive", "--format=tar", rev, "--", str(where))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    version = read_directory(dest / root if root else dest, package)
    prefix = package.split(".")
    kept = {
        name: source
        for name, source in version.modules.items()
        if not is_test_module(PurePosixPath(*name.split(".")[len(prefix) :] or ["__init__"]))
    }
    return PackageVersion(version.package, f"{repo}@{rev[:12]}", kept)
