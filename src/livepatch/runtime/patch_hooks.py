"""A patch author's hooks (PatchSpec.hooks_source): loaded into a fresh module, called with a HookContext.

Hook names: pre_patch (may veto by raising), transform (global only, while every managed thread is
parked), post_patch, pre_revert (may veto), untransform (a revert's transform: global only, while every
managed thread is parked, before the old code is swapped back; a forced revert refuses a patch with
one), post_revert. Every hook is optional. Each runs on a helper
thread of the patcher (hook_runner.py) and must finish within the patch's timeout: past it, it is
interrupted and the patch aborts (transform: while the server is paused, so keep them short).

Undo: a hook declares each change it makes with `ctx.record(what, undo)`, *before* making it. When the
attempt does not complete (a later hook vetoes or is interrupted, quiescence is not reached, the swap
fails), the recorded undos run newest first, and the history lists what was done and undone. An undo must
be idempotent: it may run when its change was made only in part, or not at all.
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from livepatch.errors import PatchRefused
from livepatch.patch.hooks_info import HOOK_NAMES
from livepatch.patch.model import PatchSpec


class HookFailed(Exception):
    """A hook raised an exception that is not an Exception (SystemExit, KeyboardInterrupt, ...). It is a
    failure of the hook like any other: the patcher refuses or fails the attempt and records it, instead
    of letting it end the patcher thread with no result, no history entry and no reply. Shown as the
    original exception (`SystemExit(3)`), which is what the patch author needs to see."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(repr(original))
        self.original = original

    def __repr__(self) -> str:
        return repr(self.original)


@dataclass(frozen=True)
class HookStep:
    """One change a hook declared: which hook, what it did, and how to undo it (None: nothing to undo)."""

    hook: str
    what: str
    undo: Callable[[], object] | None = None


@dataclass
class HookContext:
    """What a hook sees: the patch id and the live modules the patch touches (name -> module object).

    `record(what, undo)` declares a change (see the module docstring). Hooks run one at a time, so
    `steps` needs no lock; the patcher sets `hook` and `on_step` before each call."""

    patch_id: str
    modules: dict[str, types.ModuleType] = field(default_factory=dict)
    steps: list[HookStep] = field(default_factory=list)
    hook: str = ""
    on_step: Callable[[HookStep], None] | None = field(default=None, repr=False)

    def record(self, what: str, undo: Callable[[], object] | None = None) -> None:
        """Declare a change this hook is about to make; `undo` (no arguments, idempotent) reverts it if
        the patch attempt does not complete. Call it before making the change."""
        if undo is not None and not callable(undo):
            raise TypeError(f"undo must be callable, got {undo!r}")
        step = HookStep(self.hook, str(what), undo)
        self.steps.append(step)
        if self.on_step is not None:
            self.on_step(step)


@dataclass
class PatchHooks:
    functions: dict[str, Callable[[HookContext], Any]] = field(default_factory=dict)
    namespace: types.ModuleType | None = None

    def has(self, name: str) -> bool:
        return name in self.functions

    def call(self, name: str, ctx: HookContext) -> None:
        """Call hook `name` if defined. An Exception propagates as it is; any other BaseException
        (a hook calling sys.exit()) becomes HookFailed, so callers handle every failure as Exception."""
        fn = self.functions.get(name)
        if fn is None:
            return
        try:
            fn(ctx)
        except Exception:
            raise
        except BaseException as exc:
            raise HookFailed(exc) from exc


def load_hooks(spec: PatchSpec) -> PatchHooks:
    """Execute `spec.hooks_source` in a fresh module namespace (never in a live module).

    Raises PatchRefused when the source does not compile or its top level raises."""
    if not spec.hooks_source:
        return PatchHooks()
    module = types.ModuleType(f"livepatch_hooks_{spec.patch_id}")
    try:
        code = compile(spec.hooks_source, f"<hooks of patch {spec.patch_id}>", "exec")
        exec(code, module.__dict__)
    # SystemExit at the top level too: the patch is refused, not the thread
    except BaseException as exc:
        raise PatchRefused(
            f"the patch's hooks failed to load: {exc!r} (fix the hooks source)"
        ) from exc
    functions: dict[str, Callable[[HookContext], Any]] = {}
    for name in HOOK_NAMES:
        fn = module.__dict__.get(name)
        if fn is None:
            continue
        if not callable(fn):
            raise PatchRefused(f"the patch's hook {name} is not callable: {fn!r}")
        functions[name] = fn
    return PatchHooks(functions, module)


def context_for(spec: PatchSpec) -> HookContext:
    modules = {m.module: sys.modules[m.module] for m in spec.modules if m.module in sys.modules}
    return HookContext(spec.patch_id, modules)
