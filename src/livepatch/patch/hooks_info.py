"""Which hooks a hooks file defines, found without running it (the differ and the agent decide with it).

The runtime (livepatch.runtime.patch_hooks) executes the hooks source in a fresh module and looks up
HOOK_NAMES in it. Before that, the differ needs to know which hooks a file provides, to waive only the
refusals those hooks cover (model.COVERING_HOOKS), and the agent needs to know whether there is a
transform hook (global quiescence only). Both read the top level of the source: a hook is a name bound by
`def`/`async def`, a simple assignment (`transform = _migrate`) or an import (`from x import post_patch`).
A name bound only under `if`/`try` or through `globals()` is not seen (it is conservative: an unseen hook
waives nothing). The source is parsed, never executed; a source that does not parse defines no hook.
"""

from __future__ import annotations

import ast

# untransform: a revert's transform, run while the threads are parked (a generated class replacement
# replaces the class back: patch/transformer.py)
HOOK_NAMES = ("pre_patch", "transform", "post_patch", "pre_revert", "untransform", "post_revert")


def _bound_names(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return [stmt.name]
    if isinstance(stmt, ast.Assign):
        return [t.id for t in stmt.targets if isinstance(t, ast.Name)]
    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and stmt.value:
        return [stmt.target.id]
    if isinstance(stmt, ast.Import | ast.ImportFrom):
        return [(a.asname or a.name).split(".")[0] for a in stmt.names]
    return []


def defined_hooks(source: str | None) -> frozenset[str]:
    """The hook names (of HOOK_NAMES) bound at the top level of `source`; empty for None or bad source."""
    if not source or not isinstance(source, str):
        return frozenset()
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return frozenset()
    names = {name for stmt in tree.body for name in _bound_names(stmt)}
    return frozenset(names & set(HOOK_NAMES))
