"""The follower: the forked child that runs the new version, replays the leader's log and compares.

Theory of operation
-------------------
The child is alone (fork keeps only the forking thread) and owns a copy of the leader's state. It dies
with the leader (PR_SET_PDEATHSIG, set first: no orphan keeps running, whatever phase it is in) and
1. drops every inherited socket (connections, listeners, the agent's control socket) so that a connection
   the leader closes really closes, and the server drops its own objects (`Host.enter_follower`);
2. installs the patch in place (staging, the patch's pre_patch and transform hooks, direct swap,
   post_patch: no quiescence is needed with one thread; the transform runs on the follower's copy of
   the data while the leader serves);
3. says "ready" and replays the log: each request (as the rules' rewrites make it for the new version)
   through the virtual client of its connection, at the leader's clock, and the leader's periodic work
   ("t": active expiry) at the same points; each reply is compared with the leader's; a difference
   that no rule explains is reported ("diverged") and the child exits. Progress every PROGRESS_S;
4. at the hand-over marker it receives the sockets (SCM_RIGHTS), adopts them, says "took-over" and
   returns into the server's loop, which serves from then on; the patch goes into the runtime's stack
   and history (livepatch status/history/revert know it); when the old leader has exited (its end of
   the channel closes) the heap is unfrozen (gc.unfreeze: nothing is shared any more) and
   `after_takeover` runs (the agent starts on the control socket).
The child never returns into the server unless promoted: every other end is os._exit (no atexit, no
finally of the leader's stack runs twice). Tests hold it at each phase (phases.py).
"""

from __future__ import annotations

import gc
import importlib
import os
import select
import signal
import socket
import stat
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from livepatch.mve import channel, fallback
from livepatch.mve.coverage import Coverage, functions_of
from livepatch.mve.host import Host
from livepatch.mve.phases import hold
from livepatch.mve.rules import RuleSet

PROGRESS_S = 0.05
EXIT_DIVERGED = 1
EXIT_FAILED = 2
EXIT_LEADER_GONE = 3


def _drop_inherited_sockets(keep: set[int]) -> None:
    """Point every inherited socket descriptor but `keep` at /dev/null: the connection is released
    (the leader's copy is then the only one) and the number stays valid for the objects that hold it."""
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            if fd in keep or fd == devnull:
                continue
            try:
                if stat.S_ISSOCK(os.fstat(fd).st_mode):
                    os.dup2(devnull, fd)
            except OSError:
                continue
    finally:
        os.close(devnull)


def _die_with_parent(leader_pid: int) -> None:
    """SIGKILL when the leader (after a promotion: the waiter, waiter.py) dies: before the promotion a
    follower without its leader has nothing to follow; after it, the waiter's pid stands for the server.
    If the leader died before the prctl, the parent is already someone else: exit."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG (the forking thread: the server's loop)
    except (OSError, AttributeError):
        pass
    if os.getppid() != leader_pid:
        os._exit(EXIT_LEADER_GONE)


def _short(data: bytes, limit: int = 200) -> str:
    text = repr(data)
    return text if len(text) <= limit else text[:limit] + "..."


def run(
    host: Host,
    spec: Any,
    rules: RuleSet,
    log_sock: socket.socket,
    ctl_sock: socket.socket,
    after_takeover: Callable[[], None] | None,
    leader_pid: int,
    transform: str | None = None,
) -> None:
    """The child's life; returns only when promoted (the caller then carries on serving)."""
    _die_with_parent(leader_pid)
    try:
        _drop_inherited_sockets({log_sock.fileno(), ctl_sock.fileno(), 0, 1, 2})
        host.enter_follower()
        hold("follower:fork")
        t0 = time.monotonic()
        from livepatch.runtime.patch_hooks import context_for, load_hooks
        from livepatch.runtime.staging import stage

        # The runtime's order (patcher.py): pre_patch, transform, swap, post_patch. No deadlines here:
        # a hook that hangs keeps the follower from getting ready, and the leader discards it.
        staged = stage(spec)
        hooks = load_hooks(spec)
        ctx = context_for(spec)
        ctx.hook = "pre_patch"
        hooks.call("pre_patch", ctx)
        hold("follower:transform")
        t1 = time.monotonic()
        ctx.hook = "transform"
        hooks.call("transform", ctx)
        if transform is not None:
            _load_transform(transform)(ctx)  # --transform MODULE:FUNC, after the patch's own hook
        transform_ms = (time.monotonic() - t1) * 1e3
        staged.swap_in()
        ctx.hook = "post_patch"
        hooks.call("post_patch", ctx)
        coverage = Coverage(functions_of(staged))
        apply_ms = (time.monotonic() - t0) * 1e3
        channel.send_frame(
            ctl_sock,
            ("ready", {"apply_ms": apply_ms, "transform_ms": transform_ms, "pid": os.getpid()}),
        )
        steps = "; ".join(f"{step.hook}: {step.what}" for step in ctx.steps)
        installed = _Installed(
            spec, staged, hooks, {"total": apply_ms, "transform": transform_ms}, steps
        )
    except BaseException as exc:
        _fail(ctl_sock, f"the new version could not be installed in the follower: {exc}")
    hold("follower:catch-up")
    try:
        _follow(host, rules, log_sock, ctl_sock, coverage, after_takeover, installed)
    except EOFError:
        os._exit(EXIT_LEADER_GONE)
    except BaseException:
        _fail(ctl_sock, "the follower failed: " + traceback.format_exc(limit=8))


def _load_transform(spec: str) -> Callable[[Any], Any]:
    module_name, _, name = spec.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, name, None)
    if not callable(fn):
        raise RuntimeError(f"--transform {spec}: {module_name} has no function {name!r}")
    return fn


class _Installed:
    """What the follower installed, for the runtime's stack and history once promoted."""

    def __init__(
        self, spec: Any, staged: Any, hooks: Any, timings: dict[str, float], steps: str
    ) -> None:
        self.spec, self.staged, self.hooks, self.timings = spec, staged, hooks, timings
        self.steps = steps  # what the hooks declared they did (ctx.record)


def _fail(ctl_sock: socket.socket, reason: str) -> None:
    try:
        channel.send_frame(ctl_sock, ("failed", reason))
    finally:
        os._exit(EXIT_FAILED)


def _follow(
    host: Host,
    rules: RuleSet,
    log_sock: socket.socket,
    ctl_sock: socket.socket,
    coverage: Coverage,
    after_takeover: Callable[[], None] | None,
    installed: _Installed,
) -> None:
    seq = 0
    accepted = 0
    last_progress = time.monotonic()
    replay = host.replay
    rewrite = rules.rewrite if rules.rewrites else None
    reported = 0
    reader = channel.FrameReader()
    recv_into = log_sock.recv_into
    buf = bytearray(channel.READ_CHUNK)
    view = memoryview(buf)
    while True:
        # One select and one read per up to READ_CHUNK bytes of log (hundreds of frames under load):
        # the replay makes no system call per request.
        if reported != seq and not select.select([log_sock], [], [], PROGRESS_S)[0]:
            # The leader is quiet: say where we are now (a caught-up follower must look caught up).
            last_progress = time.monotonic()
            reported = seq
            channel.send_frame(ctl_sock, ("progress", seq, accepted, coverage.uncovered()))
            continue
        n = recv_into(buf)
        if not n:
            raise EOFError("the leader closed the log")
        for records in reader.feed(view[:n]):
            for record in records:
                kind = record[0]
                if kind == "x1":  # one request (the common case)
                    _, cid, now_ms, request, old = record
                    new = replay(cid, now_ms, rewrite(request) if rewrite else request)
                    seq += 1
                    if seq == 1:
                        hold("follower:compare")
                    if new != old:  # bytes against bytes: nothing is decoded unless they differ
                        if rules.explain(request, old, new) is None:
                            _diverged(ctl_sock, rules, seq, cid, request, old, new)
                        accepted += 1
                elif kind == "x":
                    _, cid, now_ms, requests, replies = record
                    for request, old in zip(requests, replies, strict=True):
                        new = replay(cid, now_ms, rewrite(request) if rewrite else request)
                        seq += 1
                        if seq == 1:
                            hold("follower:compare")
                        if new != old:  # bytes against bytes: nothing is decoded unless they differ
                            if rules.explain(request, old, new) is None:
                                _diverged(ctl_sock, rules, seq, cid, request, old, new)
                            accepted += 1
                elif kind == "t":
                    host.replay_tick(record[1])
                elif kind == "o":
                    host.replay_open(record[1], record[2])
                elif kind == "c":
                    host.replay_close(record[1])
                elif kind == "h":
                    coverage.disarm()
                    _take_over(host, ctl_sock, record[1], record[2], seq, after_takeover, installed)
                    if len(record) > 3 and record[3]:
                        fallback.arm(os.getppid())  # the old leader stands by (follow-back)
                    return
        now = time.monotonic()
        if now - last_progress >= PROGRESS_S:
            last_progress = now
            reported = seq
            channel.send_frame(ctl_sock, ("progress", seq, accepted, coverage.uncovered()))


def _diverged(
    ctl_sock: socket.socket,
    rules: RuleSet,
    seq: int,
    cid: int,
    request: Any,
    old: bytes,
    new: bytes,
) -> None:
    """Report the first unexplained difference and exit (the leader discards this follower)."""
    channel.send_frame(
        ctl_sock,
        (
            "diverged",
            {
                "seq": seq,
                "connection": cid,
                "request": [_short(a, 80) for a in request]
                if isinstance(request, list)
                else _short(request),
                "old_reply": _short(old),
                "new_reply": _short(new),
                "rules": rules.names,
            },
        ),
    )
    os._exit(EXIT_DIVERGED)


def _take_over(
    host: Host,
    ctl_sock: socket.socket,
    state: Any,
    nfds: int,
    seq: int,
    after_takeover: Callable[[], None] | None,
    installed: _Installed,
) -> None:
    fds = channel.recv_fds(ctl_sock, nfds)
    host.adopt(fds, state)
    hold("follower:handover")
    channel.send_frame(ctl_sock, ("took-over", seq))
    from livepatch.runtime import core

    core.adopt_applied(
        installed.spec,
        installed.staged,
        installed.hooks,
        f"validated update: {seq} requests compared, then promoted"
        + (f" ({installed.steps})" if installed.steps else ""),
        installed.timings,
    )

    def wait_for_old_leader() -> None:
        # The old leader's end closes when it exits: then its control socket path is free.
        try:
            ctl_sock.settimeout(None)
            while ctl_sock.recv(4096):
                pass
        except OSError:
            pass
        ctl_sock.close()
        gc.unfreeze()  # the leader's pages are no longer shared: the collector may see everything
        if after_takeover is not None:
            after_takeover()

    threading.Thread(target=wait_for_old_leader, name="livepatch-mve-takeover", daemon=True).start()
