"""The swap itself: prepared operations, a three-state machine (old / new / dispatching), and StagedPatch.

Theory of operation: staging leaves two kinds of operations, both holding the very objects to install and
the very objects they replace, so that every transition is a handful of attribute stores:
- `CodeOp`: one live function gets another `__code__` / `__defaults__` / `__kwdefaults__` (its identity is
  kept, so imports, bound methods, callbacks, partials and decorators that hold it all see the change);
- `BindOp`: a name is bound in a module or class namespace (a new function, class, method, import or
  class-level default), or put back to what it was (deleted, if it did not exist).
A `_Core` owns the operations and the state: which side (old or new) is installed, or a dispatch between
them. Before any transition it checks that every target still holds exactly what the state says it should
(another patch or a hand edit in between makes the transition fail with nothing changed). Transitions are
all-or-nothing: a failure mid-way undoes the steps already taken, in reverse, and raises PatchAborted.
Adding names goes before code swaps (new code may call them); removal goes after (in reverse).
A `StagedPatch` is a view of a core in one direction; `reversed()` is the same core seen the other way,
so a patch and its revert can never disagree about what is installed.

The forced transition (`StagedPatch.force_out`, for `revert --force` and a watch that sees calls hang) is
the one that does not wait for quiescence: from any state (new installed, or a dispatch of a watch window
or of a stuck local reversal) it puts the old code in place for every new call at once. Frames already
running the new code keep running it, so names the patch *added* are kept (the old code ignores them and
those frames may still look them up); names it *rebound* get their old value back.
"""

from __future__ import annotations

import builtins
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from types import CodeType, FunctionType, ModuleType
from typing import Any, Literal

from livepatch.errors import PatchAborted
from livepatch.runtime.dispatch import Dispatcher, make_impl, make_trampoline

__all__ = ["MISSING", "BindOp", "CallMonitor", "CodeOp", "StagedPatch", "make_staged_patch"]

Side = Literal["old", "new"]
# Wraps the preferred implementation of one target during a dispatch (the watch window's call timer):
# (implementation, target name) -> the callable the dispatcher calls instead.
CallMonitor = Callable[[FunctionType, str], Callable[..., Any]]


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


MISSING: Any = _Missing()  # "this name was not bound"


@dataclass(eq=False)
class CodeOp:
    """Swap one live function's code and defaults."""

    target: str  # module:qualname, for messages
    func: FunctionType
    old_code: CodeType
    new_code: CodeType
    old_defaults: tuple[Any, ...] | None
    new_defaults: tuple[Any, ...] | None
    old_kwdefaults: dict[str, Any] | None
    new_kwdefaults: dict[str, Any] | None
    trampoline: CodeType | None = field(default=None, repr=False)

    def code_for(self, side: Side) -> CodeType:
        return self.new_code if side == "new" else self.old_code

    def install(self, side: Side) -> None:
        func = self.func
        if side == "new":
            func.__code__ = self.new_code
            func.__defaults__ = self.new_defaults
            func.__kwdefaults__ = self.new_kwdefaults
        else:
            func.__code__ = self.old_code
            func.__defaults__ = self.old_defaults
            func.__kwdefaults__ = self.old_kwdefaults

    def impl(self, side: Side) -> FunctionType:
        if side == "new":
            return make_impl(self.func, self.new_code, self.new_defaults, self.new_kwdefaults)
        return make_impl(self.func, self.old_code, self.old_defaults, self.old_kwdefaults)


@dataclass(eq=False)
class BindOp:
    """Bind `name` in a module or class namespace, or a dict such as sys.modules (old value MISSING: the
    name is new)."""

    target: str
    owner: ModuleType | type | dict[str, Any]
    name: str
    old: Any
    new: Any

    def install(self, side: Side) -> None:
        value = self.new if side == "new" else self.old
        owner = self.owner
        if isinstance(owner, dict):
            if value is MISSING:
                owner.pop(self.name, None)
            else:
                owner[self.name] = value
        elif value is MISSING:
            if self.name in vars(owner):
                delattr(owner, self.name)
        else:
            setattr(owner, self.name, value)


class _Core:
    def __init__(self, binds: list[BindOp], codes: list[CodeOp]) -> None:
        self.binds = binds
        self.codes = codes
        self.state: Literal["old", "new", "dispatch"] = "old"
        self._lock = threading.Lock()

    # -- checks -----------------------------------------------------------------------------------
    def _check_codes(self, expected: Callable[[CodeOp], CodeType | None]) -> None:
        for op in self.codes:
            if op.func.__code__ is not expected(op):
                raise PatchAborted(
                    f"{op.target} was changed since the patch was staged (another patch?); nothing was changed"
                )

    def _steps_to(self, side: Side) -> list[CodeOp | BindOp]:
        # names first, then code, when installing the new side; the reverse when going back
        steps: list[CodeOp | BindOp] = [*self.binds, *self.codes]
        return steps if side == "new" else steps[::-1]

    def _run(self, steps: list[Callable[[], None]], undo: list[Callable[[], None]]) -> None:
        done = 0
        try:
            for step in steps:
                step()
                done += 1
        except BaseException as exc:
            for back in reversed(undo[:done]):
                try:
                    back()
                except Exception:  # keep undoing the rest; the first error is the one reported
                    pass
            raise PatchAborted(f"swap failed and was undone: {exc!r}") from exc

    # -- transitions ------------------------------------------------------------------------------
    def set_side(self, side: Side) -> None:
        with self._lock:
            if self.state == "dispatch":
                raise RuntimeError("a dispatch is active: end_dispatch() first")
            if self.state == side:
                raise RuntimeError(f"the {side} code is already installed")
            current: Side = self.state
            self._check_codes(lambda op: op.code_for(current))
            steps = self._steps_to(side)
            self._run(
                [partial(s.install, side) for s in steps],
                [partial(s.install, current) for s in steps],
            )
            self.state = side

    def begin_dispatch(
        self,
        prefer: Side,
        choose: Callable[[], bool],
        on_error: Callable[[BaseException], None] | None,
        monitor: CallMonitor | None = None,
    ) -> None:
        with self._lock:
            if self.state == "dispatch":
                raise RuntimeError("a dispatch is already active")
            current: Side = self.state
            self._check_codes(lambda op: op.code_for(current))
            other: Side = "old" if prefer == "new" else "new"
            for op in self.codes:
                preferred: Callable[..., Any] = op.impl(prefer)
                if monitor is not None:
                    preferred = monitor(op.impl(prefer), op.target)
                disp = Dispatcher(preferred, op.impl(other), choose, on_error)
                op.trampoline = make_trampoline(op.func, disp)
            # during a dispatch both versions run: the new names must be there (the old code ignores them)
            binds_needed = list(self.binds) if current == "old" else []
            steps: list[Callable[[], None]] = [partial(b.install, "new") for b in binds_needed]
            undo: list[Callable[[], None]] = [partial(b.install, "old") for b in binds_needed]
            for op in self.codes:
                steps.append(partial(setattr, op.func, "__code__", op.trampoline))
                undo.append(partial(op.install, current))
            self._run(steps, undo)
            self.state = "dispatch"

    def end_dispatch(self, keep: Side, *, missing_ok: bool = False) -> None:
        with self._lock:
            if self.state != "dispatch":
                if missing_ok:
                    return  # a forced transition ended it first (see force_side)
                raise RuntimeError("no dispatch is active")
            self._check_codes(lambda op: op.trampoline)
            codes: list[Callable[[], None]] = [partial(op.install, keep) for op in self.codes]
            codes_undo: list[Callable[[], None]] = [
                partial(setattr, op.func, "__code__", op.trampoline) for op in self.codes
            ]
            binds: list[Callable[[], None]] = []
            binds_undo: list[Callable[[], None]] = []
            if keep == "old":
                binds = [partial(b.install, "old") for b in reversed(self.binds)]
                binds_undo = [partial(b.install, "new") for b in reversed(self.binds)]
            self._run([*codes, *binds], [*codes_undo, *binds_undo])
            for op in self.codes:
                op.trampoline = None
            self.state = keep

    def force_side(self, side: Side) -> tuple[str, ...]:
        """Install `side` now, from the other side or from a dispatch, without any quiescence (the caller
        decided that). Names the other side added are kept (frames still running it may look them up);
        returns their targets. All or nothing, and checked like every transition."""
        with self._lock:
            if self.state == side:
                raise RuntimeError(f"the {side} code is already installed")
            undo: list[Callable[[], None]]
            if self.state == "dispatch":
                self._check_codes(lambda op: op.trampoline)
                undo = [partial(setattr, op.func, "__code__", op.trampoline) for op in self.codes]
            else:
                current: Side = self.state
                self._check_codes(lambda op: op.code_for(current))
                undo = [partial(op.install, current) for op in self.codes]
            other: Side = "new" if side == "old" else "old"
            # a bind whose `side` value is MISSING was added by the other side: keep it
            kept = [b for b in self.binds if (b.new if side == "new" else b.old) is MISSING]
            binds = [b for b in reversed(self.binds) if b not in kept]
            steps: list[Callable[[], None]] = [partial(op.install, side) for op in self.codes]
            steps += [partial(b.install, side) for b in binds]
            undo += [partial(b.install, other) for b in binds]
            self._run(steps, undo)
            for op in self.codes:
                op.trampoline = None
            self.state = side
            return tuple(b.target for b in kept)


class StagedPatch:
    """A patch ready to swap: the operations are listed in livepatch.runtime.staging's docstring.

    Concurrency: transitions (swap_in, swap_out, begin_dispatch, end_dispatch, on this object or on its
    `reversed()`) are serialised by a lock and meant for one patcher thread; patched functions may be
    called from any thread at any time, and each call runs entirely in one version (the version installed
    when its frame started). Misuse (swap_in twice, end_dispatch without begin) raises RuntimeError.
    """

    def __init__(
        self,
        patch_id: str,
        core: _Core,
        *,
        reverse: bool,
        source_bytes: int,
        modules: dict[str, ModuleType],
        skipped_modules: tuple[str, ...] = (),
    ) -> None:
        self.patch_id = patch_id
        self.skipped_modules = skipped_modules  # patched modules this process has not imported
        self._core = core
        self._reverse = reverse
        self._new: Side = "old" if reverse else "new"
        self._old: Side = "new" if reverse else "old"
        self.replaced_codes: frozenset[CodeType] = frozenset(
            op.code_for(self._old) for op in core.codes
        )
        self.function_count = len(core.codes)
        self.source_bytes = source_bytes
        self.modules = modules  # module name -> live module (for hooks)
        self.targets: tuple[str, ...] = tuple(
            dict.fromkeys([*(op.target for op in core.codes), *(b.target for b in core.binds)])
        )

    @property
    def applied(self) -> bool:
        """True when this patch's new side is installed (not dispatching)."""
        return self._core.state == self._new

    def swap_in(self) -> None:
        """Install the new code directly. All or nothing (PatchAborted, nothing changed). O(targets)."""
        self._core.set_side(self._new)

    def swap_out(self) -> None:
        """Put back exactly the objects swap_in replaced, and remove the names it added."""
        self._core.set_side(self._old)

    def bind_new_names(self) -> Callable[[], None]:
        """Bind the names this patch adds to module namespaces (and only those: a BindOp whose old value
        is MISSING, owned by a module) while the old code stays installed, and return what unbinds them
        again. The old code does not read names it does not know (the same holds during a dispatch,
        which binds every name), so a thread that is not parked sees nothing change; the transform
        hook, run between this and swap_in, may use what the patch adds (a new class, a new regex). Not a
        name of a builtin (`open = ...` at module level): the old code reads that name.
        swap_in then binds them again (the same objects), swap_out unbinds them."""
        added = [
            b
            for b in self._core.binds
            if isinstance(b.owner, ModuleType)
            and (b.old if self._old == "old" else b.new) is MISSING
            # not a new global shadowing a builtin: the old code reads that name
            and b.name not in vars(builtins)
        ]
        for b in added:
            b.install(self._new)

        def unbind() -> None:
            for b in reversed(added):
                b.install(self._old)

        return unbind

    @property
    def dispatching(self) -> bool:
        """True while dispatchers are installed (a local transition or a watch window)."""
        return self._core.state == "dispatch"

    def begin_dispatch(
        self,
        use_new: Callable[[], bool],
        on_error: Callable[[BaseException], None] | None = None,
        monitor: CallMonitor | None = None,
    ) -> None:
        """Make every target call the new implementation when use_new() is true for the calling thread,
        else the old one; on_error sees each exception escaping the new implementation (then re-raised);
        `monitor`, if given, wraps each new implementation (the watch window times calls with it).
        May start from either side installed. use_new, on_error and the wrappers run on the calling
        threads."""
        self._core.begin_dispatch(self._new, use_new, on_error, monitor)

    def end_dispatch(self, keep_new: bool, *, missing_ok: bool = False) -> None:
        """Remove the dispatchers, leaving the new code (keep_new) or exactly the old code in place.
        missing_ok: do nothing when no dispatch is active (a forced transition ended it first)."""
        self._core.end_dispatch(self._new if keep_new else self._old, missing_ok=missing_ok)

    def force_out(self) -> tuple[str, ...]:
        """Put this patch's old side back for every new call now, without quiescence, from the new side
        or from a dispatch. Frames already running the new code finish in it. Names the patch added are
        kept for them (returned). All or nothing (PatchAborted, nothing changed); RuntimeError when the
        old side is already installed."""
        return self._core.force_side(self._old)

    def reversed(self) -> StagedPatch:
        """The revert of this patch (same operations, other direction, shared state)."""
        return StagedPatch(
            self.patch_id,
            self._core,
            reverse=not self._reverse,
            source_bytes=self.source_bytes,
            modules=self.modules,
            skipped_modules=self.skipped_modules,
        )

    def __repr__(self) -> str:
        direction = "revert of " if self._reverse else ""
        return f"<StagedPatch {direction}{self.patch_id}: {self.function_count} functions, state={self._core.state}>"


def make_staged_patch(
    patch_id: str,
    binds: list[BindOp],
    codes: list[CodeOp],
    *,
    source_bytes: int,
    modules: dict[str, ModuleType],
    skipped_modules: tuple[str, ...] = (),
) -> StagedPatch:
    return StagedPatch(
        patch_id,
        _Core(binds, codes),
        reverse=False,
        source_bytes=source_bytes,
        modules=modules,
        skipped_modules=skipped_modules,
    )
