"""livepatch: zero-downtime code updates for running Python servers.

The public surface. Everything else lives in private implementation modules (STYLE.md §12);
tests/test_public_api.py checks that each name here is exported once and loads (lazily) from the module
type checkers see.

Inside a server:
    quiescence_point()                      where the thread holds no lock and no transaction
    transition_flag()                       hot loops: `if flag.request is not None: quiescence_point()`
    managed_thread(role, priority)          register the calling thread for its lifetime
    activate() / deactivate()               for threads parked outside their work loop
    set_priority(Priority.X)                thread pools: LOW executing < MEDIUM waiting < CRITICAL listener
    add_wakeup_hook(fn)                     wake threads blocked in I/O while a patch waits for quiescence
    statistics()                            who runs which generation, in which state, at which priority
    Agent(socket_path, trusted_keys)        the control socket the `livepatch` command talks to

In-process patching (the agent and the CLI sit on these):
    patch_from_sources({...})               diff old/new source of modules into a PatchSpec
    apply_patch(spec, method=...)           verify, stage, quiesce, swap; returns a PatchResult
    revert_patch(patch_id=None)             undo the newest (or a named) patch
    history()                               the newest patch attempts (refusals included) with their Outcome
"""

from __future__ import annotations

import importlib

# Every public name is imported on first use (PEP 562 module __getattr__), then cached as a plain module
# attribute: `import livepatch` inside a server costs about a millisecond (docs/performance.md, "Import
# time"), and a server pays only for what it touches: the quiescence-point facade (the runtime's thread
# registry), the Agent (cryptography, the control socket), the differ (the AST machinery) each on first
# use. `from livepatch import Agent` works as usual.
_LAZY: dict[str, str] = {
    "Agent": "livepatch.agent.agent",
    "LivepatchError": "livepatch.errors",
    "PatchAborted": "livepatch.errors",
    "PatchFailed": "livepatch.errors",
    "PatchRefused": "livepatch.errors",
    "PatchVetoed": "livepatch.errors",
    "patch_from_sources": "livepatch.patch.diff",
    "Category": "livepatch.patch.model",
    "ChangeKind": "livepatch.patch.model",
    "DefinitionKind": "livepatch.patch.model",
    "ModulePatch": "livepatch.patch.model",
    "PatchSpec": "livepatch.patch.model",
    "Refusal": "livepatch.patch.model",
    "TargetChange": "livepatch.patch.model",
    "Event": "livepatch.runtime.results",
    "HookContext": "livepatch.runtime.patch_hooks",
    "Outcome": "livepatch.runtime.lifecycle",
    "PatchResult": "livepatch.runtime.results",
    "WatchPolicy": "livepatch.runtime.watch",
    "applied_patches": "livepatch.runtime.core",
    "apply_patch": "livepatch.runtime.core",
    "history": "livepatch.runtime.core",
    "revert_patch": "livepatch.runtime.core",
    "RuntimeStatistics": "livepatch.runtime.results",
    "Priority": "livepatch.runtime.threads",
    "activate": "livepatch.runtime.core",
    "add_wakeup_hook": "livepatch.runtime.core",
    "deactivate": "livepatch.runtime.core",
    "managed_thread": "livepatch.runtime.core",
    "quiescence_point": "livepatch.runtime.core",
    "remove_wakeup_hook": "livepatch.runtime.core",
    "set_priority": "livepatch.runtime.core",
    "statistics": "livepatch.runtime.core",
    "transition_flag": "livepatch.runtime.core",
}

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing alone costs milliseconds
if (
    TYPE_CHECKING
):  # the same names, for type checkers (tests/test_public_api.py keeps both lists equal)
    from typing import Any

    from livepatch.agent.agent import Agent
    from livepatch.errors import (
        LivepatchError,
        PatchAborted,
        PatchFailed,
        PatchRefused,
        PatchVetoed,
    )
    from livepatch.patch.diff import patch_from_sources
    from livepatch.patch.model import (
        Category,
        ChangeKind,
        DefinitionKind,
        ModulePatch,
        PatchSpec,
        Refusal,
        TargetChange,
    )
    from livepatch.runtime.core import (
        activate,
        add_wakeup_hook,
        applied_patches,
        apply_patch,
        deactivate,
        history,
        managed_thread,
        quiescence_point,
        remove_wakeup_hook,
        revert_patch,
        set_priority,
        statistics,
        transition_flag,
    )
    from livepatch.runtime.lifecycle import Outcome
    from livepatch.runtime.patch_hooks import HookContext
    from livepatch.runtime.results import Event, PatchResult, RuntimeStatistics
    from livepatch.runtime.threads import Priority
    from livepatch.runtime.watch import WatchPolicy


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'livepatch' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "Agent",
    "Category",
    "ChangeKind",
    "DefinitionKind",
    "Event",
    "HookContext",
    "LivepatchError",
    "ModulePatch",
    "Outcome",
    "PatchAborted",
    "PatchFailed",
    "PatchRefused",
    "PatchResult",
    "PatchSpec",
    "PatchVetoed",
    "Priority",
    "Refusal",
    "RuntimeStatistics",
    "TargetChange",
    "WatchPolicy",
    "activate",
    "add_wakeup_hook",
    "applied_patches",
    "apply_patch",
    "deactivate",
    "history",
    "managed_thread",
    "patch_from_sources",
    "quiescence_point",
    "remove_wakeup_hook",
    "revert_patch",
    "set_priority",
    "statistics",
    "transition_flag",
]
