"""kvserver patches from the repository's history (lpbench.kv_history, lpbench.commits): real commits built
from git, tried on their parent's real kvserver with redis-py, and `livepatch bench --commit` end to end."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from lpbench import commits, kv_history
from lpbench import history as common
from lpbench.cli import bench_command
from lpbench.servers import free_port, livepatch_executable

ROOT = Path(__file__).resolve().parents[2]
# A commit the trial applies: one method of kvserver.server (ServerState.process_commands, CLIENT REPLY).
APPLIES = "31ce159ca7d4a115cb16e07ab3254fe1f5703122"
# A commit the corpus accepts but the runtime refuses: it changes run_server, on the event loop's stack.
ACTIVE = "a3511e7"


def need_history(*revs: str) -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and this repository's history")
    for rev in revs:
        has = subprocess.run(["git", "-C", str(ROOT), "cat-file", "-e", f"{rev}^{{commit}}"],
                             capture_output=True)  # fmt: skip
        if has.returncode != 0:
            pytest.skip(f"this clone does not hold commit {rev} (a shallow clone?)")


@pytest.mark.timeout(240)
def test_a_commit_applies_and_reverts_on_its_parents_kvserver(tmp_path: Path) -> None:
    need_history(APPLIES)
    c = common.resolve(ROOT, APPLIES, "kvserver")
    assert kv_history.servable(ROOT, c.sha)
    p = kv_history.build_one(ROOT, 1, c, tmp_path / "build")
    assert p.patch.n_functions == 1 and p.patch.targets == (c.sha,)
    assert (p.code / "src" / "kvserver" / "cli.py").exists()  # the parent's tree, not ours
    assert kv_history.trial(p, tmp_path) is None
    # The server really ran the parent's code: today's kvserver does not take the same patch (its
    # fingerprints are the parent's), so a trial that silently ran today's tree would be caught here.
    server = kv_history.HistoricKvServer(free_port(), tmp_path / "today", ROOT)
    server.start()
    try:
        from lpbench import agent

        assert server.control_socket is not None
        result = agent.apply(server.control_socket, p.patch.path, "global")
        assert result.outcome.value != "applied"
        with redis.Redis(server.host, server.port, socket_timeout=30) as client:
            assert client.ping()  # a refused patch leaves it serving
    finally:
        server.stop()


@pytest.mark.timeout(240)
def test_a_patch_refused_at_apply_time_is_reported(tmp_path: Path) -> None:
    """The static differ accepts ACTIVE; the runtime refuses it (run_server is on the loop's stack):
    the trial says why, and the parent's server is stopped."""
    need_history(ACTIVE)
    c = common.resolve(ROOT, ACTIVE, "kvserver")
    p = kv_history.build_one(ROOT, 0, c, tmp_path / "build")
    problem = kv_history.trial(p, tmp_path)
    assert problem is not None and "refused" in problem and "run_server" in problem


@pytest.mark.timeout(120)
def test_native_modules_are_shared_only_with_identical_sources(tmp_path: Path) -> None:
    need_history(APPLIES)
    built = sorted(p.name.split(".")[0] for p in (ROOT / "src" / "kvserver").glob("_*.so"))
    if not built:
        pytest.skip("kvserver's C modules are not built here")
    head = common.archive(ROOT, "HEAD", tmp_path / "head", "kvserver").parent
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "diff", "--quiet", "HEAD", "--", "src/kvserver"]
    )
    if dirty.returncode != 0:
        pytest.skip("the worktree's kvserver differs from HEAD's")
    assert kv_history.share_native_modules(head) == built
    old = common.archive(ROOT, f"{APPLIES}^", tmp_path / "old", "kvserver").parent
    shared = kv_history.share_native_modules(old)
    for name in shared:  # whatever was shared had the very source the installed build was made from
        assert (old / "src/kvserver" / f"{name}.c").read_bytes() == (
            ROOT / "src/kvserver" / f"{name}.c"
        ).read_bytes()
    for name in set(built) - set(shared):
        assert not list((old / "src/kvserver").glob(f"{name}.*.so"))


def test_commit_names_resolve_and_bad_ones_are_clear_errors() -> None:
    need_history(APPLIES)
    [c] = commits.resolve("kv", APPLIES[:7], ROOT)
    assert c.sha == APPLIES and "CLIENT REPLY" in c.subject
    with pytest.raises(RuntimeError, match="git rev-parse"):
        commits.resolve("kv", "no-such-revision", ROOT)
    with pytest.raises(ValueError, match="kv, sql"):
        commits.resolve("redis", "HEAD", ROOT)
    with pytest.raises(ValueError, match="no revision"):
        commits.resolve("kv", " , ", ROOT)
    assert commits.resolve("kv", "chosen", ROOT) == list(kv_history.CHOSEN)
    assert commits.resolve("kv", "figures", ROOT) == [kv_history.FIGURES]
    assert commits.resolve("sql", "today", ROOT)[0].sha.startswith("af8567b")


def test_the_chosen_commits_are_five_of_growing_size() -> None:
    assert len(kv_history.CHOSEN) == 5
    sizes = [(x.functions, x.bytes) for x in kv_history.CHOSEN]
    assert sizes == sorted(sizes) and sizes[0][0] < sizes[-1][0]


@pytest.mark.timeout(
    600
)  # about 3.5 min at load 45-60 on 2 CPUs (three servers from an archived tree)
def test_bench_takes_its_patch_from_a_commit(tmp_path: Path) -> None:
    """`livepatch bench --commit SHA`: the baseline and the live runs serve the commit's parent, the
    updates apply and revert the commit's patch, no request fails."""
    need_history(APPLIES)
    out = tmp_path / "bench"
    proc = subprocess.run(
        [livepatch_executable(), "bench", "--server", "kv", "--update", "none,live-global,live-local",
         "--duration", "2.4", "--at", "0.8,1.6", "--connections", "4", "--keys", "300",
         "--commit", APPLIES[:10], "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=580,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    methods = json.loads(proc.stdout)
    for name in ("live-global", "live-local"):
        assert methods[name]["updates"] == 2 and methods[name]["updates_ok"] == 2
        assert methods[name]["errors"] == 0 and methods[name]["connections_lost"] == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["patches"][0]["targets"] == [APPLIES]
    assert summary["patches"][0]["functions"] == 1
    events = json.loads((out / "live-local" / "run0" / "events.json").read_text())
    assert [u["outcome"] for u in events["updates"]] == ["applied", "reverted"]


def test_commit_and_patch_exclude_each_other(tmp_path: Path) -> None:
    patch = tmp_path / "x.lpatch"
    patch.write_bytes(b"")
    result = CliRunner().invoke(
        bench_command, ["--commit", "HEAD", "--patch", str(patch), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "exclude each other" in result.output
