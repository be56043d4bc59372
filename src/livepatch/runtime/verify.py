"""The one verification step: may this patch (or this revert) be attempted, here, now, with this method?

Owned by the runtime, called by the agent before it hands a patch over (so its refusal is recorded with
the agent's "received" event) and by the patcher at the start of every attempt (so in-process callers get
the same rules). Every rule here raises PatchRefused with the text an operator reads; the texts are in
the `livepatch` command's terms (--method, --category), since that is what the operator types next.
Nothing here changes anything; the patcher translates the error into the attempt's outcome.

The rules, in the order they are checked:
- who may call: not a managed thread (it would wait for itself to park);
- the method is one of METHODS, and the patch's category allows it (ALLOWED_METHODS);
- the patch carries no refusals (the differ recorded changes that cannot be live-patched);
- a transform hook needs global quiescence;
- the patch is not applied already; the timeout is positive;
- a revert names an applied patch (or any is applied).
Whether each target's code is the code the patch expects is checked by staging (staging.py: it needs the
live objects); which changes are patchable at all is patch/patchability.py's.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterable

from livepatch.errors import PatchRefused
from livepatch.patch.model import Category, PatchSpec

METHODS = ("auto", "global", "local")  # the wire's and the API's spelling

# Which methods each category allows (DESIGN.md, "Concepts"); "auto" is always allowed: it means local
# for a thread-local patch and global otherwise (resolve_method).
ALLOWED_METHODS: dict[Category, frozenset[str]] = {
    Category.THREAD_LOCAL: frozenset({"auto", "local", "global"}),
    Category.PROCESS: frozenset({"auto", "global"}),
    Category.DATA: frozenset({"auto", "global"}),
}


def check_caller(what: str, *, managed: bool) -> None:
    """The patcher thread must never be a managed thread: it would wait for itself to park (or for a
    transition that waits for it). `managed`: whether the caller is a managed thread of the runtime that
    would run the transition (Runtime.is_managed())."""
    if managed:
        raise PatchRefused(
            f"{what} was called from a managed thread ({threading.current_thread().name}); "
            "call it from a thread that is not managed (e.g. the agent's patcher thread)"
        )


def resolve_method(method: str, category: Category) -> str:
    """ "global" or "local" for `method` ("auto" | "global" | "local") and a patch of `category`."""
    if method not in METHODS:
        raise PatchRefused(f"unknown method {method!r} (use one of {', '.join(METHODS)})")
    if method not in ALLOWED_METHODS[category]:
        raise PatchRefused(
            f"a {category.value} patch cannot use {method} quiescence: apply it with "
            "--method global (or --method auto); if every thread may safely switch to the new code "
            "on its own, rebuild it with `livepatch diff ... --category thread-local`"
        )
    if method == "auto":
        return "local" if category is Category.THREAD_LOCAL else "global"
    return method


def check_refusals(spec: PatchSpec) -> None:
    """A patch that carries the differ's refusals is never applied (staging checks it too, for callers
    that stage a spec directly)."""
    if spec.refusals:
        raise PatchRefused(
            f"patch {spec.patch_id} was built with refusals: it records {len(spec.refusals)} "
            f"change(s) that cannot be live-patched, first: {spec.refusals[0]}"
        )


def check_hooks(method: str, hooks: Iterable[str]) -> None:
    """`method` is the resolved one; `hooks` the hook names the patch defines."""
    if method == "local" and "transform" in set(hooks):
        raise PatchRefused(
            "the patch has a transform hook, which runs while every thread is parked: "
            "apply it with --method global"
        )


def verify_apply(
    spec: PatchSpec,
    method: str,
    *,
    timeout: float,
    applied: Collection[str],
    hooks: Iterable[str],
    managed: bool,
) -> str:
    """Every rule of an apply request; returns the resolved method ("global" | "local").

    `applied`: ids of the applied patches; `hooks`: the hook names the patch defines; `managed`: whether
    the caller is a managed thread (check_caller)."""
    check_caller("apply_patch", managed=managed)
    resolved = resolve_method(method, spec.category)
    check_refusals(spec)
    check_hooks(resolved, hooks)
    if spec.patch_id in applied:
        raise PatchRefused(
            f"patch {spec.patch_id} is already applied (to apply it again, first "
            f"`livepatch revert {spec.patch_id}`)"
        )
    if timeout <= 0:
        raise PatchRefused(f"timeout must be positive, got {timeout}")
    return resolved


def verify_revert(patch_id: str | None, *, applied: Collection[str], managed: bool) -> None:
    """The rules of a revert request that need no more than the ids of the applied patches (which entry
    can be reverted, given later patches, is the patcher's: it needs the stack)."""
    check_caller("revert_patch", managed=managed)
    if not applied:
        named = f"patch {patch_id} is not applied and " if patch_id else ""
        raise PatchRefused(
            f"nothing to revert: {named}no patch is applied (see `livepatch history`)"
        )
