"""Patches #1-#5 of the sqlserver figures: real commits of this repository's sqlserver, chosen by the
project's own pipeline (`livepatch corpus`), built from git at run time.

The rules (survey, trial, choice, building from git) are lpbench.history's, shared with the kvserver
figures (lpbench.kv_history); here: sqlserver's chosen commits and its historic server and client.

Theory of operation
- Choosing (`survey` then `choose`, run by `bench/sql_history_patches.py choose`): lpbench.history's
  survey over every commit of main that changes src/sqlserver. The trial's client asks `SELECT 1` (some
  modules load at the first session) and stays connected: `run_server` (the acceptor's, for the
  server's whole life) and a connection thread's serve loop are refused at apply time, which the static
  differ cannot see. CHOSEN below is the choice; TODAY, SINCE and PREVIOUS_TODAY serve figures 1-4 on
  today's pool.
- Serving the old code (`HistoricSqlServer`): that tree's `sqlserver.cli` (lpbench.history.boot_argv).

Concurrency: none (harness thread).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from lpbench import history as common
from lpbench.history import HistoryCommit, HistoryPatch, choose
from lpbench.keys import harness_key
from lpbench.servers import Server, SqlServer, free_port

PACKAGE = "sqlserver"
PATHS = common.PATHS
# What HistoricSqlServer passes: a parent whose cli lacks one cannot be started by lpbench.
OPTIONS = ("--livepatch-socket", "--trusted-key", "--pool-groups")
__all__ = [
    "CHOSEN",
    "NAMED",
    "PREVIOUS_TODAY",
    "SINCE",
    "TODAY",
    "HistoricSqlServer",
    "HistoryCommit",
    "HistoryPatch",
    "build",
    "build_one",
    "choose",
    "servable",
    "survey",
    "trial",
]  # fmt: skip


# Chosen by `bench/sql_history_patches.py choose` on 2026-12-02 over main at 6f53083 (the rule is in
# lpbench.history's docstring; docs/results-sql.md has the command and the corpus table).
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
# `livepatch bench --server sql --commit NAME` and bench/sql_figures.py --patch NAME (lpbench.commits).
NAMED: dict[str, HistoryCommit | None] = {"today": TODAY, "previous": PREVIOUS_TODAY}


def servable(repo: Path, sha: str) -> bool:
    """Whether the parent of `sha` has a sqlserver that lpbench can start (its cli takes every
    option HistoricSqlServer passes)."""
    return common.servable(repo, sha, PACKAGE, OPTIONS)


def survey(
    repo: Path,
    out: Path,
    revs: str = "main",
    progress: Callable[[dict[str, Any]], None] | None = None,
    jobs: int = 1,
) -> tuple[list[dict[str, Any]], list[HistoryCommit]]:
    """lpbench.history.survey over the sqlserver commits of `revs`, tried on sqlserver."""
    return common.survey(repo, out, PACKAGE, OPTIONS, trial, revs, progress, jobs)


def build_one(repo: Path, number: int, c: HistoryCommit, workdir: Path) -> HistoryPatch:
    return common.build_one(repo, number, c, workdir, PACKAGE)


def build(
    repo: Path, workdir: Path, commits: tuple[HistoryCommit, ...] = CHOSEN
) -> list[HistoryPatch]:
    """The parent trees and patches of `commits` under workdir (lpbench.history.build)."""
    return common.build(repo, workdir, commits, PACKAGE)


@contextmanager
def _session(server: Server) -> Iterator[Callable[[], None]]:
    """A PostgreSQL client asking `SELECT 1`, connected throughout the trial."""
    from lpbench.sql.pg import BlockingClient

    with BlockingClient(server.host, server.port) as client:

        def probe() -> None:
            client.execute("SELECT 1")

        probe()
        yield probe


def trial(p: HistoryPatch, workdir: Path) -> str | None:
    """Start the parent's server, apply and revert the patch with each method, a client connected: None when
    every step succeeded, else what went wrong (lpbench.history.apply_and_revert)."""
    server = HistoricSqlServer(free_port(), workdir / f"trial-{p.commit.sha[:10]}", p.code)
    problem = common.start_or_reason(server)
    if problem is not None:
        return problem
    try:
        return common.apply_and_revert(server, p, _session)
    finally:
        server.stop()


class HistoricSqlServer(SqlServer):
    """sqlserver as of an older commit: that tree's package first on sys.path, the installed livepatch."""

    def __init__(self, port: int, data_dir: Path, code: Path, host: str = "127.0.0.1") -> None:
        super().__init__(port, data_dir, host)
        self.code = code

    def command_line(self) -> list[str]:
        return [
            *common.boot_argv(self.code, PACKAGE, "sqlserver"),
            "--host", self.host, "--port", str(self.port), "--dir", str(self.data_dir / "db"),
            "--policy", self.policy, "--pool-groups", str(self.pool_groups),
            "--livepatch-socket", str(self.control_socket), "--allow-unsigned",
            "--trusted-key", str(harness_key()[1]),
        ]  # fmt: skip


historic_server = HistoricSqlServer  # lpbench.commits: the server of a commit's parent
