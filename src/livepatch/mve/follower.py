"""The follower: the forked child that runs the new version, replays the leader's log and compares.

Theory of operation
-------------------
The child is alone (fork keeps only the forking thread) and owns a copy of the leader's state. It
1. drops every inherited socket (connections, listeners, the agent's control socket) so that a connection
   the leader closes really closes, and the server drops its own objects (`Host.enter_follower`);
2. installs the patch in place (staging, the patch's pre_patch and transform hooks, direct swap,
   post_patch: no quiescence is needed with one thread; the transform runs on the follower's copy of
   the data while the leader serves);
3. says "ready" and replays the log: each request through the virtual client of its connection, at the
   leader's clock; each reply is compared with the leader's; a difference that no rule explains is
   reported ("diverged") and the child exits. Progress is reported every PROGRESS_S;
4. at the hand-over marker it receives the sockets (SCM_RIGHTS), adopts them, says "took-over" and
   returns into the server's loop, which serves from then on; when the old leader has exited (its end
   of the channel closes) `after_takeover` runs (the agent starts on the control socket).
The child never returns into the server unless promoted: every other end is os._exit (no atexit, no
finally of the leader's stack runs twice). If the leader dies, the log ends and the child exits: no
orphan keeps running.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import stat
import sys
import threading
import time
import traceback
from collections.abc import Callable
from types import CodeType
from typing import Any

from livepatch.mve import channel
from livepatch.mve.host import Host
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


def _new_codes(staged: Any) -> set[CodeType]:
    """The code objects the patch installed (for coverage: has the changed code run yet?)."""
    codes: set[CodeType] = set()
    for target in staged.targets:
        module_name, _, qualname = target.partition(":")
        obj: Any = sys.modules.get(module_name)
        for part in qualname.split("."):
            if obj is None:
                break
            obj = getattr(obj, part, None)
        code = getattr(obj, "__code__", None)
        if isinstance(code, CodeType):
            codes.add(code)
    return codes


class _Coverage:
    """Which of the patch's new functions have run (a profile hook, removed once all have)."""

    def __init__(self, codes: set[CodeType]) -> None:
        self.pending = set(codes)
        self.names = {c: c.co_qualname for c in codes}
        if self.pending:
            sys.setprofile(self._hook)

    def _hook(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call" and frame.f_code in self.pending:
            self.pending.discard(frame.f_code)
            if not self.pending:
                sys.setprofile(None)

    def uncovered(self) -> list[str]:
        return sorted(self.names[c] for c in self.pending)


def _die_with_parent() -> None:
    """SIGKILL when the old leader (then the waiter, waiter.py) is killed: its pid stands for the server."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: as if the server pid was killed
    except (OSError, AttributeError):
        return


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
) -> None:
    """The child's life; returns only when promoted (the caller then carries on serving)."""
    try:
        _drop_inherited_sockets({log_sock.fileno(), ctl_sock.fileno(), 0, 1, 2})
        host.enter_follower()
        t0 = time.monotonic()
        from livepatch.runtime.patch_hooks import context_for, load_hooks
        from livepatch.runtime.staging import stage

        # The runtime's order (patcher.py): pre_patch, transform, swap, post_patch. No deadlines here:
        # a hook that hangs keeps the follower from getting ready, and the leader discards it.
        staged = stage(spec)
        hooks = load_hooks(spec)
        ctx = context_for(spec)
        for name in ("pre_patch", "transform"):
            ctx.hook = name
            hooks.call(name, ctx)
        staged.swap_in()
        ctx.hook = "post_patch"
        hooks.call("post_patch", ctx)
        coverage = _Coverage(_new_codes(staged))
        channel.send_frame(
            ctl_sock,
            ("ready", {"apply_ms": (time.monotonic() - t0) * 1e3, "pid": os.getpid()}),
        )
    except BaseException as exc:
        _fail(ctl_sock, f"the new version could not be installed in the follower: {exc}")
    try:
        _follow(host, rules, log_sock, ctl_sock, coverage, after_takeover)
    except EOFError:
        os._exit(EXIT_LEADER_GONE)
    except BaseException:
        _fail(ctl_sock, "the follower failed: " + traceback.format_exc(limit=8))


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
    coverage: _Coverage,
    after_takeover: Callable[[], None] | None,
) -> None:
    seq = 0
    accepted = 0
    last_progress = time.monotonic()
    replay = host.replay
    reported = 0
    while True:
        if reported != seq and not select.select([log_sock], [], [], PROGRESS_S)[0]:
            # The leader is quiet: say where we are now (a caught-up follower must look caught up).
            last_progress = time.monotonic()
            reported = seq
            channel.send_frame(ctl_sock, ("progress", seq, accepted, coverage.uncovered()))
            continue
        records = channel.read_frame(log_sock)
        for record in records:
            kind = record[0]
            if kind == "x":
                _, cid, now_ms, requests, replies = record
                for request, old in zip(requests, replies, strict=True):
                    new = replay(cid, now_ms, request)
                    seq += 1
                    if new != old:
                        rule = rules.explain(request, old, new)
                        if rule is None:
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
                        accepted += 1
            elif kind == "o":
                host.replay_open(record[1], record[2])
            elif kind == "c":
                host.replay_close(record[1])
            elif kind == "h":
                _take_over(host, ctl_sock, record[1], record[2], seq, after_takeover)
                return
        now = time.monotonic()
        if now - last_progress >= PROGRESS_S:
            last_progress = now
            reported = seq
            channel.send_frame(ctl_sock, ("progress", seq, accepted, coverage.uncovered()))


def _take_over(
    host: Host,
    ctl_sock: socket.socket,
    state: Any,
    nfds: int,
    seq: int,
    after_takeover: Callable[[], None] | None,
) -> None:
    sys.setprofile(None)
    fds = channel.recv_fds(ctl_sock, nfds)
    host.adopt(fds, state)
    _die_with_parent()
    channel.send_frame(ctl_sock, ("took-over", seq))

    def wait_for_old_leader() -> None:
        # The old leader's end closes when it exits: then its control socket path is free.
        try:
            ctl_sock.settimeout(None)
            while ctl_sock.recv(4096):
                pass
        except OSError:
            pass
        ctl_sock.close()
        if after_takeover is not None:
            after_takeover()

    threading.Thread(target=wait_for_old_leader, name="livepatch-mve-takeover", daemon=True).start()
