"""The leader's side of a validated update: fork, record, watch the follower, promote or discard.

Theory of operation
-------------------
`start()` asks the server's loop (Host.call_on_loop) to fork at its quiescence point: there the loop
thread makes buffered state durable, freezes the GC (the child then shares the heap pages) and forks.
The parent starts recording (every executed request and its reply, connection events) into a
LogWriter that never blocks; the child becomes the follower (follower.py).

One monitor thread per session reads the follower's messages (ready, progress, diverged, failed,
took-over) and decides, in this order, on every tick:
  discard  the follower diverged, failed, exited, was not ready within `ready_timeout`, made no progress
           for `stuck_timeout` while behind, lagged more than `max_lag` requests, or overflowed the
           log backlog; or `discard()` was called (manual). The follower is SIGKILLed, recording stops;
           the leader's clients never saw anything of it.
  promote  (auto, or `promote()` in manual mode once validated) when the follower is ready, caught up,
           agreed for the window (`window_requests` compared requests or `window_s` seconds), and has run
           every function the patch changed (or `coverage_timeout` passed since it was ready: then the
           report lists what was never exercised).
Promotion runs on the loop thread (the leader stops reading): stop recording, export the sockets and
per-connection state, write the hand-over marker into the log, pass the descriptors (SCM_RIGHTS), and
wait at most `handover_timeout` for "took-over". Then the leader stops serving without saving; if the
follower does not confirm, it is killed and the leader carries on as if nothing happened.

Concurrency: start/wait/promote/discard/status from any thread (the agent's connection threads);
Recorder methods on the loop thread only; the monitor thread only reads the control channel, signals
processes and schedules work on the loop.
"""

from __future__ import annotations

import atexit
import contextlib
import gc
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from livepatch.mve import channel, follower
from livepatch.mve.host import Host
from livepatch.mve.outcome import Outcome, State
from livepatch.mve.phases import hold
from livepatch.mve.rules import RuleSet

log = logging.getLogger("livepatch.mve")
STOP_CHECK_S = 0.05  # how often a wait of the leader's loop thread looks for a stop request
FLUSH_RECORDS = 256  # records the leader collects before it pickles and sends them
_HELD_UNTIL_EXIT: list[socket.socket | None] = []


@dataclass(frozen=True)
class Options:
    """Limits of one validated update (the CLI's flags; docs/validated-updates.md)."""

    window_requests: int | None = None  # compared requests that must agree before promotion...
    window_s: float | None = 5.0  # ...or seconds of agreement (one of the two)
    promote: str = "auto"  # or "manual": wait for promote()/discard()
    max_lag: int = 100_000  # requests the follower may be behind
    max_backlog_bytes: int = 256 << 20  # unsent log the leader keeps in memory
    ready_timeout: float = 60.0  # fork + install of the new version
    stuck_timeout: float = 10.0  # no progress while behind
    coverage_timeout: float = 60.0  # wait this long for the changed code to run at least once
    handover_timeout: float = 10.0  # the leader's pause at promotion is bounded by this
    transform: str | None = (
        None  # "MODULE:FUNC": the follower runs it after the patch's transform hook
    )
    follow_back: bool = False  # after promotion the old version stands by (fallback.py)

    def __post_init__(self) -> None:
        if self.promote not in ("auto", "manual"):
            raise ValueError("promote must be 'auto' or 'manual'")
        if (self.window_requests is None) == (self.window_s is None):
            raise ValueError("give exactly one of window_requests and window_s")


@dataclass
class _Progress:
    ready_at: float | None = None
    compared: int = 0
    accepted: int = 0
    uncovered: list[str] = field(default_factory=list)
    last_change: float = field(default_factory=time.monotonic)
    apply_ms: float | None = None
    transform_ms: float | None = None


class Session:
    def __init__(
        self,
        host: Host,
        spec: Any,
        rules: RuleSet,
        options: Options,
        after_takeover: Callable[[], None] | None = None,
    ) -> None:
        self.host = host
        self.spec = spec
        self.rules = rules
        self.options = options
        self.after_takeover = after_takeover
        self.state: State = State.STARTING
        self.pid: int | None = None
        self.seq = 0  # requests the leader recorded
        # Requests in the open batch = len(batch) + _uncounted: each record is one request ("x1")
        # unless it is a connection event or a tick (-1) or a read of several ("x": len - 1), so the
        # count costs nothing per request.
        self._uncounted = 0
        self.progress = _Progress()
        self.outcome: dict[str, Any] | None = None
        self.fork_ms: float | None = None
        self._done = threading.Event()
        self._forked = threading.Event()
        self._fork_error: str | None = None
        self._manual: str | None = None  # "promote" | "discard"
        self._ack = threading.Event()
        self._ack_ok = False
        self._writer: channel.LogWriter | None = None
        self._ctl: socket.socket | None = None
        self._t0 = time.monotonic()
        self._reader = channel.FrameReader()
        self._handover_done = threading.Event()
        self._handover_stopped = False  # a stop request ended the hand-over
        self._fallback: tuple[int, list[str]] | None = None  # follow-back: listener copy, argv

    # ------------------------------------------------------------------------------- any thread
    def start(self, timeout: float = 30.0) -> None:
        """Fork at the loop's next quiescence point; raises RuntimeError if that did not happen."""
        self.host.call_on_loop(self._fork_on_loop)
        if not self._forked.wait(timeout):
            raise RuntimeError(
                f"the server's loop did not reach a fork point within {timeout:.0f} s"
            )
        if self._fork_error is not None:
            raise RuntimeError(self._fork_error)
        threading.Thread(target=self._monitor, name="livepatch-mve-monitor", daemon=True).start()

    def wait(self, timeout: float | None = None) -> dict[str, Any] | None:
        self._done.wait(timeout)
        return self.outcome

    def promote(self) -> None:
        self._manual = "promote"

    def discard(self) -> None:
        self._manual = "discard"

    def status(self) -> dict[str, Any]:
        p = self.progress
        return {
            "state": self.state,
            "patch_id": self.spec.patch_id,
            "follower_pid": self.pid,
            "recorded": self.seq,
            "compared": p.compared,
            "lag": max(0, self.seq - p.compared),
            "accepted_differences": p.accepted,
            "divergences": 1 if self.outcome and self.outcome.get("divergence") else 0,
            "ready": p.ready_at is not None,  # the new version is installed (transform done)
            "fork_ms": self.fork_ms,
            "transform_ms": p.transform_ms,
            "not_exercised_yet": p.uncovered,
            "rules": self.rules.names,
            "promote": self.options.promote,
            "elapsed_s": round(time.monotonic() - self._t0, 3),
        }

    # ------------------------------------------------------------------------- loop thread only
    def _fork_on_loop(self) -> None:
        try:
            log_l, log_f = socket.socketpair()
            ctl_l, ctl_f = socket.socketpair()
            self.host.prepare_fork()
            leader_pid = os.getpid()
            t0 = time.monotonic()
            gc.collect(0)
            gc.freeze()  # the collector must not write into (and so copy) every shared page
            pid = os.fork()
        except Exception as exc:
            gc.unfreeze()
            self._fork_error = f"cannot fork the follower: {exc}"
            self._forked.set()
            return
        if pid == 0:  # the follower
            try:
                log_l.close()
                ctl_l.close()
                follower.run(
                    self.host,
                    self.spec,
                    self.rules,
                    log_f,
                    ctl_f,
                    self.after_takeover,
                    leader_pid,
                    self.options.transform,
                )
            except BaseException:
                os._exit(follower.EXIT_FAILED)
            return  # promoted: back into the server's loop, which now serves as the new leader
        self.fork_ms = (time.monotonic() - t0) * 1e3
        log_f.close()
        ctl_f.close()
        self.pid = pid
        self._ctl = ctl_l
        self._writer = channel.LogWriter(log_l, self.options.max_backlog_bytes)
        self.host.start_recording(self)
        self.state = State.FOLLOWING
        self._forked.set()

    # Recorder (loop thread)
    @property
    def pending(self) -> list[Any]:
        """The open batch of log records (a list that stays the same object)."""
        assert self._writer is not None
        return self._writer.records

    flush_at = FLUSH_RECORDS

    def use_frame_encoder(self, encode: Callable[[list[Any]], bytes | None]) -> None:
        """The host's faster encoder of the log's frames (channel.LogWriter.encode_frame)."""
        assert self._writer is not None
        self._writer.encode_frame = encode

    def executed(self, cid: int, now_ms: int, requests: list[Any], replies: list[bytes]) -> None:
        # Pickled and sent in bulk: one send per FLUSH_RECORDS records under load (each send is a
        # system call the leader pays); a quiet leader's tail goes out with the monitor's periodic flush.
        writer = self._writer
        assert writer is not None
        records = writer.records
        records.append(("x", cid, now_ms, requests, replies))
        self._uncounted += len(requests) - 1
        if len(records) >= FLUSH_RECORDS:
            self.flush()

    def _count_batch(self) -> None:
        assert self._writer is not None
        self.seq += len(self._writer.records) + self._uncounted
        self._uncounted = 0

    def flush(self) -> None:
        """Pickle and send the open batch (what the kernel takes now; the rest waits)."""
        assert self._writer is not None
        self._count_batch()
        self._writer.flush()

    def opened(self, cid: int, info: Any) -> None:
        assert self._writer is not None
        self._writer.append(("o", cid, info))
        self._uncounted -= 1

    def closed(self, cid: int) -> None:
        assert self._writer is not None
        self._writer.append(("c", cid))
        self._uncounted -= 1

    def tick(self, now_ms: int) -> None:
        assert self._writer is not None
        self._writer.append(("t", now_ms))
        self._uncounted -= 1

    def _flush_on_loop(self) -> None:
        if self._writer is not None and self.state.recording:
            self.flush()

    def _stop_on_loop(self, done: threading.Event) -> None:
        with contextlib.suppress(Exception):
            self.host.stop_recording()
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.sock.close()
        self._unfreeze_unless_stopping()  # the follower is gone: nothing is shared any more
        done.set()

    def _unfreeze_unless_stopping(self) -> None:
        """Give the heap back to the cyclic collector, unless the server is stopping: then no collection
        is needed any more, and an unfrozen heap makes the interpreter's exit walk all of it (the exit
        after a SIGTERM during an update took 1.3-2 s at load 60, 0.1-0.2 s of it the server's own
        stop; bench/mve_stop_time.py, docs/performance.md)."""
        if self.host.stop_requested() or not self.host.is_serving():
            return
        gc.unfreeze()

    def _handover_on_loop(self) -> None:
        """The leader's pause: from here until it returns, the leader reads nothing.

        Every wait is in slices of STOP_CHECK_S: a stop asked meanwhile (SIGTERM: the handler only
        sets a flag, this thread is the one that acts on it) ends the hand-over at once: the follower
        is killed (the leader never let go of a socket) and the loop shuts down as asked."""
        assert self._writer is not None and self._ctl is not None
        self.host.stop_recording()
        self._count_batch()
        fds, state = self.host.export_handover()
        follow_back = self.options.follow_back
        self._writer.append(("h", state, len(fds), follow_back))
        timeout = self.options.handover_timeout
        stop = self.host.stop_requested
        ok = self._writer.flush_blocking(timeout, give_up=stop)
        if ok:
            try:
                channel.send_fds(self._ctl, fds)
            except OSError:
                ok = False
        if ok:
            hold("leader:handover")
            deadline = time.monotonic() + timeout
            while not self._ack.wait(STOP_CHECK_S):
                if stop() or time.monotonic() >= deadline:
                    break
            ok = self._ack.is_set() and self._ack_ok
        if ok:
            hold("leader:handed-over")
            if follow_back:  # the old version keeps a copy of the listening socket (fds[0])
                argv = getattr(self.host, "fallback_argv", lambda: None)()
                self._fallback = (os.dup(fds[0]), argv) if argv else None
            self.host.finish_handover()
            self.state = State.PROMOTED
        else:
            self._kill()
            self.host.resume_after_failed_handover()
            self._unfreeze_unless_stopping()
            self.state = State.HANDOVER_FAILED
            if stop():
                self._handover_stopped = True
        self._handover_done.set()

    # --------------------------------------------------------------------------- monitor thread
    def _monitor(self) -> None:
        try:
            self._watch()
        except Exception as exc:  # a bug here must not leave a follower running
            log.exception("validated update: monitor failed")
            self._finish_discard(f"internal error while watching the follower: {exc!r}")

    def _watch(self) -> None:
        assert self._ctl is not None
        reader = self._reader
        last_flush = 0.0
        while True:
            r, _, _ = select.select([self._ctl], [], [], 0.05)
            if r:
                try:
                    data = self._ctl.recv(65536)
                except OSError:
                    data = b""
                if not data:  # it is exiting: wait (a little) to say how it ended
                    deadline = time.monotonic() + 2.0
                    reason = None
                    while reason is None and time.monotonic() < deadline:
                        reason = self._exit_reason(None)
                        time.sleep(0.01)
                    self._finish_discard(reason or "the follower closed its channel")
                    return
                for msg in reader.feed(data):
                    verdict = self._on_message(msg)
                    if verdict is not None:
                        self._finish_discard(verdict[0], verdict[1])
                        return
            now = time.monotonic()
            reason = self._check_limits(now)
            if reason is not None:
                self._finish_discard(reason)
                return
            if now - last_flush >= 0.02:
                last_flush = now
                self.host.call_on_loop(
                    self._flush_on_loop
                )  # a quiet leader still ships its backlog
            if self._should_promote(now):
                self._promote_now()
                return

    def _on_message(self, msg: Any) -> tuple[str, dict[str, Any] | None] | None:
        kind = msg[0]
        p = self.progress
        if kind == "ready":
            p.ready_at = time.monotonic()
            p.apply_ms = msg[1].get("apply_ms")
            p.transform_ms = msg[1].get("transform_ms")
            p.last_change = p.ready_at
            log.info("validated update: follower %s ready", self.pid)
        elif kind == "progress":
            if msg[1] != p.compared:
                p.last_change = time.monotonic()
            p.compared, p.accepted, p.uncovered = msg[1], msg[2], msg[3]
        elif kind == "diverged":
            d = msg[1]
            return (
                f"request #{d['seq']} on connection {d['connection']} diverged: {d['request']}: "
                f"old version replied {d['old_reply']}, new version {d['new_reply']} "
                f"(no rule explains it; rules in force: {', '.join(d['rules'])})",
                d,
            )
        elif kind == "failed":
            return (str(msg[1]), None)
        elif kind == "took-over":
            self._ack_ok = True
            self._ack.set()
        return None

    def _check_limits(self, now: float) -> str | None:
        opts, p = self.options, self.progress
        if self._manual == "discard":
            return "discarded by the operator (`livepatch discard`)"
        if not self.host.is_serving() or self.host.stop_requested():
            return "the server is shutting down"
        if self._writer is not None and self._writer.overflowed:
            return f"the follower fell behind by more than {opts.max_backlog_bytes} bytes of log"
        if p.ready_at is None:
            if now - self._t0 > opts.ready_timeout:
                return f"the follower was not ready within {opts.ready_timeout:g} s"
            return self._exit_reason(None)
        lag = self.seq - p.compared
        if lag > opts.max_lag:
            return f"the follower lagged {lag} requests behind (--max-lag {opts.max_lag})"
        if lag > 0 and now - p.last_change > opts.stuck_timeout:
            return f"the follower made no progress for {opts.stuck_timeout:g} s ({lag} requests behind)"
        return self._exit_reason(None)

    def _exit_reason(self, default: str | None) -> str | None:
        if self.pid is None:
            return default
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return default or "the follower is gone"
        if pid == 0:
            return default
        self.pid = None
        if os.WIFSIGNALED(status):
            return f"the follower was killed by signal {os.WTERMSIG(status)}"
        return f"the follower exited with status {os.WEXITSTATUS(status)}"

    def _should_promote(self, now: float) -> bool:
        opts, p = self.options, self.progress
        if p.ready_at is None:
            return False
        if opts.window_requests is not None:
            window_ok = p.compared >= opts.window_requests
        else:
            window_ok = now - p.ready_at >= (opts.window_s or 0.0)
        covered = not p.uncovered or now - p.ready_at >= opts.coverage_timeout
        validated = window_ok and covered
        if opts.promote == "manual":
            if validated and self.state is State.FOLLOWING:
                self.state = State.VALIDATED
            return self._manual == "promote" and self.seq - p.compared <= opts.max_lag
        return validated and self.seq - p.compared < 1000

    def _promote_now(self) -> None:
        self.state = State.PROMOTING
        uncovered = list(self.progress.uncovered)
        self.host.call_on_loop(self._handover_on_loop)
        # Keep reading the follower's messages until the loop thread finished the hand-over.
        assert self._ctl is not None
        reader = self._reader
        while not self._handover_done.is_set():
            r, _, _ = select.select([self._ctl], [], [], 0.05)
            if not r:
                continue
            try:
                data = self._ctl.recv(65536)
            except OSError:
                data = b""
            if not data:
                self._ack.set()  # the follower died: the loop thread resumes serving
                self._handover_done.wait()
                break
            for msg in reader.feed(data):
                verdict = self._on_message(msg)
                if verdict is not None:
                    self._ack.set()
                    self._handover_done.wait()
                    self._finish_discard(verdict[0], verdict[1])
                    return
        if self.state is State.PROMOTED:
            # The follower starts its agent when this end closes: only at our exit (exec closes it),
            # after our agent stopped and freed the control socket's path, not when this Session is
            # garbage-collected.
            _HELD_UNTIL_EXIT.append(self._ctl)
            atexit.register(_become_waiter, self.pid, self._fallback)
            self._finish(
                Outcome.PROMOTED, "the new version serves every connection", None, uncovered
            )
        elif self._handover_stopped:
            self._finish_discard("the server is shutting down")
        else:
            self._finish_discard(
                "the follower did not take over in time; the old version serves on"
            )

    def _kill(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = None

    def _finish_discard(self, reason: str, divergence: dict[str, Any] | None = None) -> None:
        self._kill()
        if self.host.is_serving():  # a stopping loop runs no more calls (and records nothing more)
            done = threading.Event()
            self.host.call_on_loop(lambda: self._stop_on_loop(done))
            deadline = time.monotonic() + 5.0
            # A loop that stops meanwhile runs no more calls: do not wait for it.
            while not done.wait(STOP_CHECK_S) and self.host.is_serving():
                if time.monotonic() >= deadline:
                    break
        self.state = State.DISCARDED
        self._finish(Outcome.DISCARDED, reason, divergence, list(self.progress.uncovered))

    def _finish(
        self, outcome: Outcome, reason: str, divergence: dict[str, Any] | None, uncovered: list[str]
    ) -> None:
        if self._ctl is not None and outcome is not Outcome.PROMOTED:
            with contextlib.suppress(OSError):
                self._ctl.close()
        self.outcome = {
            "outcome": outcome,
            "reason": reason,
            "divergence": divergence,
            "patch_id": self.spec.patch_id,
            "recorded": self.seq,
            "compared": self.progress.compared,
            "accepted_differences": self.progress.accepted,
            "not_exercised": uncovered,
            "rules": self.rules.names,
            "fork_ms": self.fork_ms,
            "apply_ms": self.progress.apply_ms,
            "transform_ms": self.progress.transform_ms,
            "elapsed_s": round(time.monotonic() - self._t0, 3),
            "follow_back": outcome is Outcome.PROMOTED and self._fallback is not None,
        }
        log.warning("validated update of %s: %s: %s", self.spec.patch_id, outcome, reason)
        self._done.set()


def _become_waiter(pid: int | None, fallback: tuple[int, list[str]] | None = None) -> None:
    """At the old leader's exit (after its agent replied and stopped): exec the waiter (waiter.py);
    with follow-back it keeps the listening socket's copy and the command line (fallback.py)."""
    if pid is None:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    logging.shutdown()
    from livepatch.mve.waiter import FORWARDED, RETIRE

    # Blocked across exec (the mask survives it): a SIGTERM (or retire's SIGUSR1) during the waiter's
    # start is kept pending for its handler instead of killing the pid that stands for the server.
    signal.pthread_sigmask(signal.SIG_BLOCK, (*FORWARDED, RETIRE))
    argv = [sys.executable, "-m", "livepatch.mve.waiter", str(pid)]
    if fallback is not None:
        os.set_inheritable(fallback[0], True)
        argv += [str(fallback[0]), *fallback[1]]
    with contextlib.suppress(OSError):
        os.execv(sys.executable, argv)
