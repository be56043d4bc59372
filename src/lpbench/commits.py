"""`livepatch bench --commit REV`: the update is a real commit of this repository, built from git.

The server runs the commit's parent (its package's tree from `git archive`, lpbench.history) and the
live methods apply and revert the commit's patch (parent -> commit), so figures measure patches the
project really made. REV is any git revision (a hash, HEAD~3 ...), a name the server's history module
gives (`NAMED`: kv `figures`; sql `today`, `previous`), or `chosen`: patches #1-#5 (`CHOSEN`), each on its
own parent's server (the patch-size experiment); several revisions may be given comma-separated.

SUBJECTS is the one registry of the servers whose history lpbench can replay (bench/history_patches.py
uses it too).

Concurrency: none (harness thread).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from types import ModuleType

from lpbench import history as common
from lpbench import kv_history
from lpbench.history import HistoryCommit, HistoryPatch
from lpbench.runner import ServerFactory
from lpbench.sql import history as sql_history

SUBJECTS: dict[str, ModuleType] = {"kv": kv_history, "sql": sql_history}


@dataclass(frozen=True)
class CommitPatch:
    """A commit's patch and the factory of a server running its parent."""

    history: HistoryPatch
    server_factory: ServerFactory


def subject(server: str) -> ModuleType:
    try:
        return SUBJECTS[server]
    except KeyError:
        raise ValueError(
            f"--commit needs a server whose history lpbench knows: {', '.join(sorted(SUBJECTS))} "
            f"(not {server})"
        ) from None


def resolve(server: str, spec: str, repo: Path) -> list[HistoryCommit]:
    """The commits named by `spec` (comma-separated revisions or names, see the module docstring)."""
    module = subject(server)
    commits: list[HistoryCommit] = []
    for name in (s.strip() for s in spec.split(",")):
        if not name:
            continue
        if name == "chosen":
            if not module.CHOSEN:
                raise ValueError(
                    f"no {module.PACKAGE} patches chosen yet (bench/history_patches.py choose)"
                )
            commits += module.CHOSEN
        elif name in module.NAMED:
            named = module.NAMED[name]
            if named is None:
                raise ValueError(f"--commit {name}: not set yet in {module.__name__}")
            commits.append(named)
        else:
            commits.append(common.resolve(repo, name, module.PACKAGE))
    if not commits:
        raise ValueError("--commit: no revision given")
    return commits


def prepare(server: str, spec: str, repo: Path, workdir: Path) -> list[CommitPatch]:
    """Build each named commit's patch and parent tree under workdir (numbered #1.. in order)."""
    module = subject(server)
    out = []
    for k, c in enumerate(resolve(server, spec, repo), start=1):
        built = module.build_one(repo, k, c, workdir)
        if not c.functions:  # a revision the user named: its sizes are the built patch's
            built = replace(built, commit=replace(c, functions=built.patch.n_functions,
                                                  bytes=built.patch.size_bytes))  # fmt: skip
        out.append(CommitPatch(built, _factory(module, built.code)))
    return out


def _factory(module: ModuleType, code: Path) -> ServerFactory:
    historic = module.historic_server
    return lambda port, data_dir: historic(port, data_dir, code)
