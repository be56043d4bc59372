"""The agent inside a server: control socket + patcher thread + verification + metrics.

Theory of operation
- Connection threads (control.py) parse and validate a request. Queries (status, history) are answered
  right there from the runtime's read-only views, so they work while a patch waits for quiescence.
- apply/revert are handed to ONE patcher thread (a single-worker executor) and the connection thread
  waits for the outcome: patches are applied one at a time in arrival order, and all heavy work
  (parsing, signature, staging, quiescence) happens off the server's managed threads, as the runtime
  requires (apply_patch must not be called from a managed thread).
- Results of apply carry two events of the agent's own before the runtime's: "received" (the request
  reached the patcher thread) and "signature-checked"; the timing "signature" covers both checks.
- Before the runtime sees a patch the agent checks the file structure and versions and the signature
  against the trusted keys (unsigned only with allow_unsigned=True), then runs the runtime's one
  verification step (runtime/verify.py: refusals, category and method, transform hook, already applied);
  the runtime's stage() then checks every target's fingerprint against the live code. A refusal at any
  step changes nothing and is recorded in the runtime's history (patcher.record) like any other attempt:
  there is one history. The refusal texts are in the `livepatch` command's terms (--method, --category),
  since that is what the operator reading them types next.
- Whatever a patch does (a hook raising SystemExit included), the attempt ends as a result: recorded in
  the history, logged, and replied. A CLI that goes away mid-apply changes nothing: the patch completes
  (or aborts) and its outcome is in the history.
- With a state directory (keeper.py, state_dir.py) the applied stack and the history outlive the
  process: start() restores the stack before the control socket listens (and so before the server,
  which starts the agent before it serves, accepts anyone); every apply and revert is written there by
  the patcher thread once it ends, whether or not its requester still waits.
- Patch ids and reasons come from the patch author: the agent's and the runtime's log lines escape
  control characters (safetext.EscapeControls), so a patch cannot forge log lines.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from livepatch.agent import protocol
from livepatch.agent.control import ControlServer
from livepatch.agent.keeper import StateKeeper
from livepatch.agent.mve_protocol import MveRequest
from livepatch.agent.state_dir import RestoreNote
from livepatch.errors import LivepatchError, PatchFailed
from livepatch.patch import lpatch
from livepatch.patch.hooks_info import defined_hooks
from livepatch.patch.safetext import EscapeControls
from livepatch.patch.signing import PublicKey, load_public_key
from livepatch.runtime import core as runtime
from livepatch.runtime import verify
from livepatch.runtime.lifecycle import FINAL_EVENT, Action, Event, EventName, Outcome, PatchResult
from livepatch.runtime.pacing import Pacer
from livepatch.runtime.watch import WatchPolicy

log = logging.getLogger("livepatch.agent")
for _logger in ("livepatch.agent", "livepatch.runtime"):  # the lines patch ids and reasons reach
    logging.getLogger(_logger).addFilter(EscapeControls())

ReqT = TypeVar("ReqT", protocol.ApplyRequest, protocol.RevertRequest)
_APPLY_GRACE_S = 30.0  # on top of the patch's own timeout: staging, hooks and the swap


class _NextToSocket:
    """The default state directory: SOCKET.state, next to the control socket."""

    def __repr__(self) -> str:
        return "NEXT_TO_SOCKET"


NEXT_TO_SOCKET = _NextToSocket()
StateDirOption = str | os.PathLike[str] | _NextToSocket | None


class Agent:
    """The control socket a `livepatch` command talks to, run inside the server process.

    `start()` and `stop()` are called by the server's controlling thread (not concurrently with each
    other). Between them the agent runs on its own daemon threads: one acceptor, one thread per open
    connection and one patcher thread. Nothing the agent does can raise into the server: bad requests
    and failing patches get error replies; refused or failed patches change nothing.

    trusted_keys: paths of `.pub` files (livepatch keygen). allow_unsigned: accept unsigned patches
    (development only). metrics_port: serve Prometheus metrics on 127.0.0.1:PORT (0 picks a free port,
    see `metrics_address`). socket_mode: the socket's permission bits; keep 0o600 outside tests.
    state_dir: where the applied stack and the history are kept across restarts (default: SOCKET.state
    next to the socket; None keeps nothing). on_stale: what start() does when a stacked patch is neither
    re-applicable nor included in the running code: "refuse" (raise keeper.StalePatches) or "warn"
    (start without it, with an error-level log line). start() raises state_dir.StateError for an unusable
    or corrupt state directory.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        trusted_keys: Sequence[str | os.PathLike[str]] = (),
        allow_unsigned: bool = False,
        *,
        metrics_port: int | None = None,
        socket_mode: int = 0o600,
        state_dir: StateDirOption = NEXT_TO_SOCKET,
        on_stale: str = "refuse",
    ) -> None:
        runtime.load_patching()  # now, at server start, not inside the first apply (patcher.py)
        self.socket_path = os.fspath(socket_path)
        if isinstance(state_dir, _NextToSocket):
            state_dir = f"{self.socket_path}.state"
        self.state_dir = None if state_dir is None else os.fspath(state_dir)
        self.on_stale = on_stale
        self._keeper = None if self.state_dir is None else StateKeeper(self.state_dir, on_stale)
        self.allow_unsigned = allow_unsigned
        self.trusted_key_paths = tuple(
            os.fspath(p) for p in trusted_keys
        )  # a promoted follower's agent
        # Keys are loaded now, so a bad key path fails at server start, not at the first patch.
        self.trusted_keys: tuple[PublicKey, ...] = tuple(
            load_public_key(Path(p)) for p in trusted_keys
        )
        self.metrics_port = metrics_port
        self.metrics_address: tuple[str, int] | None = None
        self._control = ControlServer(self.socket_path, self.handle_request, mode=socket_mode)
        self._patcher: concurrent.futures.ThreadPoolExecutor | None = None
        self._metrics: Any = None
        self._started = False
        self._timers: list[threading.Timer] = []

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            raise RuntimeError("agent already started")
        self._patcher = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="livepatch-patcher"
        )
        keeper_open = False
        try:
            if self._keeper is not None:
                self._control.check_path()  # "another agent listens" before "state dir in use"
                stored = self._keeper.open()
                keeper_open = True
                self._keeper.restore(
                    stored,
                    self._on_patcher(self._apply),
                    self._on_patcher(self._revert),
                    self.trusted_keys,
                    self.allow_unsigned,
                )
            if self.metrics_port is not None:
                from livepatch.agent.metrics import MetricsServer

                self._metrics = MetricsServer(self)
                self.metrics_address = self._metrics.start(self.metrics_port)
            self._control.start()
        except BaseException:
            self._shutdown_parts(close_keeper=keeper_open)
            raise
        self._started = True
        log.info(
            "livepatch agent listening on %s (trusted keys: %s; unsigned %s)",
            self.socket_path,
            ", ".join(k.key_id for k in self.trusted_keys) or "none",
            "allowed" if self.allow_unsigned else "refused",
        )

    def stop(self) -> None:
        """Stop accepting, let a running apply finish, remove the socket. Idempotent."""
        if not self._started:
            return
        self._started = False
        self._shutdown_parts(close_keeper=True)

    def _shutdown_parts(self, *, close_keeper: bool) -> None:
        self._control.stop()
        if self._patcher is not None:
            self._patcher.shutdown(wait=True, cancel_futures=True)
            self._patcher = None
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None
        if close_keeper and self._keeper is not None:
            self._keeper.close()

    def _on_patcher(
        self, fn: Callable[[ReqT], protocol.ResultReply]
    ) -> Callable[[ReqT], protocol.ResultReply]:
        """`fn` run on the patcher thread, the caller waiting for it (the restore at start)."""

        def call(req: ReqT) -> protocol.ResultReply:
            assert self._patcher is not None
            return self._patcher.submit(fn, req).result()

        return call

    def __enter__(self) -> Agent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests (called on connection threads) ------------------------------------------------------

    def handle_request(self, req: protocol.Request) -> protocol.Reply:
        if isinstance(req, MveRequest):  # validated updates (livepatch.mve)
            from livepatch.agent import mve_ops

            return mve_ops.handle(self, req)
        if isinstance(req, protocol.StatusRequest):
            if self._keeper is not None:
                self._keeper.sync()  # e.g. a watch window that rolled back since the last write
            return self.status()
        if isinstance(req, protocol.HistoryRequest):
            return self.history_reply()
        patcher = self._patcher
        if patcher is None:
            return protocol.ErrorReply("the agent is stopping")
        try:
            if isinstance(req, protocol.ApplyRequest):
                future = patcher.submit(self._apply_and_keep, req)
            else:
                future = patcher.submit(self._revert_and_keep, req)
        except RuntimeError:  # shut down between the check and the submit
            return protocol.ErrorReply("the agent is stopping")
        wait_s = req.timeout + _APPLY_GRACE_S + _watch_s(req)
        try:
            return future.result(timeout=wait_s)
        except concurrent.futures.TimeoutError:
            # The patcher thread is still busy (e.g. a hook that hangs); the outcome will be in history.
            return protocol.ErrorReply(f"no outcome within {wait_s:.0f} s; see `livepatch history`")

    def status(self) -> protocol.StatusReply:
        return protocol.StatusReply(
            pid=os.getpid(),
            uid=os.geteuid(),
            socket=self.socket_path,
            trusted_keys=tuple(k.key_id for k in self.trusted_keys),
            allow_unsigned=self.allow_unsigned,
            applied=tuple(runtime.applied_patches()),
            statistics=runtime.statistics().to_dict(),
        )

    @property
    def restored(self) -> tuple[RestoreNote, ...]:
        """What start() did with each kept patch (empty without a state directory or a kept stack)."""
        return self._keeper.restore_notes if self._keeper is not None else ()

    def history(self) -> list[PatchResult]:
        """The newest attempts, refusals made here included, oldest first (the runtime's one history,
        bounded: runtime/history.py)."""
        return runtime.history()

    def history_reply(self) -> protocol.HistoryReply:
        """The history across restarts with a state directory (each entry with its start), else the
        runtime's; with how many older attempts were dropped."""
        if self._keeper is None:
            totals = runtime.history_totals()
            return protocol.HistoryReply(tuple(self.history()), dropped=totals.dropped)
        starts, entry_starts = self._keeper.view()
        return protocol.HistoryReply(
            tuple(PatchResult.from_dict(h) for st in starts for h in st.history),
            tuple(entry_starts),
            tuple(st.summary() for st in starts),
            sum(st.dropped for st in starts),
        )

    # -- what the patcher thread keeps ------------------------------------------------------------------

    def _apply_and_keep(self, req: protocol.ApplyRequest) -> protocol.ResultReply:
        reply = self._apply(req)
        if self._keeper is not None:
            # hashing the document (canonical JSON, ~0.3 ms for 115 kB) holds the GIL: a pause after it
            pace = Pacer()
            self._keeper.remember(req, reply.result)
            pace.rest()
            self._keeper.sync()
            if req.watch is not None and reply.ok:
                # a rollback at the end of the window happens on the watch's thread: write it then
                timer = threading.Timer(req.watch.window_s + 0.5, self._keeper.sync)
                timer.daemon = True
                self._timers = [t for t in self._timers if t.is_alive()] + [timer]
                timer.start()
        return reply

    def _revert_and_keep(self, req: protocol.RevertRequest) -> protocol.ResultReply:
        reply = self._revert(req)
        if self._keeper is not None:
            self._keeper.sync()
        return reply

    # -- the patcher thread -----------------------------------------------------------------------------

    def _apply(self, req: protocol.ApplyRequest) -> protocol.ResultReply:
        t0 = time.monotonic_ns()
        # the checks below give up the GIL between their pieces once they have been long (as staging
        # does): the server's threads keep being served (runtime/pacing.py)
        pace = Pacer()
        method = req.method
        manifest = req.patch.get("manifest")
        patch_id = str(manifest.get("patch_id", "?")) if isinstance(manifest, dict) else "?"
        try:
            pf = lpatch.from_document(req.patch, source="the patch")
            patch_id = pf.spec.patch_id
            pace()
            # a signed patch's spec carries its precompiled code, decoded only after the signature check
            spec, signed_by = pf.verified_spec(
                self.trusted_keys, allow_unsigned=self.allow_unsigned, between=pace
            )
            pace()
            verify.verify_apply(
                spec,
                method,
                timeout=req.timeout,
                applied=runtime.applied_patches(),
                hooks=defined_hooks(spec.hooks_source),
                managed=runtime.is_managed(),
            )
        except LivepatchError as exc:
            return protocol.ResultReply(self._refuse(patch_id, Action.APPLY, method, exc, t0))
        t_checked = time.monotonic_ns()
        verify_ms = (t_checked - t0) / 1e6
        watch = None if req.watch is None else WatchPolicy(**dataclasses.asdict(req.watch))
        log.info("applying patch %s (signed by %s, method %s)", patch_id, signed_by, method)
        pace.rest()  # the runtime's verification and staging, next, start a stretch of their own
        try:
            result = runtime.apply_patch(spec, method=method, timeout=req.timeout, watch=watch)
        # a runtime bug (or SystemExit from patch code) must not escape
        except BaseException as exc:
            log.exception("apply of patch %s failed", patch_id)
            reason = f"internal error: {type(exc).__name__}: {exc}"
            failed = self._refuse(patch_id, Action.APPLY, method, PatchFailed(reason), t0)
            return protocol.ResultReply(failed, signed_by)
        timings = dict(result.timings)
        timings["signature"] = verify_ms  # the agent's own checks, before the runtime's "verify"
        result = dataclasses.replace(
            result,
            events=(
                Event(EventName.RECEIVED, t0, detail="agent"),
                Event(
                    EventName.SIGNATURE_CHECKED,
                    t_checked,
                    detail=f"key {signed_by or 'none (unsigned)'}",
                ),
                *result.events,
            ),
            timings=timings,
        )
        log.info("patch %s: %s %s", patch_id, result.outcome.value, result.reason)
        return protocol.ResultReply(result, signed_by)

    def _revert(self, req: protocol.RevertRequest) -> protocol.ResultReply:
        t0 = time.monotonic_ns()
        try:
            # the patcher thread is the only one that applies: nothing can appear before the revert runs
            verify.verify_revert(
                req.patch_id, applied=runtime.applied_patches(), managed=runtime.is_managed()
            )
        except LivepatchError as exc:
            return protocol.ResultReply(
                self._refuse(req.patch_id or "(none)", Action.REVERT, req.method, exc, t0)
            )
        try:
            result = runtime.revert_patch(
                req.patch_id, method=req.method, timeout=req.timeout, force=req.force
            )
        # a runtime bug (or SystemExit from patch code) must not escape
        except BaseException as exc:
            log.exception("revert failed")
            reason = f"internal error: {type(exc).__name__}: {exc}"
            failed = self._refuse(
                req.patch_id or "?", Action.REVERT, req.method, PatchFailed(reason), t0
            )
            return protocol.ResultReply(failed)
        log.info("revert %s: %s %s", result.patch_id, result.outcome.value, result.reason)
        return protocol.ResultReply(result)

    def _refuse(
        self, patch_id: str, action: Action, method: str, exc: LivepatchError, t0: int
    ) -> PatchResult:
        """An attempt that ended here, before the runtime: recorded in the runtime's history."""
        t1 = time.monotonic_ns()
        outcome: Outcome = exc.outcome
        reason = str(exc)
        result = PatchResult(
            patch_id=patch_id,
            action=action,
            method=method,
            outcome=outcome,
            reason=reason,
            events=(
                Event(EventName.RECEIVED, t0, detail="agent"),
                Event(FINAL_EVENT[outcome], t1, detail=reason),
            ),
            timings={"verify": (t1 - t0) / 1e6, "total": (t1 - t0) / 1e6},
        )
        runtime.record(result)
        log.warning("%s of patch %s refused: %s", action.value, patch_id, reason)
        return result


def _watch_s(req: protocol.ApplyRequest | protocol.RevertRequest) -> float:
    watch = req.watch if isinstance(req, protocol.ApplyRequest) else None
    return watch.window_s if watch is not None else 0.0
