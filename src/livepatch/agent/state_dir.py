"""The agent's state directory: the applied stack and the history, kept across restarts.

Layout (docs/cli.md, "State directory", documents it for operators):

    STATE_DIR/                      mode 0700, created on first use
      lock                          flock()ed by the one agent that uses the directory
      stack.json                    the applied stack, oldest first, as of a journal position (below)
      patches/<sha256>.lpatch       the .lpatch document of each stacked patch, named by its hash
      starts/<NNNNNN>.json          one per start of the server: its restore and its history (a snapshot)
      starts/<NNNNNN>.journal       that start's attempts since its snapshot, one JSON line each (appended)

Every JSON file is an envelope `{"format": "livepatch-state", "kind": K, "version": 1, "body": {...},
"sha256": H}` where H is the SHA-256 of the body's canonical JSON (sorted keys, no whitespace). Writes are
atomic: a temporary file in the same directory, fsync, rename over the old file, fsync of the directory;
a crash leaves the old file or the new one, never half of either.

The history and the stack are appended, not rewritten: each attempt is one line of its start's journal,
`{"entry": PatchResult.to_dict(), "n": N, "stack": [StoredPatch...], "sha256": H}` (N numbers the start's
attempts from 0; "stack", the stack after the attempt, only when the attempt changed it; H is the
SHA-256 of the canonical JSON of [N, entry, stack or null]), written and fdatasync()ed as it happens: one
sync per transition. (Rewriting the whole history at every transition grew with the run: a stress run
on main did 983 transitions in 5 minutes, the start file at 876 KB; rewriting stack.json and the patch
document atomically cost four more syncs per apply, ~45 ms per stress cycle at load 40.) The snapshot
(the start file) keeps the newest MAX_START_HISTORY attempts (at most MAX_START_HISTORY_BYTES of them)
and how many older ones were dropped;
stack.json keeps the stack as of a journal position `as_of` = [start, N]. The stack in force is the one
of the newest journal line past `as_of`, else stack.json's. When the journal passes MAX_START_HISTORY
lines or MAX_START_HISTORY_BYTES, when the agent stops, and for earlier starts when the next start opens the directory, stack.json
and the snapshot are rewritten (atomic, as above) and the journal emptied. A crash in between leaves
lines they already have: recognised by their N (below the snapshot's dropped + kept; at or before
`as_of`) and skipped. A torn last line (a crash in the middle of an append) is ignored with a warning;
any other bad line is a StateError like a corrupt file. Patch documents no entry names are deleted when
stack.json is rewritten, not at each revert (re-applying the same patch then writes nothing more).

What the checks catch, and what they do not: a torn, truncated, hand-edited or otherwise corrupt file
(wrong JSON, wrong hash, wrong shape) is a StateError whose message names the file and what to do; never
a traceback. The hash is not a signature: whoever can write the directory can rewrite a file and its
hash, and so drop patches or edit the history, but cannot make the server run code it does not trust,
because every stacked patch is verified again at restore against the agent's trusted keys (an unsigned
patch is re-applied only by an agent started with allow_unsigned). Keep the directory as private as the
control socket.

Limits: MAX_STACK patches, MAX_STARTS start files (older ones are deleted at start, oldest first),
MAX_START_HISTORY attempts kept per start, MAX_STATE_FILE_BYTES per JSON or journal file, a stacked
patch file at most patch.limits.MAX_FILE_BYTES.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livepatch.errors import LivepatchError
from livepatch.patch.limits import MAX_FILE_BYTES, JSONLimitError, loads_json
from livepatch.runtime.lifecycle import PatchResult

FORMAT = "livepatch-state"
VERSION = 1
MAX_STACK = (
    256  # patches in the stack (the runtime has no lower bound; this one keeps restarts fast)
)
MAX_STARTS = 100  # start files kept; the oldest are deleted when a new start begins
MAX_STATE_FILE_BYTES = 64 * 1024 * 1024  # stack.json or one start file (a long history with events)
# attempts kept per start (as the runtime keeps in memory), and at most this much of their JSON (an
# attempt of sqlserver's pool, with an event per worker: ~23 KB); older ones are counted
MAX_START_HISTORY = 1000
MAX_START_HISTORY_BYTES = 8 * 1024 * 1024

log = logging.getLogger("livepatch.agent")

# What became of a stacked patch at a restart (RestoreNote.outcome).
REAPPLIED = "re-applied"  # its old code was running: applied again before the server served anyone
INCLUDED = "included"  # its new code was already running (on disk): dropped from the stack
KEPT = "kept"  # still applied in this very process (an agent restarted in-process)
STALE = "stale"  # neither its old nor its new code runs, or it no longer verifies
DROPPED = "dropped"  # not re-applied because an earlier patch of the stack could not be
RESTORE_OUTCOMES = (REAPPLIED, INCLUDED, KEPT, STALE, DROPPED)

SERVING = "serving"  # the start's outcome: the server went on to serve
REFUSED = "refused"  # the agent refused to start (stale patches, on_stale="refuse")


class StateError(LivepatchError):
    """The state directory cannot be used: unreadable, corrupt, in use by another agent. The message says
    which file and what to do."""


@dataclass(frozen=True)
class StoredPatch:
    """One patch of the stack: how it was applied, and where its document is."""

    patch_id: str
    sha256: str  # of the document's canonical JSON; also its file name under patches/
    method: str
    timeout: float
    watch: dict[str, Any] | None  # protocol.WatchRequest.to_wire(), or None
    start: int  # the start in which it was first applied

    def to_dict(self) -> dict[str, Any]:
        return {
            "patch_id": self.patch_id,
            "sha256": self.sha256,
            "method": self.method,
            "timeout": self.timeout,
            "watch": self.watch,
            "start": self.start,
        }

    @classmethod
    def from_dict(cls, d: Any) -> StoredPatch:
        if not isinstance(d, dict):
            raise TypeError("a stack entry is not an object")
        watch = d.get("watch")
        if watch is not None and not isinstance(watch, dict):
            raise TypeError("'watch' is not an object")
        sha = str(d["sha256"])
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise ValueError(f"bad sha256 {sha!r}")
        return cls(
            patch_id=str(d["patch_id"]),
            sha256=sha,
            method=str(d["method"]),
            timeout=float(d["timeout"]),
            watch=watch,
            start=int(d["start"]),
        )


@dataclass(frozen=True)
class RestoreNote:
    """What one start did with one stacked patch (see RESTORE_OUTCOMES)."""

    patch_id: str
    outcome: str
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"patch_id": self.patch_id, "outcome": self.outcome, "detail": self.detail}

    @classmethod
    def from_dict(cls, d: Any) -> RestoreNote:
        if not isinstance(d, dict) or d.get("outcome") not in RESTORE_OUTCOMES:
            raise ValueError(f"bad restore note {d!r:.80}")
        return cls(str(d["patch_id"]), str(d["outcome"]), str(d.get("detail", "")))


@dataclass(frozen=True)
class StartRecord:
    """One start of the server: when, which process, what its restore did, and its history (the
    PatchResult.to_dict() of every attempt, oldest first)."""

    start: int
    pid: int
    started_at: float  # time.time()
    outcome: str = SERVING
    restore: tuple[RestoreNote, ...] = ()
    history: tuple[dict[str, Any], ...] = field(default=())
    dropped: int = 0  # older attempts of this start no longer kept (before `history`)

    def summary(self) -> dict[str, Any]:
        """The record without its history (the history reply sends entries separately)."""
        return {k: v for k, v in self.to_dict().items() if k != "history"}

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "pid": self.pid,
            "started_at": self.started_at,
            "outcome": self.outcome,
            "restore": [n.to_dict() for n in self.restore],
            "history": list(self.history),
            "dropped": self.dropped,
        }

    @classmethod
    def from_dict(cls, d: Any) -> StartRecord:
        if not isinstance(d, dict):
            raise TypeError("the body is not an object")
        history = d.get("history", [])
        if not isinstance(history, list):
            raise TypeError("'history' is not a list")
        for h in history:
            PatchResult.from_dict(h)  # raises for an entry the history command could not show
        outcome = d.get("outcome", SERVING)
        if outcome not in (SERVING, REFUSED):
            raise ValueError(f"bad outcome {outcome!r:.40}")
        return cls(
            start=int(d["start"]),
            pid=int(d["pid"]),
            started_at=float(d["started_at"]),
            outcome=str(outcome),
            restore=tuple(RestoreNote.from_dict(n) for n in d.get("restore", [])),
            history=tuple(history),
            dropped=int(d.get("dropped", 0)),
        )


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def document_sha256(document: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(document)).hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a crash leaves either the old content or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


# Lock descriptors this process holds. A forked child (a validated update's follower) closes its copies,
# so that the lock goes away with the parent and the child's own agent can take it then.
_held_locks: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in _held_locks:
        with contextlib.suppress(OSError):
            os.close(fd)
    _held_locks.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


class StateDir:
    """The files of one state directory. Used by one agent at a time (lock()), from one thread at a time
    (the agent serializes its writes)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    # -- the directory and its lock ----------------------------------------------------------------------

    def lock(self) -> None:
        """Create the directory (0700) if needed and take its lock; StateError when another running agent
        holds it or the directory is unusable."""
        try:
            self.path.mkdir(mode=0o700, exist_ok=True)  # not its parents: a typo must fail
            (self.path / "patches").mkdir(mode=0o700, exist_ok=True)
            (self.path / "starts").mkdir(mode=0o700, exist_ok=True)
            fd = os.open(self.path / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(
                f"cannot use the state directory {self.path}: {exc.strerror or exc} "
                "(choose another --state-dir, or fix its permissions)"
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise StateError(
                f"the state directory {self.path} is in use by another server (pid {holder}); "
                "give each server its own --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        _held_locks.add(fd)

    def unlock(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None and fd in _held_locks:  # not after a fork: the child closed it
            _held_locks.discard(fd)
            os.close(fd)  # releases the flock

    # -- reading -------------------------------------------------------------------------------------------

    def _read_envelope(self, path: Path, kind: str) -> Any:
        what = f"the state file {path}"
        fix = "move it away to start without it (its patches are then not re-applied)"
        try:
            size = path.stat().st_size
            if size > MAX_STATE_FILE_BYTES:
                raise StateError(
                    f"{what} is {size} bytes, over the limit of {MAX_STATE_FILE_BYTES}; {fix}"
                )
            env = loads_json(path.read_bytes())
        except OSError as exc:
            raise StateError(f"cannot read {what}: {exc.strerror or exc}") from exc
        except JSONLimitError as exc:
            raise StateError(f"{what} is corrupt (not valid JSON: {exc}); {fix}") from exc
        if (
            not isinstance(env, dict)
            or env.get("format") != FORMAT
            or env.get("kind") != kind
            or "body" not in env
        ):
            raise StateError(f"{what} is not a livepatch {kind} file; {fix}")
        if env.get("version") != VERSION:
            raise StateError(
                f"{what} has version {env.get('version')!r}; this livepatch reads version {VERSION} "
                f"(use a matching livepatch, or {fix})"
            )
        if env.get("sha256") != hashlib.sha256(canonical(env["body"])).hexdigest():
            raise StateError(
                f"{what} is corrupt or was edited (its content does not match its sha256); {fix}"
            )
        return env["body"]

    def load_stack(self) -> list[StoredPatch]:
        """The stack in force, oldest first ([] when there is none yet): stack.json's, or the newest
        journal line's past it (module doc). Raises StateError."""
        return self._stack_in_force()[0]

    def _stack_in_force(self) -> tuple[list[StoredPatch], tuple[int, int], bool]:
        """(stack, its position, whether it came from a journal)."""
        stack, as_of = self._load_stack_file()
        from_journal = False
        for path in self._start_files():
            start = int(path.stem)
            if (start, 1 << 62) <= as_of:
                continue
            for n, _, patches in self._journal(start, warn=False)[0]:
                if patches is not None and (start, n) > as_of:
                    stack = self._stack_of(patches, self._journal_path(start))
                    as_of, from_journal = (start, n), True
        return stack, as_of, from_journal

    def _load_stack_file(self) -> tuple[list[StoredPatch], tuple[int, int]]:
        path = self.path / "stack.json"
        if not path.exists():
            return [], (0, -1)
        body = self._read_envelope(path, "stack")
        try:
            as_of = body.get("as_of", [0, -1])
            if not isinstance(as_of, list) or len(as_of) != 2:
                raise ValueError("'as_of' is not [start, n]")
            return self._stack_of(body["patches"], path), (int(as_of[0]), int(as_of[1]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(
                f"the state file {path} is malformed ({exc}); move it away to start without it"
            ) from exc

    @staticmethod
    def _stack_of(patches: Any, path: Path) -> list[StoredPatch]:
        try:
            if not isinstance(patches, list) or len(patches) > MAX_STACK:
                raise ValueError(f"'patches' is not a list of at most {MAX_STACK}")
            return [StoredPatch.from_dict(p) for p in patches]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise StateError(
                f"the state file {path} is malformed ({exc}); move it away to start without it"
            ) from exc

    def load_document(self, stored: StoredPatch) -> dict[str, Any]:
        """The .lpatch document of a stacked patch, checked against its hash. Raises StateError."""
        path = self.path / "patches" / f"{stored.sha256}.lpatch"
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise StateError(f"the stored patch {path} is over {MAX_FILE_BYTES} bytes")
            doc = loads_json(path.read_bytes())
        except OSError as exc:
            raise StateError(
                f"the stored patch {stored.patch_id} is missing or unreadable ({path}: "
                f"{exc.strerror or exc}); move stack.json away to start without the stack"
            ) from exc
        except JSONLimitError as exc:
            raise StateError(f"the stored patch {path} is corrupt: {exc}") from exc
        if not isinstance(doc, dict) or document_sha256(doc) != stored.sha256:
            raise StateError(
                f"the stored patch {path} is corrupt or was edited (it does not match its hash); "
                "move stack.json away to start without the stack"
            )
        return doc

    def load_starts(self) -> list[StartRecord]:
        """Every start kept, oldest first, each with its journal folded in. Raises StateError for a corrupt
        one."""
        out = []
        for path in self._start_files():
            body = self._read_envelope(path, "start")
            try:
                record = StartRecord.from_dict(body)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise StateError(
                    f"the state file {path} is malformed ({exc}); move it away to drop that start "
                    "from the history"
                ) from exc
            out.append(self._fold_journal(record))
        return out

    def _journal_path(self, start: int) -> Path:
        return self.path / "starts" / f"{start:06d}.journal"

    def _journal(
        self, start: int, *, warn: bool = True
    ) -> tuple[list[tuple[int, dict[str, Any], list[Any] | None]], bool]:
        """The intact lines of a start's journal as (n, entry, stack or None), and whether it had a torn
        last line (ignored; logged when `warn`). Raises StateError for any other bad line."""
        path = self._journal_path(start)
        try:
            if path.stat().st_size > MAX_STATE_FILE_BYTES:
                raise StateError(
                    f"the journal {path} is over {MAX_STATE_FILE_BYTES} bytes; move it away to "
                    "drop that start's newest attempts from the history"
                )
            data = path.read_bytes()
        except FileNotFoundError:
            return [], False
        except OSError as exc:
            raise StateError(f"cannot read the journal {path}: {exc.strerror or exc}") from exc
        lines = data.split(b"\n")
        torn_tail = lines.pop()  # b"" when the last append completed
        out = []
        for i, line in enumerate(lines):
            try:
                out.append(_journal_line(line))
            except ValueError as exc:
                if i == len(lines) - 1 and not torn_tail:
                    torn_tail = line  # a crash can leave garbage ending in a newline too
                    break
                raise StateError(
                    f"the journal {path} is corrupt at line {i + 1} ({exc}); move it away to drop "
                    "that start's newest attempts from the history"
                ) from None
        if torn_tail and warn:
            log.warning(
                "the journal %s ends with an incomplete line (%d bytes; a crash in the middle of an "
                "append): ignored, nothing before it is lost",
                path,
                len(torn_tail),
            )
        return out, bool(torn_tail)

    def _fold_journal(self, record: StartRecord) -> StartRecord:
        """`record` with the attempts of its journal the snapshot does not have yet (module doc)."""
        entries = list(record.history)
        dropped = record.dropped
        for n, entry, _ in self._journal(record.start)[0]:
            have = dropped + len(entries)
            if n < have:  # already in the snapshot (a crash between a compaction's two steps)
                continue
            dropped += n - have  # attempts the agent did not see (more than the runtime keeps)
            entries.append(entry)
        keep, size = 0, 0
        for entry in reversed(entries):  # the newest within both bounds (at least one)
            size += len(canonical(entry))
            if keep and (keep >= MAX_START_HISTORY or size > MAX_START_HISTORY_BYTES):
                break
            keep += 1
        over = len(entries) - keep
        return _replace(record, history=tuple(entries[over:]), dropped=dropped + over)

    def fold_journals(self, records: list[StartRecord]) -> None:
        """At a start, before the new start's first line: write the stack in force to stack.json if a
        journal had a newer one, then each earlier start's snapshot with its journal folded in
        (`records`, from load_starts), and empty those journals. Raises OSError, StateError."""
        stack, as_of, from_journal = self._stack_in_force()
        if from_journal:
            self.save_stack(stack, as_of)
        for record in records:
            path = self._journal_path(record.start)
            if path.exists() and path.stat().st_size:
                self.compact_start(record)

    def _start_files(self) -> list[Path]:
        d = self.path / "starts"
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.suffix == ".json" and p.stem.isdigit())

    def next_start(self) -> int:
        files = self._start_files()
        return int(files[-1].stem) + 1 if files else 1

    # -- writing -------------------------------------------------------------------------------------------

    def _write_envelope(self, path: Path, kind: str, body: dict[str, Any]) -> None:
        env = {
            "format": FORMAT,
            "kind": kind,
            "version": VERSION,
            "body": body,
            "sha256": hashlib.sha256(canonical(body)).hexdigest(),
        }
        _write_atomic(path, canonical(env))

    def save_document(self, document: dict[str, Any]) -> str:
        """Store a patch document (once per content); return its hash."""
        sha = document_sha256(document)
        path = self.path / "patches" / f"{sha}.lpatch"
        if not path.exists():
            _write_atomic(path, canonical(document))
        return sha

    def save_stack(self, stack: list[StoredPatch], as_of: tuple[int, int] = (0, -1)) -> None:
        """Replace the stored stack, in force as of journal position `as_of` = (start, n) (module doc),
        then delete the patch files no entry names any more."""
        self._write_envelope(
            self.path / "stack.json",
            "stack",
            {"patches": [p.to_dict() for p in stack], "as_of": list(as_of)},
        )
        keep = {f"{p.sha256}.lpatch" for p in stack}
        for path in (self.path / "patches").iterdir():
            if path.name.endswith(".lpatch") and path.name not in keep:
                with contextlib.suppress(OSError):
                    path.unlink()

    def save_start(self, record: StartRecord) -> None:
        """Write the start's snapshot (its history included) atomically. Its journal is left alone: lines
        the snapshot has are skipped when read (compact_start empties it)."""
        self._write_envelope(
            self.path / "starts" / f"{record.start:06d}.json", "start", record.to_dict()
        )

    def compact_start(self, record: StartRecord) -> None:
        """Write the snapshot `record` (with every attempt of the start folded in), then empty the
        start's journal."""
        self.save_start(record)
        path = self._journal_path(record.start)
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_size:
                with open(path, "r+b") as f:
                    f.truncate(0)
                    os.fsync(f.fileno())

    def append_journal(
        self, start: int, entries: list[tuple[int, dict[str, Any], list[StoredPatch] | None]]
    ) -> None:
        """Append (n, PatchResult.to_dict(), the stack after it if it changed) lines to the start's
        journal and fdatasync it: one sync. Raises OSError (the caller then writes a snapshot instead, so
        a half-written line is never followed by another)."""
        if not entries:
            return
        data = b"".join(
            _journal_bytes(n, e, None if st is None else [p.to_dict() for p in st])
            for n, e, st in entries
        )
        fd = os.open(self._journal_path(start), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fdatasync(fd)
        finally:
            os.close(fd)

    def trim_starts(self, keep: int = MAX_STARTS) -> None:
        """Delete the oldest start files (and their journals) beyond `keep` (called before a new start is
        written)."""
        files = self._start_files()
        for path in files[: max(0, len(files) - keep)]:
            with contextlib.suppress(OSError):
                path.unlink()
            with contextlib.suppress(OSError):
                path.with_suffix(".journal").unlink()


def _journal_bytes(n: int, entry: dict[str, Any], stack: list[dict[str, Any]] | None) -> bytes:
    sha = hashlib.sha256(canonical([n, entry, stack])).hexdigest()
    line: dict[str, Any] = {"entry": entry, "n": n, "sha256": sha}
    if stack is not None:
        line["stack"] = stack
    return canonical(line) + b"\n"


def _journal_line(line: bytes) -> tuple[int, dict[str, Any], list[Any] | None]:
    """(n, entry, stack or None) of one journal line; ValueError when it is not a whole, intact line."""
    try:
        d = loads_json(line)
    except JSONLimitError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(d, dict) or not isinstance(d.get("n"), int) or d["n"] < 0:
        raise ValueError("not a journal entry")
    entry = d.get("entry")
    if not isinstance(entry, dict):
        raise ValueError("not a journal entry")
    stack = d.get("stack")
    if stack is not None and not isinstance(stack, list):
        raise ValueError("'stack' is not a list")
    if d.get("sha256") != hashlib.sha256(canonical([d["n"], entry, stack])).hexdigest():
        raise ValueError("its content does not match its sha256")
    try:
        PatchResult.from_dict(entry)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not an attempt: {exc}") from None
    return d["n"], entry, stack


def _replace(record: StartRecord, **changes: Any) -> StartRecord:
    import dataclasses

    return dataclasses.replace(record, **changes)


def default_state_dir(socket_path: str) -> str:
    """Where the state lives when no state directory is given: next to the control socket."""
    return f"{socket_path}.state"
