"""Walking a history: which commits are examined, and the package materialised on each side of each.

Rules, in order, for each commit of the first-parent chain (oldest first):
1. a root commit is skipped (nothing to patch from);
2. a commit that changes no code of the package (`history.code_changes`) is skipped;
3. a commit that creates the package (absent at the parent) or removes it is skipped;
4. a commit changing more than `max_lines` lines of package code is an error of kind too-large;
5. otherwise both versions are materialised and `classify` decides.
`limit` keeps the N most recent commits that change the package's code. A version materialised for a
commit is reused as the next commit's parent (first-parent chains make that the common case), also
across skipped commits, which by rule 2 leave the package's code as it was.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from livepatch.corpus import history
from livepatch.corpus.classify import (
    DEFAULT_MEMORY_BYTES,
    DEFAULT_TIMEOUT_S,
    CommitResult,
    ErrorKind,
    Outcome,
    classify,
)
from livepatch.corpus.history import CorpusError
from livepatch.patch.package import PackageError, PackageVersion

DEFAULT_MAX_LINES = (
    5000  # lines of package code changed by one commit; more is a rewrite, not a fix
)


@dataclass(frozen=True)
class CorpusOptions:
    repo: Path
    range: str
    package: str
    paths: str | None = None  # the directory holding PKG/ (default: the root, then src/)
    limit: int | None = None
    timeout: float = DEFAULT_TIMEOUT_S
    memory: int = DEFAULT_MEMORY_BYTES
    max_lines: int = DEFAULT_MAX_LINES
    out: Path | None = None  # accepted patches are written here as SHA12.lpatch


def _roots(paths: str | None) -> tuple[str, ...]:
    if paths is None:
        return history.DEFAULT_ROOTS
    clean = paths.strip("/")
    if clean.startswith("-") or ".." in clean.split("/"):
        raise CorpusError(f"--paths {paths!r}: give a directory inside the repository, e.g. src")
    return (clean,)


def check(opts: CorpusOptions) -> tuple[str | None, str, tuple[str, ...]]:
    """Validate the input before walking: (old sha, new sha, roots); CorpusError saying what to fix."""
    history.check_repository(opts.repo)
    if not opts.package or not all(p.isidentifier() for p in opts.package.split(".")):
        raise CorpusError(f"--package {opts.package!r} is not a package name (e.g. waitress)")
    old, new = history.parse_range(opts.repo, opts.range)
    roots = _roots(opts.paths)
    if history.package_root(opts.repo, new, opts.package, roots) is None:
        where = " or ".join(
            str(history.package_dir(r, opts.package) / "__init__.py") for r in roots
        )
        raise CorpusError(
            f"no package {opts.package} at {opts.range.split('..')[1]} in {opts.repo} (no {where}); "
            "check --package, or give --paths DIR when it lives elsewhere"
        )
    return old, new, roots


@dataclass(frozen=True)
class CorpusRun:
    old: str | None  # the range, resolved to commits (None: from the root)
    new: str
    results: list[CommitResult]  # one per commit seen, oldest first


def run(opts: CorpusOptions, progress: Callable[[int, int], None] | None = None) -> CorpusRun:
    """Walk the range; PROGRESS(done, total) after each commit. Call from one thread."""
    old, new, roots = check(opts)
    seen: list[tuple[history.Commit, list[history.FileChange] | None]] = []
    changing = 0
    for commit in history.first_parent_commits(opts.repo, old, new):  # newest first
        if opts.limit is not None and changing >= opts.limit:
            break
        if commit.parent is None:
            seen.append((commit, None))
            continue
        changes = history.changed_files(opts.repo, commit.parent, commit.sha)
        code = history.code_changes(changes, opts.package, roots)
        seen.append((commit, code))
        changing += bool(code)
    seen.reverse()
    results: list[CommitResult] = []
    cache: tuple[str, PackageVersion | None] | None = None
    with tempfile.TemporaryDirectory(prefix="livepatch-corpus-") as tmp:
        for i, (commit, changed) in enumerate(seen):
            result, cache = _one(opts, roots, commit, changed, cache, Path(tmp) / str(i))
            results.append(result)
            if progress is not None:
                progress(i + 1, len(seen))
    return CorpusRun(old, new, results)


def _version(
    opts: CorpusOptions, roots: tuple[str, ...], rev: str, dest: Path
) -> PackageVersion | None:
    root = history.package_root(opts.repo, rev, opts.package, roots)
    if root is None:
        return None
    dest.mkdir(parents=True)
    return history.materialise(opts.repo, rev, root, opts.package, dest)


def _one(
    opts: CorpusOptions,
    roots: tuple[str, ...],
    commit: history.Commit,
    code: list[history.FileChange] | None,
    cache: tuple[str, PackageVersion | None] | None,
    tmp: Path,
) -> tuple[CommitResult, tuple[str, PackageVersion | None] | None]:
    def skipped(reason: str) -> CommitResult:
        return CommitResult(commit.sha, commit.subject, Outcome.SKIPPED, reason)

    def error(kind: ErrorKind, reason: str) -> CommitResult:
        return CommitResult(commit.sha, commit.subject, Outcome.ERROR, reason, kind)

    if commit.parent is None or code is None:
        return skipped("root commit: nothing to patch from"), None
    if not code:
        # the package as the differ reads it (no tests) is the parent's: keep it for the next commit
        same = (commit.sha, cache[1]) if cache is not None and cache[0] == commit.parent else None
        return skipped("changes no code of the package (tests, docs or other files only)"), same
    lines = sum(c.lines for c in code)
    if lines > opts.max_lines:
        return error(
            ErrorKind.TOO_LARGE,
            f"changes {lines} lines in {len(code)} modules (over --max-lines {opts.max_lines})",
        ), None
    try:
        if cache is not None and cache[0] == commit.parent:
            old = cache[1]
        else:
            old = _version(opts, roots, commit.parent, tmp / "old")
        new = _version(opts, roots, commit.sha, tmp / "new")
    except (PackageError, CorpusError) as exc:  # over the reader's limits, not UTF-8, git failed
        return error(ErrorKind.UNREADABLE, str(exc)), None
    finally:
        _remove(tmp)
    cache = (commit.sha, new)
    if old is None:
        return skipped("creates the package (absent at the parent)"), cache
    if new is None:
        return skipped("removes the package"), cache
    result = classify(
        commit.sha,
        commit.subject,
        old,
        new,
        timeout=opts.timeout,
        memory=opts.memory,
        out=opts.out,
    )
    return result, cache


def _remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)  # the sources are in memory now; keep the disk bounded
