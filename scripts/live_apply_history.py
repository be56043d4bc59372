"""Apply real patches live, under load, to servers at real commits, and check that the patched process
behaves like a fresh one at the new commit (issue 13, "Tests and measurements").

    python3 scripts/live_apply_history.py waitress=PATH h11=PATH kvserver=PATH [--sample 20]
        [--limit N] [--out DIR] [--markdown FILE]

PATH is a clone or a bare repository (for kvserver, this repository). For each project:
1. `livepatch corpus` (scripts/patchability.py's PROJECTS: package, range, layout) over the history, with
   whatever the differ accepts today: rerunning this script after the differ changes gives the new table;
2. a sample of `--sample` accepted commits, spread evenly over the accepted ones (oldest to newest) whose
   parent descends from HARNESS_SINCE (the oldest release whose API the harness servers use);
3. for each: the package at the parent commit is started (scripts/live_apply_target.py: waitress serving a
   tiny WSGI app and h11 a small h11-based server, both unmodified under `livepatch run`; kvserver itself
   with its own agent), four client threads keep sending requests on keep-alive connections, the
   commit's patch (unsigned, from the corpus) is applied with `livepatch apply`, the load stops;
4. the patched process is compared with a fresh process at the new commit: the code fingerprint of every
   function and the value of every simple module-level constant of the package (`code`), and, for waitress
   and h11, the commit's own tests (the test files the commit touches, plus test_<module>.py of each module
   it changes, taken from the new commit) run by pytest *inside the patched process* against the same
   tests in a fresh process at the new commit (`tests`). Test files that start the server in a subprocess
   (which would run the code on disk) are left out and counted. kvserver's tests all start their own
   server processes, so kvserver is compared by what it answers instead: KV_PROBE's commands sent to the
   patched server and to a fresh kvserver at the new commit;
5. the state's shape (`state`, session 11): for every class of the package, the attribute names its live
   instances carry (instance `__dict__` keys, filled `__slots__`; the frozen heap searched too), in the
   patched server and in a fresh *server* at the new commit given the same load (and, for kvserver, the
   same probe). An attribute every fresh instance has and some live instance lacks is `missing` (the new
   code may read it: a transformer that skipped an instance, kvserver 34145cf84b); one no fresh instance
   has is a note (`stale`: state the new code no longer sets). `compare_shapes` is the rule.

A commit passes when the patch applied, no request failed during the apply, the code matches, every
test has the outcome it has in the fresh process, and no attribute is missing. The table goes to stdout
(and --markdown FILE).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from patchability import PROJECTS  # the one table of projects

LIVEPATCH = str(Path(sys.executable).parent / "livepatch")
TARGET = str(Path(__file__).resolve().with_name("live_apply_target.py"))
READY = re.compile(r"READY \d+|kvserver ready on")
WAIT_S = 60.0
CLIENTS = 4
# The harness speaks the API of these revisions and later (h11: Connection.start_next_cycle, named so
# in 35960a7b0279 just after v0.5.0; waitress: create_server and Python 3.11 from v1.0.0; kvserver:
# `kvserver.cli`, added by c96b71175514): commits whose parent is older are not sampled.
HARNESS_SINCE = {"h11": "35960a7b0279", "waitress": "v1.0.0", "kvserver": "c96b71175514"}
SUBPROCESS = re.compile(r"\b(subprocess|multiprocessing|Popen|os\.fork)\b")


@dataclass
class Row:
    project: str
    sha: str
    subject: str
    applied: str = "-"  # applied | refused: reason | error: reason
    requests: int = 0
    failed_requests: int = 0
    code: str = "-"  # same | N differ (examples)
    tests: str = "-"  # N/N like fresh | mismatches | none | n/a
    state: str = "-"  # N classes like fresh | N missing (examples) | not compared: why
    verdict: str = "fail"
    notes: list[str] = field(default_factory=list)


# -- git trees ---------------------------------------------------------------------------------------------


def materialise(repo: Path, rev: str, dest: Path) -> Path:
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "--git-dir" if (repo / "HEAD").exists() else "-C", str(repo), "archive", rev],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True, timeout=120)
    return dest


def changed_paths(repo: Path, sha: str) -> list[str]:
    git = ["git", "--git-dir" if (repo / "HEAD").exists() else "-C", str(repo)]
    out = subprocess.run(
        [*git, "diff", "--name-only", f"{sha}^", sha], capture_output=True, text=True, timeout=60
    )
    return out.stdout.split()


def descends_from(repo: Path, base: str, sha: str) -> bool:
    git = ["git", "--git-dir" if (repo / "HEAD").exists() else "-C", str(repo)]
    done = subprocess.run([*git, "merge-base", "--is-ancestor", base, f"{sha}^"], timeout=60)
    return done.returncode == 0


def parent(repo: Path, sha: str) -> str:
    git = ["git", "--git-dir" if (repo / "HEAD").exists() else "-C", str(repo)]
    return subprocess.run(
        [*git, "rev-parse", f"{sha}^"], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def package_root(tree: Path, package: str, paths: str | None, dest: Path) -> Path:
    """A directory holding only the package (a link to it): what PYTHONPATH gets, so that nothing else
    of the tree (kvserver's tree holds an older livepatch, others a top-level `tests`) shadows anything."""
    dest.mkdir()
    roots = (
        [tree / paths] if paths else [tree, tree / "src"]
    )  # as the corpus looks: root, then src/
    found = next((r / package for r in roots if (r / package).is_dir()), roots[0] / package)
    (dest / package).symlink_to(found)
    return dest


# -- the commit's tests --------------------------------------------------------------------------------------


def select_tests(tree: Path, package: str, changed: list[str]) -> tuple[list[Path], int]:
    """The commit's test files at the new commit, and how many were left out (they use subprocesses)."""
    candidates: set[Path] = set()
    modules = set()
    for path in changed:
        p = Path(path)
        if p.name.startswith("test_") and p.suffix == ".py":
            candidates.add(tree / p)
        elif p.suffix == ".py" and package in p.parts:
            modules.add(p.stem)
    for tests_dir in (tree / "tests", tree / package / "tests"):
        for m in modules:  # h11/_connection.py is tested by test_connection.py
            candidates.add(tests_dir / f"test_{m.lstrip('_')}.py")
    existing = [c for c in sorted(candidates) if c.is_file()]
    kept = [c for c in existing if not SUBPROCESS.search(c.read_text(errors="replace"))]
    return kept, len(existing) - len(kept)


def copy_tests(tree: Path, package: str, files: list[Path], dest: Path) -> list[str]:
    """Copy the test directories the files are in to DEST, so that the patched process imports them
    from there and not from its own (old) package; in-package tests become package `lah_tests`."""
    args = []
    for f in files:
        rel = f.relative_to(tree)
        if rel.parts[0] == package:  # PKG/tests/test_x.py
            src_dir, name = tree / package / "tests", "lah_tests"
        else:
            src_dir, name = tree / rel.parts[0], rel.parts[0]
        target = dest / name
        if not target.exists():
            shutil.copytree(src_dir, target)
            for py in target.rglob("*.py"):
                text = py.read_text(errors="replace")
                text = text.replace(f"{package}.tests", "lah_tests")
                if (
                    name == "lah_tests"
                ):  # `from .._x import y` / `from .. import y` reach the package
                    text = re.sub(r"from \.\.(?=\w)", f"from {package}.", text)
                    text = re.sub(r"from \.\. import", f"from {package} import", text)
                py.write_text(text)
        args.append(str(target / f.name))
    return args


# -- processes and load ----------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_target(
    project: str, root: Path, work: Path, port: int, probe: int
) -> tuple[subprocess.Popen[bytes], Path]:
    sock = work / "lp.sock"
    env = dict(os.environ, PYTHONPATH=str(root))
    if project == "kvserver":
        argv = [sys.executable, TARGET, project, str(port), str(probe), str(sock)]
    else:
        argv = [LIVEPATCH, "run", "--allow-unsigned", "--socket", str(sock), "--state-dir", "none"]
        argv += [TARGET, project, str(port), str(probe)]
    log = work / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work)
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if READY.search(log.read_text(errors="replace")) and sock.exists():
            return proc, sock
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    lines = log.read_text(errors="replace").strip().splitlines() or ["(no output)"]
    raise RuntimeError(f"the server at the old commit did not start: {lines[-1][:160]}")


class Load:
    """CLIENTS threads sending requests back to back on keep-alive connections until stopped."""

    def __init__(self, project: str, port: int) -> None:
        self.project, self.port = project, port
        self.stop = threading.Event()
        self.ok = 0
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(CLIENTS)]

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(WAIT_S)

    def _run(self, i: int) -> None:
        try:
            request, _ = client(self.project, self.port, i)
            while not self.stop.is_set():
                request()
                with self.lock:
                    self.ok += 1
        except Exception as exc:
            with self.lock:
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def warmed(self, n: int = 50) -> bool:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and not self.errors:
            if self.ok >= n:
                return True
            time.sleep(0.05)
        return False


def client(project: str, port: int, i: int) -> tuple[Callable[[], None], Callable[[], None]]:
    """One keep-alive connection: (send one request and check its reply, close)."""
    if project == "kvserver":
        import redis

        r = redis.Redis(port=port, socket_timeout=WAIT_S)

        def kv() -> None:
            r.set(f"k{i}", "v")
            if r.get(f"k{i}") != b"v":
                raise AssertionError("GET did not return the SET value")

        return kv, r.close
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)

    def http_get() -> None:
        conn.request("GET", f"/c{i}")
        resp = conn.getresponse()
        if resp.status != 200 or resp.read() != f"hello /c{i}".encode():
            raise AssertionError(f"status {resp.status}")

    return http_get, conn.close


class Kept:
    """A connection opened before the patch and kept open, idle, until the state is read: its
    server-side objects (h11's Connection, waitress's channel) were made by the old code and are
    still live when `instance_shapes` looks (the load's connections are closed by then). It sends one
    request at the start and one after the load; a failed one is counted with the load's."""

    def __init__(self, project: str, port: int) -> None:
        self.request, self.close = client(project, port, CLIENTS)
        self.errors: list[str] = []

    def send(self) -> None:
        try:
            self.request()
        except Exception as exc:
            self.errors.append(f"kept connection: {type(exc).__name__}: {exc}")

    def __enter__(self) -> Kept:
        self.send()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# kvserver's tests start servers of their own, so it is compared by what it answers: the same commands,
# sent to the patched server and to a fresh server at the new commit (replies, or error messages).
KV_PROBE: list[tuple[str, ...]] = [
    ("FLUSHALL",), ("PING",), ("ECHO", "hi"), ("SET", "s", "v"), ("GET", "s"), ("APPEND", "s", "w"),
    ("STRLEN", "s"), ("GETRANGE", "s", "0", "0"), ("SETNX", "s", "x"), ("INCR", "n"),
    ("INCRBY", "n", "5"), ("DECR", "n"), ("INCRBYFLOAT", "f", "1.5"), ("MSET", "a", "1", "b", "2"),
    ("MGET", "a", "b", "zz"), ("DEL", "a"), ("EXISTS", "a", "b"), ("TYPE", "b"), ("RENAME", "b", "c"),
    ("KEYS", "*"), ("EXPIRE", "c", "100"), ("TTL", "c"), ("PERSIST", "c"), ("TTL", "c"),
    ("LPUSH", "l", "1", "2", "3"), ("RPUSH", "l", "4"), ("LRANGE", "l", "0", "-1"), ("LPOP", "l"),
    ("LLEN", "l"), ("LINDEX", "l", "1"), ("HSET", "h", "f", "1", "g", "2"), ("HGET", "h", "f"),
    ("HGETALL", "h"), ("HDEL", "h", "f"), ("HLEN", "h"), ("SADD", "set", "a", "b", "c"),
    ("SISMEMBER", "set", "a"), ("SCARD", "set"), ("SREM", "set", "a"), ("ZADD", "z", "1", "a", "2", "b"),
    ("ZRANGE", "z", "0", "-1", "WITHSCORES"), ("ZSCORE", "z", "b"), ("ZRANK", "z", "b"),
    ("ZINCRBY", "z", "3", "a"), ("ZREVRANGE", "z", "0", "-1"), ("DBSIZE",), ("GET", "l"),
    ("INCR", "s"), ("LPUSH", "s", "x"), ("NOSUCHCOMMAND",), ("GET",), ("SET", "k"),
    ("EXPIRE", "s", "notanumber"), ("SELECT", "1"), ("SELECT", "99"),
]  # fmt: skip


def kv_probe(port: int) -> list[str]:
    import redis

    out = []
    with redis.Redis(port=port, socket_timeout=WAIT_S) as r:
        for cmd in KV_PROBE:
            try:
                out.append(repr(r.execute_command(*cmd)))
            except redis.ResponseError as exc:
                out.append(f"error: {exc}")
            except redis.ConnectionError as exc:
                # a server the patch broke: the rest is not sent (redis-py would retry each command
                # with back-off), and the row goes on to the code and state checks
                out += [f"connection error: {exc}"] * (len(KV_PROBE) - len(out))
                break
    return out


def ask(port: int, request: dict[str, Any], timeout: float = 600.0) -> Any:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=timeout) as s,
        s.makefile("rwb") as f,
    ):
        f.write(json.dumps(request).encode() + b"\n")
        f.flush()
        return json.loads(f.readline())


def fresh(project: str, root: Path, args: list[str], work: Path) -> Any:
    env = dict(os.environ, PYTHONPATH=f"{root}{os.pathsep}{work}")
    proc = subprocess.run(
        [sys.executable, "-c", _FRESH, project, json.dumps(args)],
        capture_output=True, text=True, env=env, cwd=work, timeout=900,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"the fresh process failed: {proc.stderr[-600:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fresh_server(project: str, root: Path, work: Path) -> tuple[list[str], dict[str, Any]]:
    """A fresh server at the new commit, given what the patched one got after its patch (the load, then
    for kvserver the probe): the probe's replies (kvserver) and the live instances' shapes."""
    work.mkdir()
    port, probe = free_port(), free_port()
    proc, _ = start_target(project, root, work, port, probe)
    try:
        with Kept(project, port) as kept:
            with Load(project, port) as load:
                load.warmed(100)  # the patched server: 50 requests, the patch, 50 more
            kept.send()
            replies = kv_probe(port) if project == "kvserver" else []
            return replies, ask(probe, {"op": "shapes"}, timeout=120)
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class ShapeDiff:
    """compare_shapes' answer. Only classes with instances on both sides are compared (`compared`).
    `missing`: an attribute every fresh instance of the class carries and some live instance lacks (the
    new code may read it): "module:Class.attr (k of n live lack it)". `shadowing`: an attribute no fresh
    instance carries, that the fresh class binds to a value, and that live instances carry with a value
    other than the one their class binds: the new code reads the stale value where a fresh instance
    reads the class's (waitress ca95fa2108ab). Both
    fail a row. `stale`: the other attributes no fresh instance carries (state the new code no longer
    sets, nothing it reads differently): a note."""

    missing: list[str] = field(default_factory=list)
    shadowing: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)
    compared: int = 0


def compare_shapes(fresh: dict[str, Any], live: dict[str, Any]) -> ShapeDiff:
    """The rule of the `state vs fresh` column, on two instance_shapes answers (ShapeDiff says it)."""
    out = ShapeDiff()
    live_classes = live.get("classes", {})
    for key, f in sorted(fresh.get("classes", {}).items()):
        mine = live_classes.get(key)
        if not mine or not mine["n"] or not f["n"]:
            continue
        out.compared += 1
        for attr, count in sorted(f["attrs"].items()):
            lacking = mine["n"] - mine["attrs"].get(attr, 0)
            if count == f["n"] and lacking:
                out.missing.append(f"{key}.{attr} ({lacking} of {mine['n']} live lack it)")
        for attr, count in sorted(mine["attrs"].items()):
            if attr in f["attrs"]:
                continue
            # the live value hides the class's, and the new class binds the name too: the new code
            # reads it there (a name the new class no longer binds is a leftover: waitress
            # ec29a0844e's force_flush, removed with the code reading it)
            hiding = mine.get("shadows", {}).get(attr, 0)
            if hiding and attr in f.get("class_values", ()):
                out.shadowing.append(
                    f"{key}.{attr} ({hiding} of {mine['n']} live hide the class value)"
                )
            else:
                out.stale.append(f"{key}.{attr} ({count} of {mine['n']} live)")
    return out


def state_cell(fresh: dict[str, Any], live: dict[str, Any], notes: list[str]) -> str:
    """The `state vs fresh` cell (and its notes) from the two instance_shapes answers."""
    incomplete = [
        f"{side}: {d['note']}" for side, d in (("fresh", fresh), ("patched", live)) if d.get("note")
    ]
    if incomplete:
        return f"not compared: {'; '.join(incomplete)}"[:200]
    diff = compare_shapes(fresh, live)
    stale = diff.stale
    if stale:
        notes.append(
            f"stale: {', '.join(stale[:3])}" + (f" (+{len(stale) - 3})" if len(stale) > 3 else "")
        )
    cells = [
        f"{len(found)} {what} ({', '.join(found[:2])})"
        for what, found in (("missing", diff.missing), ("shadowing", diff.shadowing))
        if found
    ]
    return "; ".join(cells) if cells else f"{diff.compared} classes like fresh"


# A fresh process at the new commit: the target module's own functions, without serving.
_FRESH = f"""
import io, json, sys, contextlib
sys.path.insert(0, {str(Path(TARGET).parent)!r})
import live_apply_target as t
project, args = sys.argv[1], json.loads(sys.argv[2])
t.import_all(project)
out = {{"fingerprints": t.fingerprints(project)}}
if args:
    with contextlib.redirect_stdout(io.StringIO()):
        out["tests"] = t.run_pytest(args)
print(json.dumps(out))
"""


# -- one commit ------------------------------------------------------------------------------------------


def _apply_outcome(done: subprocess.CompletedProcess[str]) -> str:
    """ "" when `livepatch apply --json` applied the patch, else the row's `applied` cell."""
    try:
        reply = json.loads(done.stdout)
    except ValueError:
        reply = {"ok": False, "error": (done.stdout + done.stderr).strip()[:200]}
    if reply.get("ok"):
        return ""
    outcome = (reply.get("result") or {}).get("outcome", "error")
    return f"{outcome}: {reply.get('error')}"[:200]


def live_apply(project: str, repo: Path, commit: dict[str, Any], patch: Path, work: Path) -> Row:
    package, _, paths = PROJECTS[project]
    sha = commit["sha"]
    row = Row(project, sha[:12], commit["subject"][:60])
    old_tree = materialise(repo, parent(repo, sha), work / "old")
    new_tree = materialise(repo, sha, work / "new")
    old_root = package_root(old_tree, package, paths, work / "old-path")
    new_root = package_root(new_tree, package, paths, work / "new-path")
    tests, left_out = (
        ([], 0)
        if project == "kvserver"
        else select_tests(new_tree, package, changed_paths(repo, sha))
    )
    test_args = copy_tests(new_tree, package, tests, work / "newtests") if tests else []
    if left_out:
        row.notes.append(f"{left_out} test file(s) use subprocesses: left out")
    port, probe = free_port(), free_port()
    try:
        proc, sock = start_target(project, old_root, work, port, probe)
    except RuntimeError as exc:
        row.applied = f"error: {exc}"[:200]
        return row
    try:
        with Kept(project, port) as kept:
            with Load(project, port) as load:
                if not load.warmed():
                    row.applied = f"error: no load before the patch: {load.errors[:1]}"
                    return row
                done = subprocess.run(
                    [LIVEPATCH, "apply", str(patch), "--socket", str(sock), "--json", "--timeout", "10"],
                    capture_output=True, text=True, timeout=120,
                )  # fmt: skip
                before = load.ok
                load.warmed(before + 50)  # some load on the new code too
            kept.send()  # the load has stopped; the kept connection stays open, idle
            row.requests = load.ok + 2 - len(kept.errors)
            row.failed_requests = len(load.errors) + len(kept.errors)
            if load.errors or kept.errors:
                row.notes.append((load.errors + kept.errors)[0][:120])
            row.applied = _apply_outcome(done) or "applied"
            if row.applied != "applied":
                return row
            if proc.poll() is not None:  # the patch killed the server (waitress 5583715063)
                lines = (work / "server.log").read_text(errors="replace").strip().splitlines()
                row.applied = f"applied, then the server exited: {(lines or ['?'])[-1][:140]}"
                return row
            patched = ask(probe, {"op": "fingerprints"})
            patched_probe = kv_probe(port) if project == "kvserver" else []
            # before the tests add instances, with the kept connection still open
            patched_shapes = ask(probe, {"op": "shapes"}, timeout=120)
        patched_tests = (
            ask(probe, {"op": "pytest", "args": [*test_args, "--rootdir", str(work / "newtests")]})
            if test_args
            else {}
        )
    finally:
        stop(proc)
    ref = fresh(
        project, new_root, [*test_args, "--rootdir", str(work / "newtests")] if test_args else [],
        work / "newtests" if test_args else work,
    )  # fmt: skip
    differ = sorted(k for k, v in ref["fingerprints"].items() if patched.get(k) != v)
    row.code = "same" if not differ else f"{len(differ)} differ ({', '.join(differ[:2])})"
    fresh_probe, fresh_shapes = fresh_server(project, new_root, work / "fresh")
    row.state = state_cell(fresh_shapes, patched_shapes, row.notes)
    if project == "kvserver":
        differ_at = [
            KV_PROBE[i][0]
            for i, (a, b) in enumerate(zip(patched_probe, fresh_probe, strict=True))
            if a != b
        ]
        row.tests = (
            f"{len(KV_PROBE)} commands like fresh"
            if not differ_at
            else f"{len(differ_at)} of {len(KV_PROBE)} commands differ ({differ_at[0]})"
        )
    elif not test_args:
        row.tests = "none"
    else:
        fresh_tests = ref.get("tests", {})
        mismatched = sorted(
            k
            for k in set(fresh_tests) | set(patched_tests)
            if fresh_tests.get(k) != patched_tests.get(k)
        )
        passed = sum(1 for v in fresh_tests.values() if v == "passed")
        if mismatched:
            better = [k for k in mismatched if patched_tests.get(k) == "passed"]
            row.tests = f"{len(mismatched)} differ of {len(fresh_tests)} ({mismatched[0]})"
            if better:  # e.g. a test of a removed definition: it stays in the patched process
                row.notes.append(f"{len(better)} pass patched but not fresh")
        else:
            row.tests = f"{len(fresh_tests)} like fresh ({passed} pass)"
    row.verdict = (
        "pass"
        if row.applied == "applied"
        and row.failed_requests == 0
        and row.code == "same"
        and ("differ" not in row.tests)
        and "missing" not in row.state
        and "shadowing" not in row.state
        else "fail"
    )
    return row


# -- driver ------------------------------------------------------------------------------------------------


def corpus(name: str, repo: Path, out: Path, limit: int | None) -> tuple[list[str], dict[str, Any]]:
    package, rng, paths = PROJECTS[name]
    argv = [LIVEPATCH, "corpus", "--git", str(repo), rng, "--package", package]
    argv += ["--paths", paths] if paths else []
    argv += ["--limit", str(limit)] if limit else []
    argv += ["--json", "--out", str(out / name)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=7200)
    if proc.returncode != 0:
        sys.exit(f"{name}: {proc.stdout.strip()[:400] or proc.stderr.strip()[:400]}")
    return ["livepatch", *argv[1:]], json.loads(proc.stdout)


def transformer_patch(name: str, repo: Path, sha: str, out: Path) -> Path:
    """The patch of a commit whose only refusals are new instance attributes, made with the author's
    confirmation of the generated transformer (`livepatch diff --accept-transformer`)."""
    out.mkdir(parents=True, exist_ok=True)
    patch = out / f"{sha[:12]}.lpatch"
    argv = [LIVEPATCH, "diff", "--git", str(repo), f"{sha}^", sha, "-p", PROJECTS[name][0]]
    proc = subprocess.run(
        [*argv, "--accept-transformer", "-o", str(patch)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    if proc.returncode != 0 or not patch.exists():
        raise RuntimeError(f"livepatch diff --accept-transformer: {proc.stdout[-300:]}")
    return patch


def sample(accepted: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    if len(accepted) <= n:
        return accepted
    step = len(accepted) / n
    return [accepted[int(i * step)] for i in range(n)]


def markdown(rows: list[Row], command: str, counts: dict[str, tuple[int, int]]) -> str:
    lines = ["```", command, "```", ""]
    for project, (accepted, changing) in counts.items():
        mine = [r for r in rows if r.project == project]
        ok = sum(r.verdict == "pass" for r in mine)
        applied = sum(r.applied == "applied" for r in mine)
        lines.append(
            f"- **{project}**: the differ accepted {accepted} of {changing} commits that change the "
            f"package; of {len(mine)} sampled, {applied} applied live under load, {ok} pass "
            "(applied, no failed request, code, tests and state like a fresh process at the new "
            "commit)."
        )
    lines += [
        "",
        "| project | commit | subject | applied | requests (failed) | code vs fresh | tests vs fresh "
        "| state vs fresh | verdict | notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [
            r.project, r.sha, r.subject, r.applied, f"{r.requests} ({r.failed_requests})", r.code,
            r.tests, r.state, r.verdict, "; ".join(r.notes),
        ]  # fmt: skip
        lines.append(
            "| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("projects", nargs="+", help="NAME=PATH, NAME one of " + ", ".join(PROJECTS))
    ap.add_argument("--sample", type=int, default=20)
    ap.add_argument("--limit", type=int, default=None, help="corpus over the N newest commits only")
    ap.add_argument("--out", type=Path, default=None, help="keep corpora and work trees here")
    ap.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    ap.add_argument(
        "--reuse-corpus",
        action="store_true",
        help="read OUT/NAME/corpus.json (and its patches) from an earlier run instead of running the corpus",
    )
    ap.add_argument(
        "--newly-accepted",
        type=Path,
        default=None,
        metavar="BASELINE",
        help="sample only the commits accepted now that BASELINE/NAME/corpus.json (an earlier corpus, "
        "e.g. scripts/patchability.py --out) did not accept: what a differ change added",
    )
    ap.add_argument(
        "--transformers",
        action="store_true",
        help="sample the refused commits the generated transformer covers (the corpus's "
        "accepted_with_transformer) instead of the accepted ones; each patch is made with "
        "`livepatch diff --git REPO SHA^ SHA --accept-transformer` (the author's confirmation)",
    )
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="lah-"))
    rows: list[Row] = []
    counts: dict[str, tuple[int, int]] = {}
    for spec in args.projects:
        name, _, path = spec.partition("=")
        if name not in PROJECTS or not path:
            sys.exit(f"{spec!r}: give NAME=PATH with NAME one of {', '.join(PROJECTS)}")
        repo = Path(path).resolve()
        print(f"{name}: corpus ...", file=sys.stderr, flush=True)
        kept = out / name / "corpus.json"
        if args.reuse_corpus and kept.exists():
            doc = json.loads(kept.read_text())
        else:
            _, doc = corpus(name, repo, out, args.limit)
        accepted = [c for c in doc["commits"] if c["outcome"] == "accepted"]
        counts[name] = (len(accepted), doc["summary"]["commits_changing_package"])
        if args.transformers:
            accepted = [
                c
                for c in doc["commits"]
                if c["outcome"] == "refused" and c.get("accepted_with_transformer")
            ]
            print(f"{name}: {len(accepted)} with a transformer", file=sys.stderr, flush=True)
        if args.newly_accepted is not None:
            before = json.loads((args.newly_accepted / name / "corpus.json").read_text())
            old = {c["sha"] for c in before["commits"] if c["outcome"] == "accepted"}
            accepted = [c for c in accepted if c["sha"] not in old]
            print(f"{name}: {len(accepted)} newly accepted", file=sys.stderr, flush=True)
        since = HARNESS_SINCE.get(name)
        if since:
            accepted = [c for c in accepted if descends_from(repo, since, c["sha"])]
            print(f"{name}: {len(accepted)} accepted since {since}", file=sys.stderr, flush=True)
        for i, commit in enumerate(sample(accepted, args.sample)):
            patch = out / name / "patches" / f"{commit['sha'][:12]}.lpatch"
            if args.transformers:
                patch = transformer_patch(name, repo, commit["sha"], out / name / "transformers")
            work = Path(tempfile.mkdtemp(prefix=f"lah-{name}-"))  # short: a Unix socket path
            print(f"{name}: {i + 1} {commit['sha'][:12]} ...", file=sys.stderr, flush=True)
            try:
                row = live_apply(name, repo, commit, patch, work)
            except Exception as exc:  # one commit's trouble is its row, never the end of the run
                row = Row(name, commit["sha"][:12], commit["subject"][:60])
                row.applied = f"error: {type(exc).__name__}: {exc}"[:200]
            finally:
                shutil.rmtree(work, ignore_errors=True)
            rows.append(row)
            print(f"  {row.applied[:60]} | {row.code[:40]} | {row.tests[:40]} | {row.state[:60]} | {row.verdict}",
                  file=sys.stderr, flush=True)  # fmt: skip
    command = "python3 scripts/live_apply_history.py " + shlex.join(sys.argv[1:])
    text = markdown(rows, command, counts)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
