"""Which stacked patches a restarted server already runs, and which it must get again.

Theory of operation
- The stack p1..pn was applied on top of some code V0; after pi the program ran Vi. A restarted process
  runs whatever is on disk now. `included_prefix` finds the largest k such that the live code is Vk as
  far as patches p1..pk can tell: every function one of them changed has the fingerprint of the last of
  them that changed it (`new_fingerprint`), and every definition one of them added exists. Then p1..pk
  are *included* (their new code is on disk) and pk+1..pn must be re-applied, in order, through the
  agent's ordinary apply (signature, verification, the runtime's fingerprint check of the old code):
  the first one refused there is *stale*: the process runs neither its old nor its new code.
- k = 0 is always possible: the usual restart on the old code re-applies everything; a restart on the
  newest code includes everything; a third version makes the first re-apply refuse.
- A patch that changes no function and adds nothing (class-level values only) gives no evidence: it
  counts as included when the patches around it do. The re-apply of the next patch still checks its own
  old code.
- The modules the stack names are imported first (`import_targets`): staging skips a module the process
  has not imported, and a later import would read the old code from disk. A module that cannot be
  imported is left out; the patch that needs it is then refused as usual.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from collections.abc import Sequence

from livepatch.patch.model import ChangeKind, PatchSpec, TargetChange
from livepatch.patch.patchability import FUNCTION_KINDS
from livepatch.runtime.resolve import ResolveError, resolve_function, resolve_owner
from livepatch.runtime.staging import _location, live_fingerprint

log = logging.getLogger("livepatch.agent")


def import_targets(specs: Sequence[PatchSpec]) -> None:
    """Import every module the specs patch that is not loaded yet (on the calling thread)."""
    for spec in specs:
        for mp in spec.modules:
            if mp.module in sys.modules:
                continue
            try:
                if _adds(mp.changes) and importlib.util.find_spec(mp.module) is None:
                    continue  # a module the patch adds does not exist on the old code
                importlib.import_module(mp.module)
            except Exception as exc:  # the module's own code failed: the patch will be refused
                log.warning("restore: cannot import %s: %s: %s", mp.module, type(exc).__name__, exc)


def _adds(changes: Sequence[TargetChange]) -> bool:
    return bool(changes) and all(c.kind is ChangeKind.ADDED for c in changes)


def _live_fp(module: str, change: TargetChange) -> str | None:
    """The fingerprint of the live function `change` names, or None when it cannot be found."""
    mod = sys.modules.get(module)
    if mod is None:
        return None
    where = _location(change)
    try:
        func = resolve_function(mod, where.owner, where.name, where.code_qualname, where.accessor)
    except ResolveError:
        return None
    return live_fingerprint(func.__code__)


def _exists(module: str, qualname: str) -> bool:
    mod = sys.modules.get(module)
    if mod is None:
        return False
    owner, _, name = qualname.rpartition(".")
    try:
        ns = resolve_owner(mod, owner)
    except ResolveError:
        return False
    return name in vars(ns)


def included_prefix(specs: Sequence[PatchSpec]) -> int:
    """The largest k such that the live code is what p1..pk (specs[:k]) produced (see the module doc)."""
    best = 0
    for k in range(1, len(specs) + 1):
        if _runs_version(specs[:k]):
            best = k
    return best


def _runs_version(prefix: Sequence[PatchSpec]) -> bool:
    expected: dict[tuple[str, str], TargetChange] = {}  # target -> the change that last touched it
    added: dict[tuple[str, str], bool] = {}  # definition -> still added after the prefix
    for spec in prefix:
        for mp in spec.modules:
            for c in mp.changes:
                key = (mp.module, c.qualname)
                if c.kind is ChangeKind.CHANGED and c.definition in FUNCTION_KINDS:
                    expected[key] = c
                    added.pop(key, None)
                elif c.kind is ChangeKind.ADDED:
                    added[key] = True
                    expected.pop(key, None)
                elif c.kind is ChangeKind.REMOVED:
                    expected.pop(key, None)
                    added.pop(key, None)
    for (module, _), c in expected.items():
        if c.new_fingerprint is not None and _live_fp(module, c) != c.new_fingerprint:
            return False
    return all(_exists(module, qualname) for module, qualname in added)
