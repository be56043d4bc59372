"""Patches #1-#5 of the kvserver figures: real commits of this repository's kvserver, chosen by the
project's own pipeline (`livepatch corpus`), built from git at run time.

The rules (survey, trial, choice, building from git) are lpbench.history's, shared with the sqlserver
figures (lpbench.sql.history); here: kvserver's chosen commits, its historic server and its client.

Theory of operation
- Choosing (`bench/history_patches.py choose --server kv`): lpbench.history's survey over every commit
  of main that changes src/kvserver. The trial's client is redis-py: a SET then a GET of that key,
  connected throughout (one connection), and the GET again after each apply and revert. kvserver runs
  one event loop thread: a commit that changes a function on its stack while it serves (the loop's run,
  the acceptor) is refused at apply time; the client makes sure a connection's handling has run once.
  CHOSEN below is the choice; FIGURES is the commit figures 1-3 apply and revert.
- Serving the old code (`HistoricKvServer`): that tree's `kvserver.cli` (lpbench.history.boot_argv),
  the installed livepatch. kvserver's C accelerators (`_respfast`, `_dirtyfast`, `_mverecord`) are built
  at install time, not kept in git; an archived tree gets the installed build of a module only when its
  C source is byte-identical to the installed one's (`share_native_modules`), so the historic server
  runs exactly its own code: with an older C source it runs that module's pure-Python fallback, which
  every one of them has.

Concurrency: none (harness thread).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from lpbench import history as common
from lpbench.history import HistoryCommit, HistoryPatch
from lpbench.keys import harness_key
from lpbench.patches import installed_package
from lpbench.servers import KvServer, Server, free_port

PACKAGE = "kvserver"
# What HistoricKvServer passes: a parent whose cli lacks one cannot be started by lpbench.
OPTIONS = ("--livepatch-socket", "--trusted-key", "--allow-unsigned", "--dir")
TRIAL_KEY = b"lpbench:history-trial"

# Chosen by `bench/history_patches.py choose --server kv --jobs 3` on 2026-12-03 06:33-07:08 UTC over main
# at a0ae97e (102 commits change src/kvserver; 39 applied on their parent's server; the rule:
# lpbench.history; the table: docs/results.md "Patches #1-#5").
CHOSEN: tuple[HistoryCommit, ...] = (
    HistoryCommit("820855339222b2127fe75b025f13f6cf62017574", 1, 7625,
                  "kvserver: glob checked against a port of Redis's stringmatch"),
    HistoryCommit("87f3e4ac2d4cf25d82e2240b860a4ceadd0f3290", 4, 45997,
                  "kvserver.resp: cheaper exactness check for the hiredis path"),
    HistoryCommit("eb78ab4b40e65d5bea134ac6121ae56e70d342ee", 7, 77018,
                  "kvserver: CLIENT LIST flags P/x/b and sub=/psub= counts, CLIENT KILL TYPE"),
    HistoryCommit("cf13b47f4f3a8a74b5c3436ae80cb67d64685fe1", 10, 74755,
                  "mve: the follower replays without a system call per request"),
    HistoryCommit("df042c96163d2740b5d4edeb66b4291148706929", 17, 128463,
                  "kvserver: the optional COUNT of LPOP/RPOP/SPOP/ZPOP* parsed"),
)  # fmt: skip
# Figures 1-3's patch (`livepatch bench --commit figures`): of the same survey's 39 commits that applied,
# the newest authored one (not a merge) whose patch changes a function every request runs,
# `ServerState.process_commands`, as the built-in patch changed GET's handler: 8ba46d9 (6 functions: the
# AOF's records encoded by `_respfast.encode_request`, process_commands feeding them). The newest that
# applied at all, 400e55e, changes only `KvHost.start_recording`, which runs during validated updates.
FIGURES: HistoryCommit | None = HistoryCommit(
    "8ba46d9c0fb4202766ffc060e13002453b961daf", 6, 122669,
    "kvserver AOF: records encoded in C (_respfast.encode_request)")  # fmt: skip
# `livepatch bench --commit NAME` (lpbench.commits).
NAMED: dict[str, HistoryCommit | None] = {"figures": FIGURES}


def servable(repo: Path, sha: str) -> bool:
    """Whether the parent of `sha` has a kvserver lpbench can start (its cli takes every option
    HistoricKvServer passes)."""
    return common.servable(repo, sha, PACKAGE, OPTIONS)


def survey(
    repo: Path,
    out: Path,
    revs: str = "main",
    progress: Callable[[dict[str, Any]], None] | None = None,
    jobs: int = 1,
) -> tuple[list[dict[str, Any]], list[HistoryCommit]]:
    """lpbench.history.survey over the kvserver commits of `revs`, tried on kvserver."""
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
    """One redis-py connection (no retries: a dropped connection must show), SET then GET."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    with redis.Redis(server.host, server.port, socket_timeout=30, retry=Retry(NoBackoff(), 0)) as c:
        c.set(TRIAL_KEY, b"1")

        def probe() -> None:
            got = c.get(TRIAL_KEY)
            if got != b"1":
                raise RuntimeError(f"GET {TRIAL_KEY!r} answered {got!r}, not b'1'")

        probe()
        yield probe


def trial(p: HistoryPatch, workdir: Path) -> str | None:
    """Start the parent's kvserver, apply and revert the patch with each method, a redis-py client
    connected: None when every step succeeded, else what went wrong."""
    server = HistoricKvServer(free_port(), workdir / f"trial-{p.commit.sha[:10]}", p.code)
    problem = common.start_or_reason(server)
    if problem is not None:
        return problem
    try:
        return common.apply_and_revert(server, p, _session)
    finally:
        server.stop()


def share_native_modules(code: Path) -> list[str]:
    """Copy the installed build of each of the archived tree's C modules whose source is byte-identical
    to the installed one's (the build is then of exactly this source); the names copied. The others
    stay unbuilt: kvserver imports each inside try/except ImportError and falls back to Python."""
    tree = code / common.PATHS / PACKAGE
    installed = installed_package()
    shared = []
    for source in sorted(tree.glob("_*.c")):
        mine = installed / source.name
        if not mine.exists() or mine.read_bytes() != source.read_bytes():
            continue
        for built in installed.glob(f"{source.stem}.*.so"):
            if not (tree / built.name).exists():
                shutil.copy2(built, tree / built.name)
            shared.append(source.stem)
    return sorted(set(shared))


class HistoricKvServer(KvServer):
    """kvserver as of an older commit: that tree's package first on sys.path, the installed livepatch."""

    def __init__(self, port: int, data_dir: Path, code: Path, host: str = "127.0.0.1") -> None:
        super().__init__(port, data_dir, host)
        self.code = code
        self.native = share_native_modules(code)

    def command_line(self) -> list[str]:
        return [
            *common.boot_argv(self.code, PACKAGE, "kv"),
            "--host", self.host, "--port", str(self.port), "--dir", str(self.data_dir),
            "--livepatch-socket", str(self.control_socket), "--allow-unsigned",
            "--trusted-key", str(harness_key()[1]),
        ]  # fmt: skip


historic_server = HistoricKvServer  # lpbench.commits: the server of a commit's parent
