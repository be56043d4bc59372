"""Patches #1-#5 of the sqlserver figures: real commits of this repository's sqlserver, chosen by the
project's own pipeline (`livepatch corpus`), built from git at run time.

Theory of operation
- Choosing (`survey` then `choose`, run by `bench/sql_history_patches.py choose`): `livepatch corpus`
  is run on every commit of main that changes src/sqlserver (each diffed against its first parent,
  merges included). Each *accepted* commit whose parent has a sqlserver lpbench can start (its `cli.py`
  takes `--trusted-key`) is tried (`trial`): its parent's server is started, a client connects and
  asks `SELECT 1` (some modules load at the first session) and stays connected, and the commit's patch
  is applied and reverted with global and with local quiescence, the client served after each. The static differ cannot
  see everything the runtime checks: a commit that changes a function running on some thread's stack
  (`run_server` for the server's whole life, a connection thread's serve loop while a client is
  connected) is refused at apply time, and a parent tree from the
  middle of a branch may not even start. Of the commits that applied, grouped by the number of
  functions the patch changes, each group's smallest patch (bytes) represents it, and `n` groups at
  evenly spaced ranks from the smallest to the largest are patches #1..#n: CHOSEN below. With fewer
  than n groups, all groups, filled up with the remaining commits of the largest patch files;
  numbered by (functions, bytes).
- Building (`build`): a live patch applies only to the exact code it was made from (the agent checks
  every fingerprint), so patch k needs a server running the *parent* of commit k. Both trees come from
  git (`git archive`), and the patch is the project's differ on them, `livepatch diff PARENT COMMIT
  --category thread-local` (what lpbench's built-in patches use): the corpus's own patches are category
  `process`, which the runtime allows only with global quiescence, and the figures compare global and
  local. Declaring a real commit thread-local is the benchmark's assumption (each thread may switch on
  its own), not the commit author's; the code changed is exactly the commit's. Why from git and not
  stored under src/lpbench/patches/: each patch needs its whole parent package (a copy of sqlserver,
  ~300 KB of sources, per patch), which git already holds exactly, and a stored .lpatch would silently
  stop matching if the format moved on. The cost: the figures need a git clone of this repository
  (not an installed wheel); `build` says so when git fails.
- Serving the old code (`HistoricSqlServer`): `python -c` puts the archived tree first on sys.path and
  runs that tree's `sqlserver.cli`; livepatch itself (runtime, agent) is the installed one.

Concurrency: none (harness thread).
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lpbench.keys import harness_key
from lpbench.patches import BuiltPatch, diff
from lpbench.servers import SqlServer, free_port, livepatch_executable

PACKAGE = "sqlserver"
PATHS = "src"


@dataclass(frozen=True)
class HistoryCommit:
    sha: str
    functions: int  # changed definitions, as `livepatch corpus` counted them
    bytes: int  # the .lpatch the corpus wrote
    subject: str


# Chosen by `bench/sql_history_patches.py choose` on 2026-12-02 over main at 6f53083 (the rule is in
# the module docstring; docs/results-sql.md has the command and the corpus table).
CHOSEN: tuple[HistoryCommit, ...] = (
    HistoryCommit("291d10a43e213e76897d1892de2a45d377508aa6", 1, 26262,
                  "pool: skip the MEDIUM step between tasks unless a patch is pending"),
    HistoryCommit("d79f119c7c73aa773a763e35df5cbe5edfbe33a9", 1, 42346,
                  "sqlserver: catalog tests with psql, asyncpg (all binary types)"),
    HistoryCommit("3711cf5a6093dd121b9a99d8d52e5638791645d3", 2, 26920,
                  "sqlserver session: multi-table DROP, placeholder count"),
    HistoryCommit("4cfdbc6590a40f12bc7e846944cfab2a25c89818", 6, 60028,
                  "sqlserver session: statement length limit (54000)"),
    HistoryCommit("fa4981fcd9c23b8b312e31e6691a1a539dd874f0", 7, 163377,
                  "sqlserver catalog: unnest() in FROM (json_each), pg_get_indexdef"),
)  # fmt: skip


# Figures 1-4 measure the pool, so their patch must apply to today's pool: CHOSEN's commits all predate
# the pool's rewrite (one executing thread per group, efc7d80/7ca2f85), and their parents run the old
# pool. TODAY is the newest commit that `livepatch corpus` accepts and that applies on its parent:
# `bench/sql_history_patches.py today --since 3cfe766` (the same survey and trial as CHOSEN's, run
# 2026-12-02 17:34 UTC on branch sql-figs6 over the 13 sqlserver commits since the previous TODAY,
# 3cfe766: 6 accepted, 4 of them applied on their parent -- 6ecd9e8, 79affa3, a7162b8, af8567b; 229cd49
# and its merge d84cb4c refused at apply time, `serve_command`'s decorators; the rest refused by the
# corpus or empty). af8567b changes five functions of sqlserver.translate (statement splitting and
# parsing: parameters glued to the next token); its new version has a bug, fixed by 64e9d4a ($10 before
# a space became `$1 0`: YCSB's UPDATE would fail if first translated by it), which figures 2 and 3 did
# not reach (translations are cached for all sessions; 0 failed transactions); its parent a7162b8
# is main's sqlserver with ascii() and EXTRACT, so the OLAP workload runs all 22 CH-benCHmark queries.
# (The previous TODAY, 3cfe766, changed `rewrite.rewrite`; its parent lacks them.)
TODAY = HistoryCommit("af8567b436a3714d0e24b4a9af93a7c1fcb0c2d5", 5, 41809,
                      "sqlserver: $1,$2 (psycopg's %s,%s), $1=$2, f($1,$2) parse")  # fmt: skip
# Every commit that the same survey found applying, numbered by (functions, bytes): figure 5 on today's
# runtime and pool (`bench/sql_figures.py fig5 --patch since`), beside CHOSEN's older ones.
SINCE: tuple[HistoryCommit, ...] = (
    HistoryCommit("79affa35279d371473d32783a7ce500608c7c174", 1, 14718,
                  "sqlserver: LIKE is case-sensitive as in PostgreSQL"),
    HistoryCommit("6ecd9e83cb6c1fd49a476012739381bc8a898631", 4, 60282,
                  "sqlserver: the extended protocol's Executes up to Sync are one implicit transaction"),
    TODAY,
    HistoryCommit("a7162b80f243777e8c571eb4a79af5cdb616a0ef", 20, 140236, "sqlserver: ascii() and EXTRACT(field FROM ...)/date_part"),
)  # fmt: skip
PREVIOUS_TODAY = HistoryCommit("3cfe76615c1966befdabdf3ce2566eba2f178d3f", 1, 36442,
                               "sqlserver/rewrite.py: mypy (the SELECT's SQL tuple inline)")  # fmt: skip


def _git(repo: Path, *args: str) -> bytes:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(
            f"git {' '.join(args)} failed in {repo}: {done.stderr.decode(errors='replace').strip()} "
            "(the sqlserver history figures need a git clone of the livepatch repository: --repo)"
        )
    return done.stdout


def corpus(repo: Path, rng: str, out: Path) -> dict[str, Any]:
    """`livepatch corpus` over RANGE of REPO for the sqlserver package; its JSON result."""
    done = subprocess.run(
        [livepatch_executable(), "corpus", "--git", str(repo), rng, "--package", PACKAGE,
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


def servable(repo: Path, sha: str) -> bool:
    """Whether the parent of `sha` has a sqlserver that lpbench can start (its cli takes every
    option HistoricSqlServer passes)."""
    try:
        cli = _git(repo, "show", f"{sha}^:{PATHS}/{PACKAGE}/cli.py").decode()
    except RuntimeError:
        return False
    return all(opt in cli for opt in ('"--livepatch-socket"', '"--trusted-key"', '"--pool-groups"'))


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
    repo: Path, out: Path, revs: str = "main"
) -> tuple[list[dict[str, Any]], list[HistoryCommit]]:
    """Run the corpus on every commit of `revs` (git rev-list: main's whole history, or a range
    such as SINCE..HEAD) that changes the package (each against its first parent) and try the
    accepted ones: every commit's record, and those that applied (oldest first)."""
    shas = _git(repo, "rev-list", revs, "--", f"{PATHS}/{PACKAGE}").decode().split()
    records: list[dict[str, Any]] = []
    accepted: list[HistoryCommit] = []
    for sha in reversed(shas):
        result = corpus(repo, f"{sha}^..{sha}", out / sha[:10])
        for c in result.get("commits", []):
            if c["outcome"] == "skipped":
                continue
            c["servable"] = servable(repo, c["sha"])
            c["trial"] = None
            records.append(c)
            if c["outcome"] == "accepted" and c["servable"]:
                commit = HistoryCommit(c["sha"], len(c["functions"]), c["bytes"], c["subject"])
                c["trial"] = (
                    trial(build_one(repo, 0, commit, out / "trials"), out / "trials") or "ok"
                )
                if c["trial"] == "ok":
                    accepted.append(commit)
    return records, accepted


@dataclass(frozen=True)
class HistoryPatch:
    number: int  # 1..5
    commit: HistoryCommit
    code: Path  # the parent's tree (holds src/sqlserver)
    patch: BuiltPatch

    @property
    def label(self) -> str:
        return f"#{self.number} {self.commit.sha[:7]} ({self.patch.n_functions} fn)"


def _archive(repo: Path, rev: str, into: Path) -> Path:
    """The package's tree at `rev` under into/src (kept if already there); returns into/src."""
    if not (into / PATHS / PACKAGE).is_dir():
        data = _git(repo, "archive", "--format=tar", rev, f"{PATHS}/{PACKAGE}")
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(into, filter="data")
    return into / PATHS


def build_one(repo: Path, number: int, c: HistoryCommit, workdir: Path) -> HistoryPatch:
    base = workdir / f"p{number}-{c.sha[:10]}"
    old = _archive(repo, f"{c.sha}^", base / "old")
    new = _archive(repo, c.sha, base / "new")
    out = base / f"{c.sha[:10]}.lpatch"
    if not out.exists():
        diff(old, new, PACKAGE, out)
    return HistoryPatch(number, c, base / "old", BuiltPatch.from_file(out, (c.sha,)))


def build(
    repo: Path, workdir: Path, commits: tuple[HistoryCommit, ...] = CHOSEN
) -> list[HistoryPatch]:
    """The parent trees and patches of `commits` under workdir (see the module docstring)."""
    if not commits:
        raise RuntimeError("no history patches chosen yet: run bench/sql_history_patches.py choose")
    return [build_one(repo, k, c, workdir) for k, c in enumerate(commits, start=1)]


def trial(p: HistoryPatch, workdir: Path) -> str | None:
    """Start the parent's server, apply and revert the patch with each method, a client connected: None when
    every step succeeded, else what went wrong."""
    from lpbench import agent

    server = HistoricSqlServer(free_port(), workdir / f"trial-{p.commit.sha[:10]}", p.code)
    try:
        server.start()
    except RuntimeError as exc:
        last = str(exc).strip().splitlines()[-1]  # the exception that stopped it
        return f"the parent's server does not start: {last[-200:]}"
    try:
        assert server.control_socket is not None
        # A client connected throughout, as under load: some modules load at the first session
        # (sqlserver.session, .functions ...), and a connection's thread runs its serve loop, which a
        # patch may not replace while it runs (refused as active under global quiescence).
        from lpbench.sql.pg import BlockingClient, SqlError

        try:
            client = BlockingClient(server.host, server.port)
            client.execute("SELECT 1")
        except (OSError, SqlError) as exc:
            return f"the parent's server does not answer SELECT 1: {exc}"
        with client:
            for method in ("global", "local"):
                a = agent.apply(server.control_socket, p.patch.path, method)
                if a.outcome.value != "applied":
                    return f"{method} apply {a.outcome.value}: {a.reason}"
                r = agent.revert(server.control_socket, method)
                if r.outcome.value != "reverted":
                    return f"{method} revert {r.outcome.value}: {r.reason}"
                client.execute("SELECT 1")  # still served
        return None
    finally:
        server.stop()


class HistoricSqlServer(SqlServer):
    """sqlserver as of an older commit: that tree's package first on sys.path, the installed livepatch."""

    def __init__(self, port: int, data_dir: Path, code: Path, host: str = "127.0.0.1") -> None:
        super().__init__(port, data_dir, host)
        self.code = code

    def command_line(self) -> list[str]:
        boot = (
            f"import sys; sys.path.insert(0, {str(self.code / PATHS)!r}); "
            "from sqlserver.cli import serve_command; serve_command(prog_name='sqlserver')"
        )
        return [
            sys.executable, "-c", boot,
            "--host", self.host, "--port", str(self.port), "--dir", str(self.data_dir / "db"),
            "--policy", self.policy, "--pool-groups", str(self.pool_groups),
            "--livepatch-socket", str(self.control_socket), "--allow-unsigned",
            "--trusted-key", str(harness_key()[1]),
        ]  # fmt: skip
