"""In-process apply and revert: verify, stage, quiesce, swap, record; the stack of applied patches; watch.

CONTRACT (the agent, the CLI and lpbench are written against these):

    apply_patch(spec: PatchSpec, *, method: str = "auto", timeout: float = 5.0,
                allow_active: bool = False, use_priorities: bool = True,
                watch: WatchPolicy | None = None) -> PatchResult
        method: "global" | "local" | "auto" (auto: local when spec.category is thread-local, else global).
        Never raises for a refused/aborted patch: the outcome says it. One transition at a time: a second
        caller waits for the first to finish. May be called from any thread except a managed one.

    revert_patch(patch_id: str | None = None, *, method: str = "auto", timeout: float = 5.0,
                 force: bool = False) -> PatchResult
        Undo the newest applied patch (or the named one when no later applied patch touches its targets).
        force: put the old code back for every new call at once, without quiescence (see below).

    history() -> list[PatchResult]          every attempt, oldest first
    applied_patches() -> list[str]          ids of applied patches, oldest first (the stack)
    statistics() -> RuntimeStatistics       threads by generation, state and priority; current generation

Event names, in order: requested, verified, staged, reached (per thread, global), quiescent, swapped,
migrated (per thread, local), finished, aborted, refused, watch-started, rolled-back; hook-step and
hook-undone (what hooks declared, and what was undone); forced (a forced revert: the warning).
Timings (milliseconds) in PatchResult.timings: verify, stage, sync (request -> quiescent/all migrated),
swap, total.

Theory of operation
-------------------
`_lock` serializes every transition of the patch stack (apply, revert, the end of a watch window, an
automatic rollback); the quiescence protocols serialize transitions of the thread registry on their own.
Everything heavy (hooks loading, staging) happens before quiescence (invariant 4); inside a global
quiescence only the activeness check, the transform hook and `swap_in` run. A watch window keeps the
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

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import CodeType
from typing import TYPE_CHECKING, Any

from livepatch.errors import PatchAborted, PatchRefused
from livepatch.patch.model import Category, ChangeKind, PatchSpec
from livepatch.runtime import quiescence, threads
from livepatch.runtime.events import Event, Recorder
from livepatch.runtime.hook_runner import HookTimedOut, call_with_deadline, undo_steps
from livepatch.runtime.patch_hooks import (
    HookContext,
    HookStep,
    PatchHooks,
    context_for,
    load_hooks,
)
from livepatch.runtime.registry import RuntimeStatistics
from livepatch.runtime.watch import Verdict, Watch, WatchPolicy

if TYPE_CHECKING:
    from livepatch.runtime.staging import StagedPatch

__all__ = [
    "Event",
    "HookContext",
    "PatchResult",
    "WatchPolicy",
    "applied_patches",
    "apply_patch",
    "history",
    "revert_patch",
    "statistics",
]

log = logging.getLogger("livepatch.runtime")


@dataclass(frozen=True)
class PatchResult:
    patch_id: str
    action: str  # "apply" | "revert"
    method: str  # "global" | "local"
    outcome: str  # "applied" | "reverted" | "refused" | "aborted" | "failed" | "rolled-back"
    reason: str = ""
    events: tuple[Event, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.outcome in ("applied", "reverted")

    def to_dict(self) -> dict[str, Any]:
        return {
            "patch_id": self.patch_id,
            "action": self.action,
            "method": self.method,
            "outcome": self.outcome,
            "reason": self.reason,
            "events": [e.to_dict() for e in self.events],
            "timings": dict(self.timings),
        }


@dataclass(eq=False)
class _Applied:
    spec: PatchSpec
    staged: StagedPatch
    hooks: PatchHooks
    targets: frozenset[str]
    allow_active: bool = False  # applied over a running loop on purpose: its revert may do the same


_lock = threading.Lock()  # held for a whole transition
_records_lock = (
    threading.Lock()
)  # short: guards _history, so history() never waits for a transition
_history: list[PatchResult] = []
_stack: list[_Applied] = []
_watch: _Watching | None = None
_FORCED_WARNING = (
    "FORCED revert: the old code was put back for new calls without quiescence; threads already inside "
    "the new code finish in it"
)

_METHODS = ("auto", "global", "local")


class _Outcome(Exception):
    """Internal: ends an attempt with an outcome (refused / aborted / failed) and a reason."""

    def __init__(self, outcome: str, reason: str) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason


class _Attempt:
    """Events and timings of one apply or revert."""

    def __init__(self, patch_id: str, action: str, method: str) -> None:
        self.patch_id = patch_id
        self.action = action
        self.method = method
        self.rec = Recorder()
        self.t0 = time.perf_counter()
        self._mark = self.t0
        self.timings: dict[str, float] = {}
        self.hook_running = ""  # a hook that ran past its deadline and did not stop: its name
        self.rec.emit("requested", detail=f"{action} {patch_id}")

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = (now - self._mark) * 1e3
        self._mark = now

    def finish(self, outcome: str, reason: str = "") -> PatchResult:
        event = {"refused": "refused", "aborted": "aborted", "failed": "aborted"}.get(
            outcome, "finished"
        )
        if outcome == "rolled-back":
            self.rec.emit("rolled-back", detail=reason)
        self.rec.emit(event, detail=reason if event != "finished" else outcome)
        self.timings["total"] = (time.perf_counter() - self.t0) * 1e3
        result = PatchResult(
            self.patch_id,
            self.action,
            self.method,
            outcome,
            reason,
            self.rec.events(),
            dict(self.timings),
        )
        with _records_lock:
            _history.append(result)
        if outcome not in ("applied", "reverted"):
            log.warning("%s %s: %s: %s", self.action, self.patch_id, outcome, reason)
        return result


def _managed_reason(what: str) -> str:
    try:
        quiescence.refuse_managed_caller(what)
    except PatchRefused as exc:
        return str(exc)
    return ""


def _resolve_method(method: str, category: Category) -> str:
    if method not in _METHODS:
        raise _Outcome("refused", f"unknown method {method!r} (use one of {', '.join(_METHODS)})")
    if method == "auto":
        return "local" if category is Category.THREAD_LOCAL else "global"
    if method == "local" and category is not Category.THREAD_LOCAL:
        raise _Outcome(
            "refused",
            f"a {category.value} patch cannot use local quiescence (only thread-local patches can): "
            "use method='global' (`--method global` with the livepatch command)",
        )
    return method


def _targets(spec: PatchSpec, staged: Any) -> frozenset[str]:
    names = getattr(staged, "targets", None)
    if names:
        return frozenset(names)
    return frozenset(
        f"{m.module}:{c.qualname}"
        for m in spec.modules
        for c in m.changes
        if c.kind is not ChangeKind.SAME
    )


def _check_activeness(parked: list[quiescence.ParkedThread], codes: frozenset[CodeType]) -> None:
    """Refuse when a parked thread's stack runs code the swap replaces (it would keep running it).

    Reliable only here: every inspected thread is parked (REFERENCE.md §3)."""
    if not codes:
        return
    frames = sys._current_frames()
    for p in parked:
        f = frames.get(p.ident)
        while f is not None:
            if f.f_code in codes:
                raise PatchRefused(
                    f"thread {p.name} (role {p.role}) is running {f.f_code.co_qualname}, which the patch "
                    "replaces: that frame would keep running the old code. Make the loop call a patched "
                    "function per iteration instead, or apply with allow_active=True if that is safe"
                )
            f = f.f_back


def _quiesce(
    att: _Attempt,
    staged: StagedPatch,
    *,
    timeout: float,
    use_priorities: bool,
    allow_active: bool,
    while_parked: Callable[[], None] | None,
    on_error: Callable[[BaseException], None] | None = None,
) -> None:
    """Run the chosen protocol for `staged`; raise _Outcome when it did not happen (nothing changed)."""
    try:
        if att.method == "global":

            def action(parked: list[quiescence.ParkedThread]) -> None:
                if not allow_active:
                    _check_activeness(parked, staged.replaced_codes)
                if while_parked is not None:
                    try:
                        while_parked()
                    except _Outcome:
                        raise
                    except Exception as exc:
                        raise _Outcome(
                            "failed", f"transform hook raised {exc!r}; nothing was swapped"
                        ) from exc
                staged.swap_in()
                att.rec.emit("swapped", detail=f"{staged.function_count} functions")

            t = quiescence.run_global(
                action, timeout=timeout, use_priorities=use_priorities, recorder=att.rec
            )
        else:
            t = quiescence.run_local(
                staged.begin_dispatch,
                lambda keep_new: _end_local(att, staged, keep_new),
                timeout=timeout,
                recorder=att.rec,
            )
    except _Outcome:
        raise
    except PatchRefused as exc:
        raise _Outcome("refused", str(exc)) from exc
    except PatchAborted as exc:
        raise _Outcome("aborted", str(exc)) from exc
    except Exception as exc:
        raise _Outcome("failed", f"the swap failed: {exc!r}") from exc
    att.timings["sync"] = t.sync_ms
    att.timings["swap"] = t.swap_ms


def _end_local(att: _Attempt, staged: StagedPatch, keep_new: bool) -> None:
    # A reversal left to finish in the background may have been overtaken by a forced revert, which
    # already removed the dispatch (and put the old code back): then there is nothing left to do.
    staged.end_dispatch(keep_new, missing_ok=not keep_new)
    if keep_new:
        att.rec.emit("swapped", detail=f"{staged.function_count} functions (dispatch removed)")


def _wait_idle(timeout: float) -> None:
    """A local reversal left to finish in the background still has dispatchers installed: staging now
    would find them instead of the code it expects. Wait for it (bounded by the patch's timeout)."""
    if not quiescence.wait_idle(timeout):
        raise _Outcome(
            "aborted",
            "the previous transition is still being reversed (some threads have not passed a quiescence "
            "point since); nothing was changed",
        )


def _stage(spec: PatchSpec) -> StagedPatch:
    try:
        from livepatch.runtime.staging import stage
    except ImportError as exc:  # the staging module is a separate part; say clearly what is missing
        raise _Outcome("failed", f"staging is not available: {exc}") from exc
    try:
        return stage(spec)
    except PatchRefused as exc:
        raise _Outcome("refused", str(exc)) from exc
    except Exception as exc:
        raise _Outcome("failed", f"staging failed: {exc!r}") from exc


def _run_hook(
    att: _Attempt, hooks: PatchHooks, name: str, ctx: HookContext, *, veto: bool, timeout: float
) -> str:
    """Call a hook on a helper thread, bounded by `timeout` (hook_runner.py).

    A vetoing hook (pre_*) that raises refuses the attempt; one that runs past the deadline aborts it.
    A post_* hook that raises or runs late is logged and reported in the reason, since the swap already
    happened; the steps it declared are undone (when it stopped)."""
    if not hooks.has(name):
        return ""
    since = len(ctx.steps)
    try:
        call_with_deadline(hooks, name, ctx, timeout=timeout)
    except HookTimedOut as exc:
        if not exc.stopped:
            att.hook_running = name
        if veto:
            raise _Outcome("aborted", f"{exc}; nothing was swapped") from exc
        log.error("%s of %s: %s", name, ctx.patch_id, exc)
        return _undo_report(att, ctx, f"{exc}", timeout, since=since)
    except Exception as exc:
        if veto:
            raise _Outcome("refused", f"{name} hook vetoed the patch: {exc}") from exc
        log.exception("%s hook of %s raised", name, ctx.patch_id)
        return _undo_report(att, ctx, f"{name} hook raised {exc!r}", timeout, since=since)
    return ""


def _undo_report(
    att: _Attempt, ctx: HookContext, reason: str, timeout: float, *, since: int = 0
) -> str:
    """Undo the hook steps recorded from index `since` on (newest first) unless a hook still runs, and
    return `reason` with what the hooks had done and what became of it."""
    tail, ctx.steps = ctx.steps[since:], ctx.steps[:since]
    if not tail:
        return reason
    if att.hook_running:
        done = "; ".join(f"{s.hook}: {s.what}" for s in tail)
        att.rec.emit("hook-undone", detail=f"not undone: the {att.hook_running} hook still runs")
        return (
            f"{reason}; the hooks had done: {done}; NOT undone, because the {att.hook_running} hook is "
            "still running (undoing beside it would race it): check the server"
        )
    lines = undo_steps(tail, timeout=timeout)
    for line in lines:
        att.rec.emit("hook-undone", detail=line)
    return f"{reason}; the hooks had done (newest first): {'; '.join(lines)}"


def _undoing(att: _Attempt, ctx: HookContext, timeout: float, o: _Outcome) -> _Outcome:
    """The attempt ends without completing: undo what its hooks declared, say so in the reason."""
    return _Outcome(o.outcome, _undo_report(att, ctx, o.reason, timeout))


def _transform_while_parked(
    att: _Attempt, hooks: PatchHooks, ctx: HookContext, timeout: float
) -> Callable[[], None] | None:
    """The transform hook as run inside global quiescence. On failure its declared steps are undone
    right there, while every thread is still parked, so the server never sees half a transformation."""
    if not hooks.has("transform"):
        return None

    def transform() -> None:
        try:
            call_with_deadline(hooks, "transform", ctx, timeout=timeout)
        except HookTimedOut as exc:
            if not exc.stopped:
                att.hook_running = "transform"
            raise _Outcome(
                "aborted",
                _undo_report(
                    att, ctx, f"{exc}; nothing was swapped, the threads were released", timeout
                ),
            ) from exc
        except Exception as exc:
            raise _Outcome(
                "failed",
                _undo_report(
                    att, ctx, f"transform hook raised {exc!r}; nothing was swapped", timeout
                ),
            ) from exc

    return transform


def apply_patch(
    spec: PatchSpec,
    *,
    method: str = "auto",
    timeout: float = 5.0,
    allow_active: bool = False,
    use_priorities: bool = True,
    watch: WatchPolicy | None = None,
) -> PatchResult:
    """Verify, stage, quiesce and swap `spec` in this process; see the module contract.

    Concurrency: any unmanaged thread; transitions are serialized (a second caller waits). Managed threads
    keep running until they park (global) or move (local) at their quiescence points."""
    att = _Attempt(spec.patch_id, "apply", method if method in ("global", "local") else "global")
    if threads.is_managed():
        # Checked before taking the lock: a managed caller waiting for a running transition would
        # keep that transition from ever reaching quiescence.
        return att.finish("refused", _managed_reason("apply_patch"))
    with _lock:
        try:
            return _apply_locked(att, spec, method, timeout, allow_active, use_priorities, watch)
        except _Outcome as o:
            return att.finish(o.outcome, o.reason)
        except (
            Exception
        ) as exc:  # a bug, not a patch problem: report it, never raise into the caller
            log.exception("apply %s failed unexpectedly", spec.patch_id)
            return att.finish("failed", f"internal error: {exc!r}")


def _apply_locked(
    att: _Attempt,
    spec: PatchSpec,
    method: str,
    timeout: float,
    allow_active: bool,
    use_priorities: bool,
    watch: WatchPolicy | None,
) -> PatchResult:
    try:
        quiescence.refuse_managed_caller("apply_patch")
    except PatchRefused as exc:
        raise _Outcome("refused", str(exc)) from exc
    att.method = _resolve_method(method, spec.category)
    if spec.refusals:
        raise _Outcome(
            "refused", "the patch carries refusals: " + "; ".join(map(str, spec.refusals))
        )
    if any(a.spec.patch_id == spec.patch_id for a in _stack):
        raise _Outcome("refused", f"patch {spec.patch_id} is already applied")
    if timeout <= 0:
        raise _Outcome("refused", f"timeout must be positive, got {timeout}")
    try:
        hooks = load_hooks(spec)
    except PatchRefused as exc:
        raise _Outcome("refused", str(exc)) from exc
    if hooks.has("transform") and att.method == "local":
        raise _Outcome(
            "refused",
            "the patch has a transform hook, which needs global quiescence: use method='global' "
            "(`--method global` with the livepatch command)",
        )
    att.rec.emit("verified")
    att.lap("verify")
    _end_watch_locked()
    _wait_idle(timeout)
    staged = _stage(spec)
    att.rec.emit("staged", detail=f"{staged.function_count} functions, {staged.source_bytes} bytes")
    att.lap("stage")
    ctx = _context(att, spec)
    try:
        _run_hook(att, hooks, "pre_patch", ctx, veto=True, timeout=timeout)
        _quiesce(
            att,
            staged,
            timeout=timeout,
            use_priorities=use_priorities,
            allow_active=allow_active,
            while_parked=_transform_while_parked(att, hooks, ctx, timeout),
        )
    except _Outcome as o:
        raise _undoing(att, ctx, timeout, o) from o
    ctx.steps.clear()  # the patch is in: what pre_patch and transform did stays
    entry = _Applied(spec, staged, hooks, _targets(spec, staged), allow_active)
    _stack.append(entry)
    reason = _run_hook(att, hooks, "post_patch", ctx, veto=False, timeout=timeout)
    if watch is not None and watch.window_s > 0:
        _start_watch_locked(entry, watch, att)
    return att.finish("applied", reason)


def _context(att: _Attempt, spec: PatchSpec) -> HookContext:
    ctx = context_for(spec)

    def on_step(step: HookStep) -> None:
        att.rec.emit("hook-step", detail=f"{step.hook}: {step.what}")

    ctx.on_step = on_step
    return ctx


def revert_patch(
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
    if threads.is_managed():
        att = _Attempt(patch_id or "(newest)", "revert", "force" if force else method)
        return att.finish("refused", _managed_reason("revert_patch"))
    if force:
        return _force_revert(patch_id, timeout)
    with _lock:
        try:
            return _revert_locked(patch_id, method, timeout, rollback_reason=None)
        except (
            Exception
        ) as exc:  # a bug, not a patch problem: report it, never raise into the caller
            log.exception("revert %s failed unexpectedly", patch_id)
            return _Attempt(patch_id or "(newest)", "revert", method).finish(
                "failed", f"internal error: {exc!r}"
            )


def _find_revertable(patch_id: str | None) -> tuple[str, _Applied | None, str]:
    """The entry to revert (newest, or the named one), its name, and why it cannot be reverted ('' if it
    can)."""
    entry = _stack[-1] if (patch_id is None and _stack) else None
    if patch_id is not None:
        entry = next((a for a in _stack if a.spec.patch_id == patch_id), None)
    name = patch_id if patch_id is not None else (entry.spec.patch_id if entry else "(none)")
    if entry is None:
        applied = ", ".join(a.spec.patch_id for a in _stack) or "none"
        return name, None, f"patch {name} is not applied (applied: {applied})"
    later = [a for a in _stack[_stack.index(entry) + 1 :] if a.targets & entry.targets]
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
    patch_id: str | None, method: str, timeout: float, rollback_reason: str | None
) -> PatchResult:
    name, entry, why_not = _find_revertable(patch_id)
    att = _Attempt(name, "revert", method if method in ("global", "local") else "global")
    try:
        quiescence.refuse_managed_caller("revert_patch")
        if entry is None or why_not:
            raise _Outcome("refused", why_not)
        att.method = _resolve_method(method, entry.spec.category)
        att.rec.emit("verified")
        att.lap("verify")
        _end_watch_locked()
        _wait_idle(timeout)
        reverse = entry.staged.reversed()
        att.rec.emit("staged", detail=f"revert of {reverse.function_count} functions")
        att.lap("stage")
        ctx = _context(att, entry.spec)
        try:
            _run_hook(att, entry.hooks, "pre_revert", ctx, veto=True, timeout=timeout)
            _quiesce(
                att,
                reverse,
                timeout=timeout,
                use_priorities=True,
                allow_active=entry.allow_active,
                while_parked=None,
            )
        except _Outcome as o:
            raise _undoing(att, ctx, timeout, o) from o
        ctx.steps.clear()
        _stack.remove(entry)
        reason = _run_hook(att, entry.hooks, "post_revert", ctx, veto=False, timeout=timeout)
    except PatchRefused as exc:
        return att.finish("refused", str(exc))
    except _Outcome as o:
        if rollback_reason is not None:
            return att.finish(
                o.outcome, f"automatic rollback ({rollback_reason}) failed: {o.reason}"
            )
        return att.finish(o.outcome, o.reason)
    if rollback_reason is not None:
        return att.finish("rolled-back", "; ".join(r for r in (rollback_reason, reason) if r))
    return att.finish("reverted", reason)


# ---- forced revert -----------------------------------------------------------------------------------


def _force_revert(patch_id: str | None, timeout: float) -> PatchResult:
    # Bounded: the patcher lock is held by a running transition at most for its own timeout (hooks
    # included, hook_runner.py); a forced revert waits for it, never for threads.
    if not _lock.acquire(timeout=max(0.001, timeout)):
        att = _Attempt(patch_id or "(newest)", "revert", "force")
        return att.finish(
            "aborted",
            f"another apply/revert still holds the patcher after {timeout:g} s; nothing was changed. "
            "Retry `livepatch revert --force` (with a longer --timeout) once it has ended",
        )
    try:
        return _force_revert_locked(patch_id, timeout, rollback_reason=None)
    except Exception as exc:  # a bug, not a patch problem: report it, never raise into the caller
        log.exception("forced revert %s failed unexpectedly", patch_id)
        return _Attempt(patch_id or "(newest)", "revert", "force").finish(
            "failed", f"internal error: {exc!r}"
        )
    finally:
        _lock.release()


def _threads_in(codes: frozenset[CodeType]) -> dict[int, str]:
    """ident -> 'thread (function)' for every thread with a frame running one of `codes` (a walk of the
    stacks only: no heap walk, invariant 5)."""
    names = {t.ident: t.name for t in threading.enumerate()}
    found: dict[int, str] = {}
    for ident, frame in sys._current_frames().items():
        f: Any = frame
        while f is not None:
            if f.f_code in codes:
                found[ident] = f"{names.get(ident, ident)} ({f.f_code.co_qualname})"
                break
            f = f.f_back
    return found


def _force_revert_locked(
    patch_id: str | None, timeout: float, rollback_reason: str | None
) -> PatchResult:
    """Revert without quiescence (see the theory of operation). Hooks still run (pre_revert may veto:
    it is the patch author's statement that the old code cannot run on the current state)."""
    global _watch
    name, entry, why_not = _find_revertable(patch_id)
    att = _Attempt(name, "revert", "force")
    try:
        quiescence.refuse_managed_caller("revert_patch")
        if entry is None or why_not:
            raise _Outcome("refused", why_not)
        att.rec.emit("verified")
        att.lap("verify")
        w = _watch
        if w is not None and w.entry is not entry:
            _end_watch_locked()  # another patch's window: end it normally, keeping its new code
        new_codes = entry.staged.reversed().replaced_codes
        ctx = _context(att, entry.spec)
        try:
            _run_hook(att, entry.hooks, "pre_revert", ctx, veto=True, timeout=timeout)
        except _Outcome as o:
            raise _undoing(att, ctx, timeout, o) from o
        ctx.steps.clear()
        t0 = time.perf_counter()
        try:
            # From this patch's own watch window, force_out replaces its dispatch directly (no step
            # through the new code); the window's thread, waiting for `_lock`, then finds it ended.
            kept = entry.staged.force_out()
        except (PatchAborted, RuntimeError) as exc:
            raise _Outcome(
                "failed",
                f"the forced revert could not swap: {exc}. A detached reversal of another patch may "
                "still hold these functions (see `livepatch status`); nothing was changed",
            ) from exc
        if w is not None and w.entry is entry:
            _watch = None
            w.watch.stop()
        att.timings["swap"] = (time.perf_counter() - t0) * 1e3
        inside = _threads_in(new_codes)
        # Those threads will not reach a quiescence point in time (that is why we force): later
        # transitions stop waiting for them until they pass one (Registry.release).
        released = threads.release_threads(list(inside))
        warning = _FORCED_WARNING + (
            f"; still inside the new code: {', '.join(inside.values())}" if inside else ""
        )
        if released:
            warning += f"; patches no longer wait for {', '.join(released)} until it passes a quiescence point"
        if kept:
            warning += f"; names the patch added stay bound: {', '.join(kept[:10])}"
        att.rec.emit("swapped", detail=f"{entry.staged.function_count} functions, no quiescence")
        att.rec.emit("forced", detail=warning)
        log.warning("revert of %s: %s", name, warning)
        _stack.remove(entry)
        hook_reason = _run_hook(att, entry.hooks, "post_revert", ctx, veto=False, timeout=timeout)
    except _Outcome as o:
        prefix = f"automatic rollback ({rollback_reason}) failed: " if rollback_reason else ""
        return att.finish(o.outcome, prefix + o.reason)
    reason = "; ".join(r for r in (rollback_reason, warning, hook_reason) if r)
    return att.finish("rolled-back" if rollback_reason is not None else "reverted", reason)


# ---- watch windows ---------------------------------------------------------------------------------


@dataclass(eq=False)
class _Watching:
    """The open window: which patch, its counters (watch.py)."""

    entry: _Applied
    watch: Watch


def _run_watch(w: _Watching) -> None:
    """The window's own thread: wait for a verdict, then end the window (and roll back) under `_lock`."""
    verdict: Verdict | None = w.watch.wait_verdict()
    with _lock:
        if _watch is not w:
            return  # ended early by another transition
        if verdict is not None and verdict.forced:
            _force_revert_locked(w.entry.spec.patch_id, 5.0, rollback_reason=verdict.reason)
            return
        _end_watch_locked()
        if verdict is None:
            return
        result = _revert_locked(w.entry.spec.patch_id, "auto", 5.0, rollback_reason=verdict.reason)
        if verdict.slow and result.outcome == "aborted":
            # The slow calls had returned, but others were inside the slow new code and kept the
            # normal revert from reaching quiescence: the way out is the forced one.
            _force_revert_locked(w.entry.spec.patch_id, 5.0, rollback_reason=verdict.reason)


def _start_watch_locked(entry: _Applied, policy: WatchPolicy, att: _Attempt) -> None:
    global _watch
    w = _Watching(entry, Watch(policy))
    try:
        entry.staged.begin_dispatch(lambda: True, on_error=w.watch.on_error, monitor=w.watch.timed)
    except Exception as exc:  # the patch is applied; only the watch is missing: say so
        log.exception("watch of %s could not start", entry.spec.patch_id)
        att.rec.emit("watch-started", detail=f"failed: {exc!r}")
        return
    _watch = w
    att.rec.emit("watch-started", detail=policy.describe())
    threading.Thread(
        target=_run_watch, args=(w,), name=f"livepatch-watch-{entry.spec.patch_id}", daemon=True
    ).start()


def _end_watch_locked() -> None:
    """End the current watch window (if any): remove its dispatchers, keeping the new code."""
    global _watch
    w = _watch
    if w is None:
        return
    _watch = None
    w.watch.stop()  # let its thread finish now
    try:
        w.entry.staged.end_dispatch(keep_new=True)
    except Exception:  # the dispatch keeps choosing the new code; nothing else depends on it
        log.exception("ending the watch of %s failed", w.entry.spec.patch_id)


def history() -> list[PatchResult]:
    """Every apply/revert attempt, oldest first (a copy). Never waits for a running transition."""
    with _records_lock:
        return list(_history)


def applied_patches() -> list[str]:
    """Ids of the applied patches, oldest first (the stack; revert pops from the end). Never waits for a
    running transition (the stack changes only under `_lock`; a copy of a list is atomic under the GIL)."""
    return [a.spec.patch_id for a in list(_stack)]


def statistics() -> RuntimeStatistics:
    """Managed threads by generation, state and priority, and the current generation."""
    return threads.statistics()
