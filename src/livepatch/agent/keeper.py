"""The agent's memory across restarts: keeps the state directory in step with the runtime, and restores
the stack when the server starts again.

Theory of operation
- open() (Agent.start, before the control socket listens): lock the directory, read the stack and the
  starts (a corrupt file is a StateError: the agent does not start, the message names the file), and
  number this start.
- restore() re-verifies and re-applies the stack through the agent's own apply (signature, the runtime's
  verification and fingerprint checks; restore.py decides what is included), on the agent's patcher
  thread, while the caller waits: the server has not served anyone yet. What each patch became is a
  RestoreNote of this start; a patch that is neither re-applied nor included makes the agent refuse to
  start (StalePatches, on_stale="refuse", after undoing what this restore re-applied) or start without it
  and everything stacked after it, with an error-level log line (on_stale="warn").
- sync() writes what changed: this start's new attempts (the runtime's attempts since the agent started,
  read with a cursor: runtime.history_since) appended to its journal, the last of them with the stack
  (from runtime.applied_patches(); documents are remembered by remember() when an apply succeeds) when
  it changed: one fdatasync per transition (state_dir.py). The agent calls it after every apply and
  revert, on every status and history request, when a watch window ends, and at stop; so a rollback
  made by a watch window reaches the disk too. This start's newest attempts (at most MAX_START_HISTORY,
  and MAX_START_HISTORY_BYTES of JSON) are kept in memory for `history`, encoded (bytes: nothing for the
  garbage collector to walk); older ones, and any the runtime dropped before a sync saw them, are
  counted (`dropped`).
- stack.json and the start's snapshot are rewritten (the journal emptied) when the journal passes
  MAX_START_HISTORY lines or MAX_START_HISTORY_BYTES, at the first write after the restore or after a
  write error, at close(), and for earlier starts by the next open() (which also clears a torn last
  line away).
- A stacked patch the runtime of this process still has applied (an agent restarted in-process, a
  promoted follower forked from its leader) is kept as it is, neither re-applied nor classified.
- Limits: a patch applied in-process without the agent (runtime.apply_patch directly) has no document
  and is not kept; the log says so once per patch.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from livepatch.agent import protocol
from livepatch.agent import state_dir as sd
from livepatch.errors import LivepatchError
from livepatch.patch import lpatch
from livepatch.patch.model import PatchSpec
from livepatch.patch.signing import PublicKey
from livepatch.runtime import core as runtime
from livepatch.runtime.lifecycle import PatchResult

log = logging.getLogger("livepatch.agent")

ON_STALE = ("refuse", "warn")

ApplyFn = Callable[[protocol.ApplyRequest], protocol.ResultReply]
RevertFn = Callable[[protocol.RevertRequest], protocol.ResultReply]


class StalePatches(LivepatchError):
    """The server runs code that neither a stacked patch's old nor its new code is (or a stacked patch no
    longer verifies), and the agent was told to refuse to start."""


class StateKeeper:
    """One agent's state directory. open()/restore()/close() from the agent's controlling thread;
    remember() from the patcher thread; sync() and view() from any thread (a lock orders them)."""

    def __init__(self, path: str | os.PathLike[str], on_stale: str = "refuse") -> None:
        if on_stale not in ON_STALE:
            raise ValueError(f"on_stale must be one of {ON_STALE}, not {on_stale!r}")
        self.dir = sd.StateDir(path)
        self.on_stale = on_stale
        self._lock = threading.Lock()
        self._stored: dict[str, sd.StoredPatch] = {}  # patch id -> how it is stored (applied ones)
        self._unstored: set[str] = set()  # applied ids we have no document for (logged once)
        self._earlier: list[sd.StartRecord] = []
        self._start: sd.StartRecord | None = None  # this start, without its history (kept below)
        # this start's history: the newest attempts (to_dict()), how many came before them, the runtime
        # history's cursor, attempts not on disk yet, journal lines since the last snapshot
        self._entries: deque[bytes] = deque()  # canonical JSON of each kept attempt
        self._entries_bytes = 0
        self._journal_bytes = 0
        self._count = 0  # attempts of this start so far, dropped ones included
        self._cursor = 0
        self._unsaved: list[tuple[int, dict[str, Any]]] = []
        self._journal_lines = 0
        self._snapshot_due = (
            True  # the first write is a snapshot; so is the next one after an error
        )
        self._written_stack: tuple[str, ...] | None = None
        self._restored = False  # nothing is written before the restore succeeded: a refused start
        # leaves the stored stack as it was, for the operator to fix

    @property
    def restore_notes(self) -> tuple[sd.RestoreNote, ...]:
        return self._start.restore if self._start is not None else ()

    @property
    def start_number(self) -> int:
        return self._start.start if self._start is not None else 0

    # -- start --------------------------------------------------------------------------------------------

    def open(self) -> list[tuple[sd.StoredPatch, dict[str, Any]]]:
        """Lock and read the directory; return the stored stack with each patch's document."""
        self.dir.lock()
        try:
            stack = self.dir.load_stack()
            docs = [(s, self.dir.load_document(s)) for s in stack]
            self.dir.trim_starts(sd.MAX_STARTS - 1)
            self._earlier = self.dir.load_starts()
        except BaseException:
            self.dir.unlock()
            raise
        # Earlier starts' journals are folded into stack.json and their snapshots now (load_starts read
        # them): the files stay small, and a torn last line is warned about once.
        try:
            self.dir.fold_journals(self._earlier)
        except OSError as exc:
            log.error("cannot compact the state directory %s: %s", self.dir.path, exc)
        # The runtime's history so far belongs to earlier starts (an agent restarted in-process, or the
        # leader a promoted follower was forked from), except a validated update the promoted follower
        # adopted and no start has stored yet: that one is this start's (livepatch.mve, adopt_applied).
        stored_ids = {s.patch_id for s in stack}
        applied = set(runtime.applied_patches())
        before, self._cursor = runtime.history_since(0)
        for _, r in before:
            if r.method == "validated" and r.patch_id in applied and r.patch_id not in stored_ids:
                self._add(r.to_dict())
        self._start = sd.StartRecord(self.dir.next_start(), os.getpid(), time.time())
        return docs

    def restore(
        self,
        stored: list[tuple[sd.StoredPatch, dict[str, Any]]],
        apply: ApplyFn,
        revert: RevertFn,
        trusted_keys: tuple[PublicKey, ...],
        allow_unsigned: bool,
    ) -> None:
        """Bring the stored stack back (module doc). Raises StalePatches (on_stale="refuse")."""
        from livepatch.agent import restore as plan

        assert self._start is not None
        notes: list[sd.RestoreNote] = []
        # An agent restarted inside the same process (or in a promoted follower, forked from the
        # leader): what the runtime still has applied stays as it is.
        in_process = set(runtime.applied_patches())
        for s, _ in stored:
            if s.patch_id in in_process:
                self._stored[s.patch_id] = s
                notes.append(sd.RestoreNote(s.patch_id, sd.KEPT, "still applied in this process"))
        todo = [(s, doc) for s, doc in stored if s.patch_id not in in_process]
        specs: list[PatchSpec] = []
        stale: sd.RestoreNote | None = None
        for s, doc in todo:
            try:
                pf = lpatch.from_document(doc, source=f"the stored patch {s.patch_id}")
                pf.verified_spec(trusted_keys, allow_unsigned=allow_unsigned)
            except LivepatchError as exc:
                stale = sd.RestoreNote(s.patch_id, sd.STALE, f"it no longer verifies: {exc}")
                break
            specs.append(pf.spec)
        plan.import_targets(specs)
        included = plan.included_prefix(specs)
        for s, _ in todo[:included]:
            notes.append(
                sd.RestoreNote(s.patch_id, sd.INCLUDED, "its new code is what this process runs")
            )
        reapplied: list[str] = []
        for s, doc in todo[included : len(specs)]:
            reply = apply(_request(s, doc))
            if not reply.ok:
                stale = sd.RestoreNote(
                    s.patch_id,
                    sd.STALE,
                    "this process runs neither the code it was made for nor the code it brings "
                    f"({reply.error})",
                )
                break
            self._stored[s.patch_id] = s
            reapplied.append(s.patch_id)
            notes.append(sd.RestoreNote(s.patch_id, sd.REAPPLIED, "before serving"))
        if stale is not None:
            notes.append(stale)
            at = [s.patch_id for s, _ in todo].index(stale.patch_id)
            notes.extend(
                sd.RestoreNote(s.patch_id, sd.DROPPED, f"stacked after {stale.patch_id}")
                for s, _ in todo[at + 1 :]
            )
        self._start = _replace(self._start, restore=tuple(notes))
        if stale is not None and self.on_stale == "refuse":
            for patch_id in reversed(reapplied):  # leave the process as it was
                revert(protocol.RevertRequest(patch_id, "global", 30.0))
            self._start = _replace(self._start, outcome=sd.REFUSED)
            self._write_start()
            raise StalePatches(_stale_message(self.dir.path, stale, notes))
        if stale is not None:
            log.error(
                "STALE PATCHES DROPPED: %s; the server starts WITHOUT %s (history: "
                "`livepatch history`; to refuse instead: --on-stale-patches refuse)",
                _stale_message(self.dir.path, stale, notes),
                ", ".join(n.patch_id for n in notes if n.outcome in (sd.STALE, sd.DROPPED)),
            )
        for n in notes:
            if n.outcome in (sd.REAPPLIED, sd.INCLUDED):
                log.info("restore: patch %s %s (%s)", n.patch_id, n.outcome, n.detail)
        self._restored = True
        self.sync(force=True)

    def remember(self, req: protocol.ApplyRequest, result: PatchResult) -> None:
        """Keep the document of a patch the agent just applied (patcher thread)."""
        if not result.ok:
            return
        with self._lock:
            sha = self.dir.save_document(req.patch)
            self._stored[result.patch_id] = sd.StoredPatch(
                result.patch_id,
                sha,
                req.method,
                req.timeout,
                None if req.watch is None else req.watch.to_wire(),
                self.start_number,
            )

    # -- writing ------------------------------------------------------------------------------------------

    def _add(self, entry: dict[str, Any]) -> None:
        encoded = sd.canonical(entry)
        self._entries.append(encoded)
        self._entries_bytes += len(encoded)
        while len(self._entries) > 1 and (
            len(self._entries) > sd.MAX_START_HISTORY
            or self._entries_bytes > sd.MAX_START_HISTORY_BYTES
        ):
            self._entries_bytes -= len(self._entries.popleft())
        self._unsaved.append((self._count, entry))
        self._count += 1

    def _take_new_attempts(self) -> None:
        new, nxt = runtime.history_since(self._cursor)
        missed = nxt - self._cursor - len(new)  # dropped by the runtime before this sync saw them
        if missed:
            log.warning(
                "%d patch attempts were made too fast to be kept in the state directory", missed
            )
            self._count += missed
        for _, r in new:
            self._add(r.to_dict())
        self._cursor = nxt

    def _record(self) -> sd.StartRecord:
        assert self._start is not None
        return _replace(
            self._start,
            history=tuple(json.loads(e) for e in self._entries),
            dropped=self._count - len(self._entries),
        )

    def sync(self, *, force: bool = False) -> None:
        """Write the stack if it changed, and append this start's new attempts to its journal (a snapshot
        instead when it is due, or `force`). Never raises: a full disk must not take the server down
        (the log says what was not kept)."""
        with self._lock:
            if self._start is None or not self._restored:
                return
            applied = tuple(runtime.applied_patches())
            self._take_new_attempts()
            if applied == self._written_stack and not self._unsaved and not force:
                return
            changed = applied != self._written_stack
            try:
                if (
                    force
                    or self._snapshot_due
                    or self._journal_lines >= sd.MAX_START_HISTORY
                    or self._journal_bytes >= sd.MAX_START_HISTORY_BYTES
                    or (changed and not self._unsaved)  # no line to carry the stack
                ):
                    self._snapshot(applied)
                else:
                    lines: list[tuple[int, dict[str, Any], list[sd.StoredPatch] | None]] = [
                        (n, e, None) for n, e in self._unsaved
                    ]
                    if changed:
                        n, e, _ = lines[-1]
                        lines[-1] = (n, e, self._stack_of(applied))
                    self.dir.append_journal(self._start.start, lines)
                    self._journal_lines += len(lines)
                    self._journal_bytes += sum(len(sd.canonical(e)) for _, e, _ in lines)
                self._written_stack = applied
                self._unsaved = []
            except OSError as exc:
                self._snapshot_due = True  # never append after a line that may be half written
                log.error(
                    "cannot write the state directory %s: %s; the applied stack may not be "
                    "re-applied after a restart",
                    self.dir.path,
                    exc,
                )

    def _stack_of(self, applied: tuple[str, ...]) -> list[sd.StoredPatch]:
        stack = []
        for patch_id in applied:
            s = self._stored.get(patch_id)
            if s is None:
                if patch_id not in self._unstored:
                    self._unstored.add(patch_id)
                    log.warning(
                        "patch %s was applied without the agent: it is not kept for restarts",
                        patch_id,
                    )
                continue
            stack.append(s)
        return stack

    def _snapshot(self, applied: tuple[str, ...]) -> None:
        """stack.json as of this start's newest attempt, this start's record with its newest attempts,
        then an empty journal (raises OSError)."""
        assert self._start is not None
        self.dir.save_stack(self._stack_of(applied), (self._start.start, self._count - 1))
        self.dir.compact_start(self._record())
        self._journal_lines = 0
        self._journal_bytes = 0
        self._snapshot_due = False

    def _write_start(self) -> None:
        assert self._start is not None
        try:
            self.dir.save_start(self._record())
        except OSError as exc:
            log.error("cannot write the state directory %s: %s", self.dir.path, exc)

    def close(self) -> None:
        self.sync()
        with self._lock:
            if self._start is not None and self._restored and not self._snapshot_due:
                try:
                    # fold the journal in: the next start reads one file
                    self._snapshot(tuple(runtime.applied_patches()))
                except OSError as exc:
                    log.error("cannot write the state directory %s: %s", self.dir.path, exc)
        self.dir.unlock()

    # -- reading ------------------------------------------------------------------------------------------

    def view(self) -> tuple[list[sd.StartRecord], list[int]]:
        """Every start (earlier ones with their history, this one with its history so far) and, for the
        history reply, the start number of each entry of the concatenated histories."""
        self.sync()
        with self._lock:
            starts = [*self._earlier, *([self._record()] if self._start is not None else [])]
        return starts, [s.start for s in starts for _ in s.history]


def _request(s: sd.StoredPatch, doc: dict[str, Any]) -> protocol.ApplyRequest:
    watch = None
    if s.watch is not None:
        watch = protocol.WatchRequest(**s.watch)
    return protocol.ApplyRequest(doc, s.method, s.timeout, watch)


def _replace(record: sd.StartRecord, **changes: Any) -> sd.StartRecord:
    import dataclasses

    return dataclasses.replace(record, **changes)


def _stale_message(
    path: os.PathLike[str], stale: sd.RestoreNote, notes: list[sd.RestoreNote]
) -> str:
    dropped = [n.patch_id for n in notes if n.outcome == sd.DROPPED]
    after = f" (and {len(dropped)} patch(es) stacked after it)" if dropped else ""
    return (
        f"stacked patch {stale.patch_id}{after} cannot be restored: {stale.detail}. Deploy the code "
        "the stack was made for or the code it brings, or start with --on-stale-patches warn to start "
        f"without it, or move {path}/stack.json away"
    )
