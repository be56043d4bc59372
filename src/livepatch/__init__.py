"""livepatch: zero-downtime code updates for running Python servers.

The public surface. Everything else lives in private implementation modules (STYLE.md §12);
tests/test_public_api.py checks that each name here is exported once.

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
    history()                               every patch attempt with its outcome and timings
"""

from livepatch.agent import Agent
from livepatch.errors import LivepatchError, PatchAborted, PatchRefused, PatchVetoed
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
from livepatch.runtime.patcher import (
    Event,
    HookContext,
    PatchResult,
    WatchPolicy,
    applied_patches,
    apply_patch,
    history,
    revert_patch,
)
from livepatch.runtime.registry import RuntimeStatistics
from livepatch.runtime.threads import (
    Priority,
    activate,
    add_wakeup_hook,
    deactivate,
    managed_thread,
    quiescence_point,
    remove_wakeup_hook,
    set_priority,
    statistics,
    transition_flag,
)

__all__ = [
    "Agent",
    "Category",
    "ChangeKind",
    "DefinitionKind",
    "Event",
    "HookContext",
    "LivepatchError",
    "ModulePatch",
    "PatchAborted",
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
