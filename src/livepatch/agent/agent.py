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
- Before the runtime sees a patch the agent checks, in order: the file structure and versions, the
  signature against the trusted keys (unsigned only with allow_unsigned=True), that the differ recorded no
  refusals, that the patch's category (and a transform hook) allows the method, and that it is not
  applied already. The runtime's stage() then checks every target's fingerprint against the live code. A
  refusal at any step changes nothing and is recorded in the history like any other attempt. The agent's
  own refusals are worded in the `livepatch` command's terms (--method, --category), since that is what
  the operator reading them types next.
- Whatever a patch does (a hook raising SystemExit included), the attempt ends as a result: recorded in
  the history, logged, and replied. A CLI that goes away mid-apply changes nothing: the patch completes
  (or aborts) and its outcome is in the history.
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
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from livepatch.agent.control import ControlServer
from livepatch.agent.mve_protocol import MVE_OPS as _MVE_OPS
from livepatch.errors import LivepatchError, PatchRefused
from livepatch.patch import lpatch
from livepatch.patch.hooks_info import defined_hooks
from livepatch.patch.model import Category, PatchSpec
from livepatch.patch.safetext import EscapeControls
from livepatch.patch.signing import PublicKey, load_public_key
from livepatch.runtime.patcher import Event, PatchResult, WatchPolicy

log = logging.getLogger("livepatch.agent")
for _logger in ("livepatch.agent", "livepatch.runtime"):  # the lines patch ids and reasons reach
    logging.getLogger(_logger).addFilter(EscapeControls())

# Which methods each category allows (DESIGN.md, "Concepts"); "auto" is always allowed: the runtime
# picks local for thread-local patches and global otherwise.
ALLOWED_METHODS: dict[Category, frozenset[str]] = {
    Category.THREAD_LOCAL: frozenset({"auto", "local", "global"}),
    Category.PROCESS: frozenset({"auto", "global"}),
    Category.DATA: frozenset({"auto", "global"}),
}
MAX_AGENT_REFUSALS = 1000  # refusals kept in the agent's part of the history
_APPLY_GRACE_S = 30.0  # on top of the patch's own timeout: staging, hooks and the swap


def _runtime() -> ModuleType:
    # The runtime's contract module (apply_patch, revert_patch, history, applied_patches, statistics),
    # imported late so that importing `livepatch` (which exports Agent) stays cheap and acyclic.
    from livepatch.runtime import patcher

    return patcher


def _preload_staging() -> None:
    # Import the staging code now, on the patcher thread, rather than inside the first apply, where the
    # import would count as staging time and hold the GIL for milliseconds while the server serves.
    import livepatch.runtime.staging  # noqa: F401


def _jsonable(obj: Any) -> Any:
    if obj is None or isinstance(obj, str | int | float | bool):
        return obj
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(_jsonable(k)): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_jsonable(v) for v in obj]
    return str(obj)


class Agent:
    """The control socket a `livepatch` command talks to, run inside the server process.

    `start()` and `stop()` are called by the server's controlling thread (not concurrently with each
    other). Between them the agent runs on its own daemon threads: one acceptor, one thread per open
    connection and one patcher thread. Nothing the agent does can raise into the server: bad requests
    and failing patches get error replies; refused or failed patches change nothing.

    trusted_keys: paths of `.pub` files (livepatch keygen). allow_unsigned: accept unsigned patches
    (development only). metrics_port: serve Prometheus metrics on 127.0.0.1:PORT (0 picks a free port,
    see `metrics_address`). socket_mode: the socket's permission bits; keep 0o600 outside tests.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        trusted_keys: Sequence[str | os.PathLike[str]] = (),
        allow_unsigned: bool = False,
        *,
        metrics_port: int | None = None,
        socket_mode: int = 0o600,
    ) -> None:
        self.socket_path = os.fspath(socket_path)
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
        self._refused: list[PatchResult] = []  # attempts refused here, before the runtime saw them
        self._lock = threading.Lock()
        self._metrics: Any = None
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            raise RuntimeError("agent already started")
        self._patcher = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="livepatch-patcher"
        )
        self._patcher.submit(_preload_staging)  # first job: before any apply
        try:
            if self.metrics_port is not None:
                from livepatch.agent.metrics import MetricsServer

                self._metrics = MetricsServer(self)
                self.metrics_address = self._metrics.start(self.metrics_port)
            self._control.start()
        except BaseException:
            self._shutdown_parts()
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
        self._shutdown_parts()

    def _shutdown_parts(self) -> None:
        self._control.stop()
        if self._patcher is not None:
            self._patcher.shutdown(wait=True, cancel_futures=True)
            self._patcher = None
        if self._metrics is not None:
            self._metrics.stop()
            self._metrics = None

    def __enter__(self) -> Agent:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- requests (called on connection threads) ------------------------------------------------------

    def handle_request(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req["op"]
        if op in _MVE_OPS:  # validated updates (livepatch.mve)
            from livepatch.agent import mve_ops

            return mve_ops.handle(self, req)
        if op == "status":
            return self.status()
        if op == "history":
            return {"ok": True, "error": None, "history": [r.to_dict() for r in self.history()]}
        patcher = self._patcher
        if patcher is None:
            return {"ok": False, "error": "the agent is stopping"}
        job = self._apply if op == "apply" else self._revert
        try:
            future = patcher.submit(job, req)
        except RuntimeError:  # shut down between the check and the submit
            return {"ok": False, "error": "the agent is stopping"}
        wait_s = req["timeout"] + _APPLY_GRACE_S + _watch_s(req)
        try:
            result, signed_by = future.result(timeout=wait_s)
        except concurrent.futures.TimeoutError:
            # The patcher thread is still busy (e.g. a hook that hangs); the outcome will be in history.
            return {
                "ok": False,
                "error": f"no outcome within {wait_s:.0f} s; see `livepatch history`",
            }
        return {
            "ok": result.ok,
            "error": None if result.ok else (result.reason or result.outcome),
            "result": result.to_dict(),
            "signed_by": signed_by,
        }

    def status(self) -> dict[str, Any]:
        rt = _runtime()
        return {
            "ok": True,
            "error": None,
            "pid": os.getpid(),
            "uid": os.geteuid(),
            "socket": self.socket_path,
            "trusted_keys": [k.key_id for k in self.trusted_keys],
            "allow_unsigned": self.allow_unsigned,
            "applied": list(rt.applied_patches()),
            "statistics": _jsonable(rt.statistics()),
        }

    def history(self) -> list[PatchResult]:
        """Every attempt (runtime history plus refusals made here), oldest first."""
        with self._lock:
            mine = list(self._refused)
        merged = list(_runtime().history()) + mine
        return sorted(merged, key=lambda r: r.events[0].t_ns if r.events else 0)

    # -- the patcher thread -----------------------------------------------------------------------------

    def _apply(self, req: dict[str, Any]) -> tuple[PatchResult, str | None]:
        t0 = time.monotonic_ns()
        method = req["method"]
        manifest = req["patch"].get("manifest")
        patch_id = str(manifest.get("patch_id", "?")) if isinstance(manifest, dict) else "?"
        try:
            pf = lpatch.from_document(req["patch"], source="the patch")
            patch_id = pf.spec.patch_id
            # a signed patch's spec carries its precompiled code, decoded only after the signature check
            spec, signed_by = pf.verified_spec(
                self.trusted_keys, allow_unsigned=self.allow_unsigned
            )
            self._check_applicable(spec, method)
        except (lpatch.PatchFileError, PatchRefused) as exc:
            return self._refuse(patch_id, "apply", method, str(exc), t0), None
        t_checked = time.monotonic_ns()
        verify_ms = (t_checked - t0) / 1e6
        watch = WatchPolicy(**req["watch"]) if req["watch"] else None
        log.info("applying patch %s (signed by %s, method %s)", patch_id, signed_by, method)
        try:
            result: PatchResult = _runtime().apply_patch(
                spec, method=method, timeout=req["timeout"], watch=watch
            )
        except LivepatchError as exc:
            return self._refuse(patch_id, "apply", method, str(exc), t0), signed_by
        # a runtime bug (or SystemExit from patch code) must not escape
        except BaseException as exc:
            log.exception("apply of patch %s failed", patch_id)
            reason = f"internal error: {type(exc).__name__}: {exc}"
            return self._refuse(patch_id, "apply", method, reason, t0, "failed"), signed_by
        timings = dict(result.timings)
        timings["signature"] = verify_ms  # the agent's own checks, before the runtime's "verify"
        result = dataclasses.replace(
            result,
            events=(
                Event("received", t0, detail="agent"),
                Event(
                    "signature-checked", t_checked, detail=f"key {signed_by or 'none (unsigned)'}"
                ),
                *result.events,
            ),
            timings=timings,
        )
        log.info("patch %s: %s %s", patch_id, result.outcome, result.reason)
        return result, signed_by

    def _revert(self, req: dict[str, Any]) -> tuple[PatchResult, None]:
        t0 = time.monotonic_ns()
        if not _runtime().applied_patches():
            # the patcher thread is the only one that applies: nothing can appear before the revert runs
            named = f"patch {req['patch_id']} is not applied and " if req["patch_id"] else ""
            reason = f"nothing to revert: {named}no patch is applied (see `livepatch history`)"
            return self._refuse(
                req["patch_id"] or "(none)", "revert", req["method"], reason, t0
            ), None
        try:
            result: PatchResult = _runtime().revert_patch(
                req["patch_id"],
                method=req["method"],
                timeout=req["timeout"],
                force=req.get("force", False),
            )
        except LivepatchError as exc:
            return self._refuse(req["patch_id"] or "?", "revert", req["method"], str(exc), t0), None
        # a runtime bug (or SystemExit from patch code) must not escape
        except BaseException as exc:
            log.exception("revert failed")
            reason = f"internal error: {type(exc).__name__}: {exc}"
            return self._refuse(
                req["patch_id"] or "?", "revert", req["method"], reason, t0, "failed"
            ), None
        log.info("revert %s: %s %s", result.patch_id, result.outcome, result.reason)
        return result, None

    def _check_applicable(self, spec: PatchSpec, method: str) -> None:
        if spec.refusals:
            first = spec.refusals[0]
            raise PatchRefused(
                f"the patch records {len(spec.refusals)} change(s) that cannot be live-patched, "
                f"first: {first}"
            )
        if method not in ALLOWED_METHODS[spec.category]:
            raise PatchRefused(
                f"a {spec.category.value} patch cannot use {method} quiescence: apply it with "
                "--method global (or --method auto); if every thread may safely switch to the new code "
                "on its own, rebuild it with `livepatch diff ... --category thread-local`"
            )
        # "auto" means local for a thread-local patch (the runtime's rule)
        local = method == "local" or (method == "auto" and spec.category is Category.THREAD_LOCAL)
        if local and "transform" in defined_hooks(spec.hooks_source):
            raise PatchRefused(
                "the patch has a transform hook, which runs while every thread is parked: "
                "apply it with --method global"
            )
        if spec.patch_id in _runtime().applied_patches():
            raise PatchRefused(
                f"patch {spec.patch_id} is already applied (to apply it again, first "
                f"`livepatch revert {spec.patch_id}`)"
            )

    def _refuse(
        self,
        patch_id: str,
        action: str,
        method: str,
        reason: str,
        t0: int,
        outcome: str = "refused",
    ) -> PatchResult:
        t1 = time.monotonic_ns()
        result = PatchResult(
            patch_id=patch_id,
            action=action,
            method=method,
            outcome=outcome,
            reason=reason,
            events=(Event("received", t0, detail="agent"), Event(outcome, t1, detail=reason)),
            timings={"verify": (t1 - t0) / 1e6, "total": (t1 - t0) / 1e6},
        )
        with self._lock:
            self._refused.append(result)
            del self._refused[:-MAX_AGENT_REFUSALS]  # bounded: only the newest are kept
        log.warning("%s of patch %s refused: %s", action, patch_id, reason)
        return result


def _watch_s(req: dict[str, Any]) -> float:
    watch = req.get("watch")
    return float(watch["window_s"]) if watch else 0.0
