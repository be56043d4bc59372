"""Patches from this repository's own history, chosen by the project's pipeline (`livepatch corpus`),
built from git at run time: what the kvserver and sqlserver figures share (lpbench.kv_history and
lpbench.sql.history hold each server's part: its chosen commits, its historic server, its client).

Theory of operation
- Surveying (`survey`): `livepatch corpus` is run on every commit of a revision list that changes the
  package (each diffed against its first parent, merges included). Each *accepted* commit whose parent
  has a server lpbench can start (its `cli.py` takes every option the historic server passes:
  `servable`) is tried (`trial`): its parent's server is started from the archived tree, a client of
  the server's own protocol connects, is served and stays connected, and the commit's patch is applied
  and reverted with global and with local quiescence, the client served after each. The static differ
  cannot see everything the runtime checks: a commit that changes a function running on some thread's
  stack (the acceptor's, a connection's serve loop, an event loop's run) is refused at apply time, and a
  parent tree from the middle of a branch may not even start.
- Choosing (`choose`): of the commits that applied, grouped by the number of functions the patch
  changes, each group's smallest patch (bytes) represents it, and `n` groups at evenly spaced ranks from
  the smallest to the largest are patches #1..#n. With fewer than n groups, all groups, filled up with
  the remaining commits of the largest patch files; numbered by (functions, bytes).
- Building (`build`): a live patch applies only to the exact code it was made from (the agent checks
  every fingerprint), so patch k needs a server running the *parent* of commit k. Both trees come from
  git (`git archive`), and the patch is the project's differ on them, `livepatch diff PARENT COMMIT
  --category thread-local` (what lpbench's built-in patches use): the corpus's own patches are category
  `process`, which the runtime allows only with global quiescence, and the figures compare global and
  local. Declaring a real commit thread-local is the benchmark's assumption (each thread may switch on
  its own), not the commit author's; the code changed is exactly the commit's. Why from git and not
  stored: each patch needs its whole parent package, which git already holds exactly, and a stored
  .lpatch would silently stop matching if the format moved on. The cost: the figures need a git clone
  of this repository (not an installed wheel); `git` says so when it fails.
- Serving the old code (`boot_argv`): `python -c` puts the archived tree first on sys.path and runs
  that tree's `<package>.cli:serve_command`; livepatch itself (runtime, agent) is the installed one.

Concurrency: none (harness thread).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpbench.patches import BuiltPatch, diff
from lpbench.servers import Server, livepatch_executable

PATHS = "src"  # the directory of the repository that holds the packages


@dataclass(frozen=True)
class HistoryCommit:
    sha: str
    functions: int  # changed definitions, as `livepatch corpus` counted them
    bytes: int  # the .lpatch the corpus wrote
    subject: str


@dataclass(frozen=True)
class HistoryPatch:
    number: int  # 1..5 (0: a single commit outside #1-#5)
    commit: HistoryCommit
    code: Path  # the parent's tree (holds src/<package>)
    patch: BuiltPatch

    @property
    def label(self) -> str:
        return f"#{self.number} {self.commit.sha[:7]} ({self.patch.n_functions} fn)"


# A trial: the built patch and a work directory -> None when it applied and reverted, else why not.
Trial = Callable[[HistoryPatch, Path], str | None]


def git(repo: Path, *args: str) -> bytes:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(
            f"git {' '.join(args)} failed in {repo}: {done.stderr.decode(errors='replace').strip()} "
            "(the history figures need a git clone of the livepatch repository: --repo)"
        )
    return done.stdout


def corpus(repo: Path, rng: str, out: Path, package: str) -> dict[str, Any]:
    """`livepatch corpus` over RANGE of REPO for `package`; its JSON result."""
    done = subprocess.run(
        [livepatch_executable(), "corpus", "--git", str(repo), rng, "--package", package,
         "--paths", PATHS, "--json", "--out", str(out)],
        capture_output=True, timeout=900,
    )  # fmt: skip
    try:
        result: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError:
        raise RuntimeError(
            f"livepatch corpus {rng} printed no JSON: {done.stderr.decode(errors='replace')[-500:]}"
        ) from None
    if not result.get("ok", True) and "commits" not in result:
        raise RuntimeError(f"livepatch corpus {rng}: {result.get('error')}")
    return result


def servable(repo: Path, sha: str, package: str, options: tuple[str, ...]) -> bool:
    """Whether the parent of `sha` has a `package` server lpbench can start: a cli.py with
    `serve_command` that takes every one of `options` (e.g. "--trusted-key")."""
    try:
        cli = git(repo, "show", f"{sha}^:{PATHS}/{package}/cli.py").decode()
    except RuntimeError:
        return False
    return "def serve_command" in cli and all(f'"{opt}"' in cli for opt in options)


def choose(applied: list[HistoryCommit], n: int = 5) -> list[HistoryCommit]:
    """Patches #1..#n of growing size from the commits that applied (the rule in the module
    docstring), numbered by (functions, bytes)."""
    by_size: dict[int, HistoryCommit] = {}
    for c in applied:
        best = by_size.get(c.functions)
        if best is None or (c.bytes, c.sha) < (best.bytes, best.sha):
            by_size[c.functions] = c
    groups = [by_size[k] for k in sorted(by_size)]
    if len(groups) >= n:
        picks = sorted({round(i * (len(groups) - 1) / (n - 1)) for i in range(n)})
        chosen = [groups[i] for i in picks]
    else:
        rest = sorted((c for c in applied if c not in groups), key=lambda c: (-c.bytes, c.sha))
        chosen = groups + rest[: n - len(groups)]
    return sorted(chosen, key=lambda c: (c.functions, c.bytes, c.sha))


def survey(
    repo: Path,
    out: Path,
    package: str,
    options: tuple[str, ...],
    trial: Trial,
    revs: str = "main",
    progress: Callable[[dict[str, Any]], None] | None = None,
    jobs: int = 1,
) -> tuple[list[dict[str, Any]], list[HistoryCommit]]:
    """Run the corpus on every commit of `revs` (git rev-list: main's whole history, or a range
    such as SINCE..HEAD) that changes the package (each against its first parent) and try the
    accepted ones: every commit's record, and those that applied (oldest first). `progress` sees
    each record as it is done (a long survey shows where it is). `jobs` commits at a time: each
    is a corpus process and a server of its own, so they do not share anything but the CPUs (on a
    busy machine the corpus mostly waits for one)."""
    shas = git(repo, "rev-list", revs, "--", f"{PATHS}/{package}").decode().split()

    def one(sha: str) -> list[tuple[dict[str, Any], HistoryCommit | None]]:
        result = corpus(repo, f"{sha}^..{sha}", out / sha[:10], package)
        done: list[tuple[dict[str, Any], HistoryCommit | None]] = []
        for c in result.get("commits", []):
            if c["outcome"] == "skipped":
                continue
            c["servable"] = servable(repo, c["sha"], package, options)
            c["trial"] = None
            commit = None
            if c["outcome"] == "accepted" and c["servable"]:
                commit = HistoryCommit(c["sha"], len(c["functions"]), c["bytes"], c["subject"])
                try:
                    built = build_one(repo, 0, commit, out / "trials", package)
                except RuntimeError as exc:  # the differ refused what the corpus accepted
                    c["trial"] = f"not built: {str(exc).strip().splitlines()[-1][-200:]}"
                else:
                    c["trial"] = trial(built, out / "trials") or "ok"
            if progress is not None:
                progress(c)
            done.append((c, commit if c["trial"] == "ok" else None))
        return done

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        per_commit = list(pool.map(one, reversed(shas)))  # oldest first, whatever finished first
    records = [c for done in per_commit for c, _ in done]
    accepted = [commit for done in per_commit for _, commit in done if commit is not None]
    return records, accepted


def archive(repo: Path, rev: str, into: Path, package: str) -> Path:
    """The package's tree at `rev` under into/src (kept if already there); returns into/src."""
    if not (into / PATHS / package).is_dir():
        data = git(repo, "archive", "--format=tar", rev, f"{PATHS}/{package}")
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(into, filter="data")
    return into / PATHS


def build_one(
    repo: Path, number: int, c: HistoryCommit, workdir: Path, package: str
) -> HistoryPatch:
    """Commit `c`'s parent tree and its patch (parent -> commit) under workdir."""
    base = workdir / f"p{number}-{c.sha[:10]}"
    old = archive(repo, f"{c.sha}^", base / "old", package)
    new = archive(repo, c.sha, base / "new", package)
    out = base / f"{c.sha[:10]}.lpatch"
    if not out.exists():
        diff(old, new, package, out)
    return HistoryPatch(number, c, base / "old", BuiltPatch.from_file(out, (c.sha,)))


def build(
    repo: Path, workdir: Path, commits: tuple[HistoryCommit, ...], package: str
) -> list[HistoryPatch]:
    """The parent trees and patches of `commits` under workdir (see the module docstring)."""
    if not commits:
        raise RuntimeError("no history patches chosen yet: run the history script's `choose`")
    return [build_one(repo, k, c, workdir, package) for k, c in enumerate(commits, start=1)]


def resolve(repo: Path, rev: str, package: str) -> HistoryCommit:
    """A commit named by the user (hash, tag, HEAD~3 ...) as a HistoryCommit; its size fields are the
    patch's once built (0 until then)."""
    sha = git(repo, "rev-parse", "--verify", f"{rev}^{{commit}}").decode().strip()
    subject = git(repo, "log", "-1", "--format=%s", sha).decode().strip()
    return HistoryCommit(sha, 0, 0, subject)


# A client session for a trial: entered once the server is up (raises OSError or the client's error if
# it is not served); yields a probe that asks the server something and raises if it is not answered.
Session = Callable[[Server], AbstractContextManager[Callable[[], None]]]


def apply_and_revert(server: Server, p: HistoryPatch, session: Session) -> str | None:
    """The trial proper on a started server: a client connected and served throughout, the patch
    applied and reverted with global then local quiescence, the client served after each step. None
    when every step succeeded, else what went wrong. The server is the caller's to stop."""
    from livepatch.runtime.lifecycle import Outcome
    from lpbench import agent

    assert server.control_socket is not None
    try:
        connected = session(server)
        probe = connected.__enter__()
    except Exception as exc:
        return f"the parent's server does not answer a client: {type(exc).__name__}: {exc}"
    try:
        for method in ("global", "local"):
            a = agent.apply(server.control_socket, p.patch.path, method)
            if a.outcome is not Outcome.APPLIED:
                return f"{method} apply {a.outcome.value}: {a.reason}"
            r = agent.revert(server.control_socket, method)
            if r.outcome is not Outcome.REVERTED:
                return f"{method} revert {r.outcome.value}: {r.reason}"
            try:
                probe()  # still served
            except Exception as exc:
                return f"not served after the {method} patch: {type(exc).__name__}: {exc}"
        return None
    finally:
        connected.__exit__(None, None, None)


def start_or_reason(server: Server) -> str | None:
    """Start the server: None, or why it did not start (the exception's last line)."""
    try:
        server.start()
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1]  # the exception that stopped it
        return f"the parent's server does not start: {last[-200:]}"
    return None


def boot_argv(code: Path, package: str, prog: str) -> list[str]:
    """The start of a command line running `package`'s CLI from an archived tree (`code`, which holds
    src/<package>), with the installed livepatch."""
    boot = (
        f"import sys; sys.path.insert(0, {str(code / PATHS)!r}); "
        f"from {package}.cli import serve_command; serve_command(prog_name={prog!r})"
    )
    return [sys.executable, "-c", boot]


def lines(records: list[dict[str, Any]]) -> Iterator[str]:
    """The Markdown table of a survey's records (every commit's outcome, its trial)."""
    yield "| commit | corpus | functions | bytes | on its parent's server | subject / refusal kinds |"
    yield "|---|---|---|---|---|---|"
    for c in records:
        what = (
            c["subject"][:70]
            if c["outcome"] == "accepted"
            else ", ".join(c["refusal_kinds"] or [c.get("error_kind") or ""])
        )
        tried = c["trial"] or ("-" if c["servable"] else "no server at the parent")
        tried = " ".join(tried.split()).replace("|", "/")  # one Markdown cell
        yield (f"| {c['sha'][:7]} | {c['outcome']} | {len(c['functions'])} | {c['bytes']:,} | "
               f"{tried[:160]} | {what} |")  # fmt: skip
