"""In-process apply and revert: verify, stage, quiesce, swap, record; the stack of applied patches; watch.

`Patcher` is the part of a `Runtime` (core.py: the state and the lock order) that patches. Its public
methods, which core.py exposes as the `livepatch` functions over the default runtime (the agent, the CLI
and lpbench sit on these; docs/runtime.md documents them): apply_patch, revert_patch (force=True:
revert --force), history (the newest attempts, refusals included, oldest first; history_since, history_totals: history.py), record (an attempt refused before it reached the runtime: the agent's), applied_patches
(the stack, oldest first), statistics. Apply and revert never raise for a refused, aborted or failed
patch: the PatchResult's outcome says it. The states an attempt goes through, their allowed transitions,
the outcomes and the event names are lifecycle.py's table; the rules an attempt is checked against are
verify.py's. Timings (milliseconds) in PatchResult.timings: verify, stage, sync (request -> quiescent/all
migrated), swap, total.

Theory of operation
-------------------
`_patcher_lock` serializes every transition of the patch stack (apply, revert, the end of a watch window, an
automatic rollback); the quiescence protocols serialize transitions of the thread registry on their own.
Everything heavy (hooks loading, staging) happens before quiescence (invariant 4); inside a global
quiescence only the activeness check, the transform hook (with the names the patch adds to modules
already bound, the old code still in place) and `swap_in` run. A watch window keeps the
patch's dispatchers installed (always choosing the new code) to count exceptions escaping it and to time
its calls (watch.py); the next apply/revert ends the window first. Rollback runs on the watch's own
thread, never in the thread whose exception tripped it; a window tripped by calls hanging in the new code
rolls back by force (those calls would never let a normal revert reach quiescence).

Hooks run on helper threads with the patch's timeout as deadline (hook_runner.py). When an attempt does
not complete, the steps hooks declared with `ctx.record(what, undo)` are undone, newest first; for a
transform that is done while the threads are still parked, so the server never sees half of it.

The one exception to all-or-nothing: a forced revert (`force=True`, `revert --force`, a watch that sees
hangs) does not wait for quiescence. It takes the patcher lock (bounded by `timeout`), skips the wait for
a detached local reversal, and swaps the old code in for every new call at once (StagedPatch.force_out),
from the new side or from a dispatch. Threads already inside the new code finish there, then return into
old callers: a request may mix versions, and the new code's frames may see old module state. Names the
patch added stay bound (those frames may still use them). The threads found inside the new code (a walk
of the stacks) are released (Registry.release): no transition waits for them until their next quiescence
point, so the server can be patched again while they hang. The history entry says it was forced and which
threads were still inside the new code; the log gets a warning.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType

from livepatch.errors import LivepatchError, PatchAborted, PatchFailed, PatchRefused
from livepatch.runtime.frames import current_frames
from livepatch.runtime.history import (
    MAX_HISTORY,
    MAX_HISTORY_EVENTS,
    MAX_RECORDED_REFUSALS,
    History,
    HistoryTotals,
)
from livepatch.runtime.lifecycle import (
    FINAL_EVENT,
    Action,
    EventName,
    Lifecycle,
    Outcome,
    State,
)
from livepatch.runtime.quiescence import ParkedThread, Quiescence
from livepatch.runtime.threads import log

# What only an apply or a revert needs (the stager and the patch model, the hooks, the watch, the records)
# is imported by the functions that use it, and ahead of the first attempt by load_patching(): a server
# importing livepatch and running quiescence points never loads the stager, the differ's rules or the AST
# machinery (tests/runtime/test_import_cost.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from livepatch.patch.model import PatchSpec
    from livepatch.runtime.patch_hooks import HookContext, HookStep, PatchHooks
    from livepatch.runtime.results import PatchResult
    from livepatch.runtime.staging import StagedPatch
    from livepatch.runtime.watch import Verdict, Watch, WatchPolicy

__all__ = ["MAX_HISTORY", "MAX_HISTORY_EVENTS", "MAX_RECORDED_REFUSALS", "Patcher", "load_patching"]


def load_patching() -> None:
    """Import everything an apply or a revert runs. Idempotent; cheap after the first call.

    The Agent calls it when it is created (server start), apply_patch and revert_patch first thing, before
    any lock or wait. Imported inside an attempt instead, the imports ran in the middle of a server's
    first apply while the patcher held the GIL (lpbench on kvserver: a first stage of 100-420 ms against
    0.0-0.3 ms for the next ones)."""
    global _loaded
    if _loaded:  # every attempt calls it: skip the import statements' ~2 µs
        return
    from livepatch.patch import hooks_info  # noqa: F401
    from livepatch.runtime import (  # noqa: F401
        events,
        hook_runner,
        patch_hooks,
        results,
        staging,
        verify,
        watch,
    )

    _loaded = True


_loaded = False


class _Applied:
    """A patch on the stack (plain classes here: this module is on a server's import path)."""

    __slots__ = ("allow_active", "hooks", "spec", "staged", "targets")

    def __init__(
        self,
        spec: PatchSpec,
        staged: StagedPatch,
        hooks: PatchHooks,
        targets: frozenset[str],
        allow_active: bool = False,
    ) -> None:
        self.spec = spec
        self.staged = staged
        self.hooks = hooks
        self.targets = targets
        # applied over a running loop on purpose: its revert may do the same
        self.allow_active = allow_active


_FORCED_WARNING = (
    "FORCED revert: the old code was put back for new calls without quiescence; threads already inside "
    "the new code finish in it"
)


class _Attempt:
    """Events, timings and lifecycle state of one apply or revert."""

    def __init__(
        self,
        patch_id: str,
        action: Action,
        method: str,
        on_finish: Callable[[PatchResult], None],
    ) -> None:
        self.patch_id = patch_id
        self._on_finish = on_finish  # adds the result to the runtime's history
        self.action = action
        self.method = method
        from livepatch.runtime.events import Recorder

        self.life = Lifecycle()
        self.rec = Recorder()
        self.t0 = time.perf_counter()
        self._mark = self.t0
        self.timings: dict[str, float] = {}
        self.hook_running = ""  # a hook that ran past its deadline and did not stop: its name
        self.rec.emit(EventName.REQUESTED, detail=f"{action.value} {patch_id}")

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = (now - self._mark) * 1e3
        self._mark = now

    def to(self, state: State, event: EventName | None = None, detail: str = "") -> None:
        """Move to `state` (lifecycle.TRANSITIONS decides whether it may), then emit `event`."""
        self.life.advance(state)
        if event is not None:
            self.rec.emit(event, detail=detail)

    def finish(self, outcome: Outcome, reason: str = "") -> PatchResult:
        self.life.end(outcome)
        if outcome is Outcome.ROLLED_BACK:
            self.rec.emit(EventName.ROLLED_BACK, detail=reason)
        event = FINAL_EVENT[outcome]
        self.rec.emit(event, detail=outcome.value if event is EventName.FINISHED else reason)
        self.timings["total"] = (time.perf_counter() - self.t0) * 1e3
        from livepatch.runtime.results import PatchResult

        result = PatchResult(
            self.patch_id,
            self.action,
            self.method,
            outcome,
            reason,
            self.rec.events(),
            dict(self.timings),
        )
        self._on_finish(result)
        if not outcome.ok:
            log().warning("%s %s: %s: %s", self.action.value, self.patch_id, outcome.value, reason)
        return result

    def fail(self, exc: LivepatchError) -> PatchResult:
        """End the attempt with the outcome the error carries: the one translation (errors.py)."""
        return self.finish(exc.outcome, str(exc))


def _targets(staged: StagedPatch) -> frozenset[str]:
    return frozenset(staged.targets)


def _check_activeness(parked: list[ParkedThread], codes: frozenset[CodeType]) -> None:
    """Refuse when a parked thread's stack runs code the swap replaces (it would keep running it).

    Reliable only here: every inspected thread is parked (REFERENCE.md §3)."""
    if not codes:
        return
    # A parked thread's stack, from the frame of its point up (recorded when it parked: it cannot change
    # while parked), is what sys._current_frames() would show above the runtime's own frames; reading it
    # there spares the snapshot of every thread's stack (half of this check's cost beside busy threads,
    # docs/performance.md, core10). An inactive thread's stack may still change: read it now.
    frames: dict[int, FrameType] | None = None
    for p in parked:
        f = p.frame
        if f is None:
            if frames is None:
                frames = current_frames()
            f = frames.get(p.ident)
        while f is not None:
            if f.f_code in codes:
                raise PatchRefused(
                    f"thread {p.name} (role {p.role}) is running {f.f_code.co_qualname}, which the patch "
                    "replaces: that frame would keep running the old code. Make the loop call a patched "
                    "function per iteration instead, or apply with allow_active=True if that is safe"
                )
            f = f.f_back


def _end_local(att: _Attempt, staged: StagedPatch, keep_new: bool) -> None:
    # A reversal left to finish in the background may have been overtaken by a forced revert, which
    # already removed the dispatch (and put the old code back): then there is nothing left to do.
    staged.end_dispatch(keep_new, missing_ok=not keep_new)
    if keep_new:
        att.rec.emit(
            EventName.SWAPPED, detail=f"{staged.function_count} functions (dispatch removed)"
        )


def _stage(spec: PatchSpec) -> StagedPatch:
    from livepatch.runtime.staging import stage

    try:
        return stage(spec)
    except LivepatchError:
        raise
    except Exception as exc:
        raise PatchFailed(f"staging failed: {exc!r}") from exc


def _run_hook(
    att: _Attempt, hooks: PatchHooks, name: str, ctx: HookContext, *, veto: bool, timeout: float
) -> str:
    """Call a hook on a helper thread, bounded by `timeout` (hook_runner.py).

    A vetoing hook (pre_*) that raises refuses the attempt; one that runs past the deadline aborts it.
    A post_* hook that raises or runs late is logged and reported in the reason, since the swap already
    happened; the steps it declared are undone (when it stopped)."""
    from livepatch.runtime.hook_runner import HookTimedOut, call_with_deadline

    if not hooks.has(name):
        return ""
    since = len(ctx.steps)
    try:
        call_with_deadline(hooks, name, ctx, timeout=timeout)
    except HookTimedOut as exc:
        if not exc.stopped:
            att.hook_running = name
        if veto:
            raise PatchAborted(f"{exc}; nothing was swapped") from exc
        log().error("%s of %s: %s", name, ctx.patch_id, exc)
        return _undo_report(att, ctx, f"{exc}", timeout, since=since)
    except Exception as exc:
        if veto:
            raise PatchRefused(f"{name} hook vetoed the patch: {exc}") from exc
        log().exception("%s hook of %s raised", name, ctx.patch_id)
        return _undo_report(att, ctx, f"{name} hook raised {exc!r}", timeout, since=since)
    return ""


def _undo_report(
    att: _Attempt, ctx: HookContext, reason: str, timeout: float, *, since: int = 0
) -> str:
    """Undo the hook steps recorded from index `since` on (newest first) unless a hook still runs, and
    return `reason` with what the hooks had done and what became of it."""
    from livepatch.runtime.hook_runner import undo_steps

    tail, ctx.steps = ctx.steps[since:], ctx.steps[:since]
    if not tail:
        return reason
    if att.hook_running:
        done = "; ".join(f"{s.hook}: {s.what}" for s in tail)
        att.rec.emit(
            EventName.HOOK_UNDONE, detail=f"not undone: the {att.hook_running} hook still runs"
        )
        return (
            f"{reason}; the hooks had done: {done}; NOT undone, because the {att.hook_running} hook is "
            "still running (undoing beside it would race it): check the server"
        )
    lines = undo_steps(tail, timeout=timeout)
    for line in lines:
        att.rec.emit(EventName.HOOK_UNDONE, detail=line)
    return f"{reason}; the hooks had done (newest first): {'; '.join(lines)}"


def _undoing(
    att: _Attempt, ctx: HookContext, timeout: float, exc: LivepatchError
) -> LivepatchError:
    """The attempt ends without completing: undo what its hooks declared, say so in the reason (the
    same kind of error, so the same outcome)."""
    return type(exc)(_undo_report(att, ctx, str(exc), timeout))


def _transform_while_parked(
    att: _Attempt, hooks: PatchHooks, ctx: HookContext, timeout: float, hook: str = "transform"
) -> Callable[[], None] | None:
    """The transform hook as run inside global quiescence, before swap_in, with the names the patch
    adds to modules bound (StagedPatch.bind_new_names: the hook may use them). On failure its declared
    steps are undone right there, and _quiesce's action unbinds those names, while every managed thread
    is still parked, so the server never sees half a transformation."""
    from livepatch.runtime.hook_runner import HookTimedOut, call_with_deadline

    if not hooks.has(hook):
        return None

    def transform() -> None:
        try:
            call_with_deadline(hooks, hook, ctx, timeout=timeout)
        except HookTimedOut as exc:
            if not exc.stopped:
                att.hook_running = hook
            raise PatchAborted(
                _undo_report(
                    att, ctx, f"{exc}; nothing was swapped, the threads were released", timeout
                ),
            ) from exc
        except Exception as exc:
            raise PatchFailed(
                _undo_report(
                    att,
                    ctx,
                    f"{hook} hook raised {exc!r}; nothing was swapped",
                    timeout,
                ),
            ) from exc

    return transform


def _asked(method: str) -> str:
    """The method a result names before verification resolved it."""
    return method if method in ("global", "local") else "global"


def _context(att: _Attempt, spec: PatchSpec) -> HookContext:
    from livepatch.runtime.patch_hooks import context_for

    ctx = context_for(spec)

    def on_step(step: HookStep) -> None:
        att.rec.emit(EventName.HOOK_STEP, detail=f"{step.hook}: {step.what}")

    ctx.on_step = on_step
    return ctx


# ---- forced revert -----------------------------------------------------------------------------------


def _threads_in(codes: frozenset[CodeType]) -> dict[int, str]:
    """ident -> 'thread (function)' for every thread with a frame running one of `codes` (a walk of the
    stacks only: no heap walk, invariant 5)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    found: dict[int, str] = {}
    for ident, frame in current_frames().items():
        f: FrameType | None = frame
        while f is not None:
            if f.f_code in codes:
                found[ident] = f"{names.get(ident, ident)} ({f.f_code.co_qualname})"
                break
            f = f.f_back
    return found


# ---- watch windows ---------------------------------------------------------------------------------


class _Watching:
    """The open window: which patch, its counters (watch.py)."""

    __slots__ = ("entry", "watch")

    def __init__(self, entry: _Applied, watch: Watch) -> None:
        self.entry = entry
        self.watch = watch


class Patcher(Quiescence):
    """Apply, revert, the stack, the history and the watch window of a Runtime (the state is created by
    Runtime.__init__, core.py)."""

    _patcher_lock: threading.Lock  # held for a whole transition
    # short: guards _history, so history() never waits for a transition
    _records_lock: threading.Lock
    _history: History  # the newest attempts and the totals of all (history.py)
    _stack: list[_Applied]
    _watch: _Watching | None

    @property
    def max_history(self) -> int:
        """How many of its own attempts the runtime keeps (MAX_HISTORY unless a test lowers it)."""
        return self._history.max_attempts

    @max_history.setter
    def max_history(self, n: int) -> None:
        with self._records_lock:
            self._history.max_attempts = n

    @property
    def max_history_events(self) -> int:
        """At most this many events in the kept attempts (MAX_HISTORY_EVENTS unless lowered)."""
        return self._history.max_events

    @max_history_events.setter
    def max_history_events(self, n: int) -> None:
        with self._records_lock:
            self._history.max_events = n

    @property
    def max_recorded_refusals(self) -> int:
        """How many record()ed refusals the history keeps (MAX_RECORDED_REFUSALS unless lowered)."""
        return self._history.max_recorded

    @max_recorded_refusals.setter
    def max_recorded_refusals(self, n: int) -> None:
        with self._records_lock:
            self._history.max_recorded = n

    def _append(self, result: PatchResult) -> None:
        with self._records_lock:
            self._history.add(result)

    def _attempt(self, patch_id: str, action: Action, method: str) -> _Attempt:
        return _Attempt(patch_id, action, method, self._append)

    def record(self, result: PatchResult) -> None:
        """Add an attempt that ended before it reached the runtime (the agent's refusals) to the history.

        Concurrency: any thread; never waits for a transition."""
        with self._records_lock:
            self._history.add(result, recorded=True)

    def _quiesce(
        self,
        att: _Attempt,
        staged: StagedPatch,
        *,
        timeout: float,
        use_priorities: bool,
        allow_active: bool,
        while_parked: Callable[[], None] | None,
    ) -> None:
        """Run the chosen protocol for `staged`; raise a LivepatchError when it did not happen (nothing
        changed): refused (activeness), aborted (no quiescence in time) or failed (the transform or the
        swap raised)."""
        att.to(State.QUIESCING)
        try:
            if att.method == "global":

                def action(parked: list[ParkedThread]) -> None:
                    if not allow_active:
                        _check_activeness(parked, staged.replaced_codes)
                    if while_parked is not None:
                        # the transform runs before the swap, with the names the patch adds to
                        # modules bound (a generated hook computing `PubSub()` or reading
                        # `delimiter_regex`: kvserver 1287f55ec9, h11 ec0ff35e9f) and the old code
                        # still in place. Not after the swap: a thread that is not managed (waitress's
                        # asyncore loop under `livepatch run`) is not parked and would run the new code
                        # on instances the hook has not reached yet (waitress a4135c0b2b36 crashed the
                        # server that way); the old code ignores names and attributes it does not know
                        unbind = staged.bind_new_names()
                        try:
                            while_parked()
                        except BaseException:
                            unbind()
                            raise
                    staged.swap_in()
                    att.rec.emit(EventName.SWAPPED, detail=f"{staged.function_count} functions")

                t = self.run_global(
                    action, timeout=timeout, use_priorities=use_priorities, recorder=att.rec
                )
            else:
                t = self.run_local(
                    staged.begin_dispatch,
                    lambda keep_new: _end_local(att, staged, keep_new),
                    timeout=timeout,
                    recorder=att.rec,
                )
        except LivepatchError:
            raise
        except Exception as exc:
            raise PatchFailed(f"the swap failed: {exc!r}") from exc
        att.timings["sync"] = t.sync_ms
        att.timings["swap"] = t.swap_ms

    def _wait_idle(self, timeout: float) -> None:
        """A local reversal left to finish in the background still has dispatchers installed: staging now
        would find them instead of the code it expects. Wait for it (bounded by the patch's timeout)."""
        if not self.wait_idle(timeout):
            raise PatchAborted(
                "the previous transition is still being reversed (some threads have not passed a quiescence "
                "point since); nothing was changed",
            )

    def apply_patch(
        self,
        spec: PatchSpec,
        *,
        method: str = "auto",
        timeout: float = 5.0,
        allow_active: bool = False,
        use_priorities: bool = True,
        watch: WatchPolicy | None = None,
    ) -> PatchResult:
        """Verify, stage, quiesce and swap `spec` in this process.

        method: "global" | "local" | "auto" (local for a thread-local patch, else global). Never raises for
        a refused/aborted/failed patch: the outcome says it. watch: keep watching the new code for a while
        and roll back on errors or hangs (watch.py).

        Concurrency: any unmanaged thread; transitions are serialized (a second caller waits). Managed threads
        keep running until they park (global) or move (local) at their quiescence points."""
        load_patching()
        from livepatch.runtime import verify

        att = self._attempt(spec.patch_id, Action.APPLY, _asked(method))
        if self.is_managed():
            # Checked before taking the lock: a managed caller waiting for a running transition would
            # keep that transition from ever reaching quiescence.
            try:
                verify.check_caller("apply_patch", managed=True)
            except PatchRefused as exc:
                return att.fail(exc)
        with self._patcher_lock:
            try:
                return self._apply_locked(
                    att, spec, method, timeout, allow_active, use_priorities, watch
                )
            except LivepatchError as exc:
                return att.fail(exc)
            # a bug, not a patch problem: report it, never raise into the caller
            except Exception as exc:
                log().exception("apply %s failed unexpectedly", spec.patch_id)
                return att.finish(Outcome.FAILED, f"internal error: {exc!r}")

    def _apply_locked(
        self,
        att: _Attempt,
        spec: PatchSpec,
        method: str,
        timeout: float,
        allow_active: bool,
        use_priorities: bool,
        watch: WatchPolicy | None,
    ) -> PatchResult:
        from livepatch.patch.hooks_info import defined_hooks
        from livepatch.runtime import verify
        from livepatch.runtime.patch_hooks import load_hooks

        att.method = verify.verify_apply(
            spec,
            method,
            timeout=timeout,
            applied=self.applied_patches(),
            hooks=defined_hooks(spec.hooks_source),
            managed=self.is_managed(),
        )
        hooks = load_hooks(spec)
        verify.check_hooks(
            att.method, hooks.functions
        )  # also a hook bound where the parser cannot see it
        att.to(State.VERIFIED, EventName.VERIFIED)
        att.lap("verify")
        self._end_watch_locked()
        self._wait_idle(timeout)
        staged = _stage(spec)
        att.to(
            State.STAGED,
            EventName.STAGED,
            f"{staged.function_count} functions, {staged.source_bytes} bytes",
        )
        att.lap("stage")
        ctx = _context(att, spec)
        try:
            _run_hook(att, hooks, "pre_patch", ctx, veto=True, timeout=timeout)
            self._quiesce(
                att,
                staged,
                timeout=timeout,
                use_priorities=use_priorities,
                allow_active=allow_active,
                while_parked=_transform_while_parked(att, hooks, ctx, timeout),
            )
        except LivepatchError as exc:
            raise _undoing(att, ctx, timeout, exc) from exc
        ctx.steps.clear()  # the patch is in: what pre_patch and transform did stays
        entry = _Applied(spec, staged, hooks, _targets(staged), allow_active)
        self._stack.append(entry)
        att.to(State.APPLIED)
        reason = _run_hook(att, hooks, "post_patch", ctx, veto=False, timeout=timeout)
        if watch is not None and watch.window_s > 0:
            self._start_watch_locked(entry, watch, att)
        return att.finish(Outcome.APPLIED, reason)

    def revert_patch(
        self,
        patch_id: str | None = None,
        *,
        method: str = "auto",
        timeout: float = 5.0,
        force: bool = False,
    ) -> PatchResult:
        """Undo the newest applied patch, or the named one when no later applied patch touches its targets.

        The previous code objects come back exactly (StagedPatch.reversed() through the same quiescence).
        force=True: no quiescence; the old code is installed for every new call at once and threads already
        inside the new code finish there (the theory of operation says what that risks); it waits up to
        `timeout` for a running transition to end, never for threads. Concurrency: as apply_patch."""
        load_patching()
        from livepatch.runtime import verify

        if self.is_managed():
            att = self._attempt(patch_id or "(newest)", Action.REVERT, "force" if force else method)
            try:
                verify.check_caller("revert_patch", managed=True)
            except PatchRefused as exc:
                return att.fail(exc)
        if force:
            return self._force_revert(patch_id, timeout)
        with self._patcher_lock:
            try:
                return self._revert_locked(patch_id, method, timeout, rollback_reason=None)
            # a bug, not a patch problem: report it, never raise into the caller
            except Exception as exc:
                log().exception("revert %s failed unexpectedly", patch_id)
                return self._attempt(patch_id or "(newest)", Action.REVERT, method).finish(
                    Outcome.FAILED, f"internal error: {exc!r}"
                )

    def _find_revertable(self, patch_id: str | None) -> tuple[str, _Applied | None, str]:
        """The entry to revert (newest, or the named one), its name, and why it cannot be reverted ('' if it
        can)."""
        entry = self._stack[-1] if (patch_id is None and self._stack) else None
        if patch_id is not None:
            entry = next((a for a in self._stack if a.spec.patch_id == patch_id), None)
        name = patch_id if patch_id is not None else (entry.spec.patch_id if entry else "(none)")
        if entry is None:
            applied = ", ".join(a.spec.patch_id for a in self._stack) or "none"
            return name, None, f"patch {name} is not applied (applied: {applied})"
        later = [
            a for a in self._stack[self._stack.index(entry) + 1 :] if a.targets & entry.targets
        ]
        if later:
            shared = ", ".join(sorted(later[-1].targets & entry.targets)[:5])
            return (
                name,
                entry,
                f"cannot revert {name}: the later patch {later[-1].spec.patch_id} also changes {shared}; "
                f"revert {later[-1].spec.patch_id} first",
            )
        return name, entry, ""

    def _revert_locked(
        self, patch_id: str | None, method: str, timeout: float, rollback_reason: str | None
    ) -> PatchResult:
        from livepatch.runtime import verify

        name, entry, why_not = self._find_revertable(patch_id)
        att = self._attempt(name, Action.REVERT, _asked(method))
        try:
            verify.check_caller("revert_patch", managed=self.is_managed())
            if entry is None or why_not:
                raise PatchRefused(why_not)
            att.method = verify.resolve_method(method, entry.spec.category)
            att.to(State.VERIFIED, EventName.VERIFIED)
            att.lap("verify")
            self._end_watch_locked()
            self._wait_idle(timeout)
            reverse = entry.staged.reversed()
            att.to(State.STAGED, EventName.STAGED, f"revert of {reverse.function_count} functions")
            att.lap("stage")
            ctx = _context(att, entry.spec)
            try:
                _run_hook(att, entry.hooks, "pre_revert", ctx, veto=True, timeout=timeout)
                self._quiesce(
                    att,
                    reverse,
                    timeout=timeout,
                    use_priorities=True,
                    allow_active=entry.allow_active,
                    # a revert's transform (a generated class replacement puts the old class back)
                    while_parked=_transform_while_parked(
                        att, entry.hooks, ctx, timeout, "untransform"
                    ),
                )
            except LivepatchError as exc:
                raise _undoing(att, ctx, timeout, exc) from exc
            ctx.steps.clear()
            self._stack.remove(entry)
            att.to(State.REVERTED if rollback_reason is None else State.ROLLED_BACK)
            reason = _run_hook(att, entry.hooks, "post_revert", ctx, veto=False, timeout=timeout)
        except LivepatchError as exc:
            if rollback_reason is not None:
                return att.finish(
                    exc.outcome, f"automatic rollback ({rollback_reason}) failed: {exc}"
                )
            return att.fail(exc)
        if rollback_reason is not None:
            return att.finish(
                Outcome.ROLLED_BACK, "; ".join(r for r in (rollback_reason, reason) if r)
            )
        return att.finish(Outcome.REVERTED, reason)

    def _force_revert(self, patch_id: str | None, timeout: float) -> PatchResult:

        # Bounded: the patcher lock is held by a running transition at most for its own timeout (hooks
        # included, hook_runner.py); a forced revert waits for it, never for threads.
        if not self._patcher_lock.acquire(timeout=max(0.001, timeout)):
            att = self._attempt(patch_id or "(newest)", Action.REVERT, "force")
            return att.finish(
                Outcome.ABORTED,
                f"another apply/revert still holds the patcher after {timeout:g} s; nothing was changed. "
                "Retry `livepatch revert --force` (with a longer --timeout) once it has ended",
            )
        try:
            return self._force_revert_locked(patch_id, timeout, rollback_reason=None)
        except (
            Exception
        ) as exc:  # a bug, not a patch problem: report it, never raise into the caller
            log().exception("forced revert %s failed unexpectedly", patch_id)
            return self._attempt(patch_id or "(newest)", Action.REVERT, "force").finish(
                Outcome.FAILED, f"internal error: {exc!r}"
            )
        finally:
            self._patcher_lock.release()

    def _force_revert_locked(
        self, patch_id: str | None, timeout: float, rollback_reason: str | None
    ) -> PatchResult:
        """Revert without quiescence (see the theory of operation). Hooks still run (pre_revert may veto:
        it is the patch author's statement that the old code cannot run on the current state)."""
        from livepatch.runtime import verify

        name, entry, why_not = self._find_revertable(patch_id)
        att = self._attempt(name, Action.REVERT, "force")
        try:
            verify.check_caller("revert_patch", managed=self.is_managed())
            if entry is None or why_not:
                raise PatchRefused(why_not)
            att.to(State.VERIFIED, EventName.VERIFIED)
            att.lap("verify")
            w = self._watch
            if w is not None and w.entry is not entry:
                self._end_watch_locked()  # another patch's window: end it normally, keeping its new code
            if entry.hooks.has("untransform"):
                # it moves live objects back: only with every managed thread parked
                raise PatchRefused(
                    f"patch {name} defines untransform (it replaced classes): a forced revert cannot "
                    "move their instances back; revert it normally"
                )
            new_codes = entry.staged.reversed().replaced_codes
            ctx = _context(att, entry.spec)
            try:
                _run_hook(att, entry.hooks, "pre_revert", ctx, veto=True, timeout=timeout)
            except LivepatchError as exc:
                raise _undoing(att, ctx, timeout, exc) from exc
            ctx.steps.clear()
            att.to(State.FORCING)
            t0 = time.perf_counter()
            try:
                # From this patch's own watch window, force_out replaces its dispatch directly (no step
                # through the new code); the window's thread, waiting for `_patcher_lock`, then finds
                # it ended.
                kept = entry.staged.force_out()
            except (PatchAborted, RuntimeError) as exc:
                raise PatchFailed(
                    f"the forced revert could not swap: {exc}. A detached reversal of another patch may "
                    "still hold these functions (see `livepatch status`); nothing was changed",
                ) from exc
            if w is not None and w.entry is entry:
                self._watch = None
                w.watch.stop()
            att.timings["swap"] = (time.perf_counter() - t0) * 1e3
            inside = _threads_in(new_codes)
            # Those threads will not reach a quiescence point in time (that is why we force): later
            # transitions stop waiting for them until they pass one (Registry.release).
            released = self.release_threads(list(inside))
            warning = _FORCED_WARNING + (
                f"; still inside the new code: {', '.join(inside.values())}" if inside else ""
            )
            if released:
                warning += f"; patches no longer wait for {', '.join(released)} until it passes a quiescence point"
            if kept:
                warning += f"; names the patch added stay bound: {', '.join(kept[:10])}"
            att.rec.emit(
                EventName.SWAPPED, detail=f"{entry.staged.function_count} functions, no quiescence"
            )
            att.rec.emit(EventName.FORCED, detail=warning)
            log().warning("revert of %s: %s", name, warning)
            self._stack.remove(entry)
            att.to(State.REVERTED if rollback_reason is None else State.ROLLED_BACK)
            hook_reason = _run_hook(
                att, entry.hooks, "post_revert", ctx, veto=False, timeout=timeout
            )
        except LivepatchError as exc:
            prefix = f"automatic rollback ({rollback_reason}) failed: " if rollback_reason else ""
            return att.finish(exc.outcome, prefix + str(exc))
        reason = "; ".join(r for r in (rollback_reason, warning, hook_reason) if r)
        return att.finish(
            Outcome.ROLLED_BACK if rollback_reason is not None else Outcome.REVERTED, reason
        )

    def _run_watch(self, w: _Watching) -> None:
        """The window's own thread: wait for a verdict, then end the window (and roll back) under
        `_patcher_lock`."""
        verdict: Verdict | None = w.watch.wait_verdict()
        with self._patcher_lock:
            if self._watch is not w:
                return  # ended early by another transition
            if verdict is not None and verdict.forced:
                self._force_revert_locked(
                    w.entry.spec.patch_id, 5.0, rollback_reason=verdict.reason
                )
                return
            self._end_watch_locked()
            if verdict is None:
                return
            result = self._revert_locked(
                w.entry.spec.patch_id, "auto", 5.0, rollback_reason=verdict.reason
            )
            if verdict.slow and result.outcome is Outcome.ABORTED:
                # The slow calls had returned, but others were inside the slow new code and kept the
                # normal revert from reaching quiescence: the way out is the forced one.
                self._force_revert_locked(
                    w.entry.spec.patch_id, 5.0, rollback_reason=verdict.reason
                )

    def _start_watch_locked(self, entry: _Applied, policy: WatchPolicy, att: _Attempt) -> None:
        from livepatch.runtime.watch import Watch

        w = _Watching(entry, Watch(policy))
        try:
            entry.staged.begin_dispatch(
                lambda: True, on_error=w.watch.on_error, monitor=w.watch.timed
            )
        except Exception as exc:  # the patch is applied; only the watch is missing: say so
            log().exception("watch of %s could not start", entry.spec.patch_id)
            att.rec.emit(EventName.WATCH_STARTED, detail=f"failed: {exc!r}")
            return
        self._watch = w
        att.to(State.WATCHING, EventName.WATCH_STARTED, policy.describe())
        threading.Thread(
            target=self._run_watch,
            args=(w,),
            name=f"livepatch-watch-{entry.spec.patch_id}",
            daemon=True,
        ).start()

    def _end_watch_locked(self) -> None:
        """End the current watch window (if any): remove its dispatchers, keeping the new code."""
        w = self._watch
        if w is None:
            return
        self._watch = None
        w.watch.stop()  # let its thread finish now
        try:
            w.entry.staged.end_dispatch(keep_new=True)
        except Exception:  # the dispatch keeps choosing the new code; nothing else depends on it
            log().exception("ending the watch of %s failed", w.entry.spec.patch_id)

    def history(self) -> list[PatchResult]:
        """The newest apply/revert attempts, refusals included, oldest first (a copy): the newest
        `max_history` of the runtime's own and the newest `max_recorded_refusals` record()ed ones
        (history.py); `history_totals()` counts every attempt and how many were dropped. Never waits for
        a running transition."""
        with self._records_lock:
            return self._history.entries()

    def history_since(self, seq: int) -> tuple[list[tuple[int, PatchResult]], int]:
        """The kept attempts numbered `seq` or later (every attempt is numbered from 0 in arrival order),
        each with its number, and the number of the next attempt: a reader keeping that cursor gets each
        attempt once (the agent's state directory). Never waits for a running transition."""
        with self._records_lock:
            return self._history.since(seq)

    def history_totals(self) -> HistoryTotals:
        """Running totals over every attempt ever made, dropped ones included (a copy; O(1) in the
        history's length): counts by (action, outcome), sync/swap histograms, how many were dropped."""
        with self._records_lock:
            return self._history.totals()

    def adopt_applied(
        self,
        spec: PatchSpec,
        staged: StagedPatch,
        hooks: PatchHooks,
        reason: str,
        timings: dict[str, float],
    ) -> PatchResult:
        """A patch installed outside the patcher, by a validated update's follower (livepatch.mve) now
        promoted: onto the stack and into the history as applied, so that `livepatch status`, `history`
        and `revert` know it. Called in the forked follower, alone: a lock a leader thread held at fork
        time stays held there, so none is waited for long."""
        from livepatch.runtime.results import PatchResult

        result = PatchResult(
            spec.patch_id, Action.APPLY, "validated", Outcome.APPLIED, reason, (), dict(timings)
        )
        self._stack.append(_Applied(spec, staged, hooks, _targets(staged)))
        got = self._records_lock.acquire(timeout=1.0)
        try:
            self._history.add(result)
        finally:
            if got:
                self._records_lock.release()
        return result

    def applied_patches(self) -> list[str]:
        """Ids of the applied patches, oldest first (the stack; revert pops from the end). Never waits for a
        running transition (the stack changes only under `_patcher_lock`; a copy of a list is atomic under
        the GIL)."""
        return [a.spec.patch_id for a in list(self._stack)]
