"""The agent's state directory: the applied stack and the history, kept across restarts.

Layout (docs/cli.md, "State directory", documents it for operators):

    STATE_DIR/                      mode 0700, created on first use
      lock                          flock()ed by the one agent that uses the directory
      stack.json                    the applied stack, oldest first (rewritten on every change)
      patches/<sha256>.lpatch       the .lpatch document of each stacked patch, named by its hash
      starts/<NNNNNN>.json          one per start of the server: its restore and its history (a snapshot)
      starts/<NNNNNN>.journal       that start's attempts since its snapshot, one JSON line each (appended)

Every JSON file is an envelope `{"format": "livepatch-state", "kind": K, "version": 1, "body": {...},
"sha256": H}` where H is the SHA-256 of the body's canonical JSON (sorted keys, no whitespace). Writes are
atomic: a temporary file in the same directory, fsync, rename over the old file, fsync of the directory;
a crash leaves the old file or the new one, never half of either.

The history is appended, not rewritten: each attempt is one line of its start's journal, `{"entry":
PatchResult.to_dict(), "n": N, "sha256": H}` (N numbers the start's attempts from 0; H is the SHA-256 of
the canonical JSON of [N, entry]), written and fdatasync()ed as it happens. Rewriting the whole history
at every transition grew with the run (a stress run on main: 983 transitions in 5 minutes, the start file
at 876 KB). The snapshot (the start file) keeps the newest MAX_START_HISTORY attempts and how many older
ones were dropped; when the journal passes MAX_START_HISTORY lines, and when the agent stops or the next
start opens the directory, the journal is folded into a new snapshot (atomic, as above) and then emptied.
A crash between the two leaves lines the snapshot already has: they are recognised by their N (below the
snapshot's dropped + kept) and skipped. A torn last line (a crash in the middle of an append) is ignored
with a warning; any other bad line is a StateError like a corrupt file.

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
MAX_START_HISTORY = (
    1000  # attempts kept per start (as the runtime keeps in memory); older ones counted
)

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
        """The stored stack, oldest first ([] when there is none yet). Raises StateError."""
        path = self.path / "stack.json"
        if not path.exists():
            return []
        body = self._read_envelope(path, "stack")
        try:
            patches = body["patches"]
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

    def _fold_journal(self, record: StartRecord) -> StartRecord:
        """`record` with the attempts of its journal the snapshot does not have yet (module doc)."""
        path = self._journal_path(record.start)
        try:
            if path.stat().st_size > MAX_STATE_FILE_BYTES:
                raise StateError(
                    f"the journal {path} is over {MAX_STATE_FILE_BYTES} bytes; move it away to "
                    "drop that start's newest attempts from the history"
                )
            data = path.read_bytes()
        except FileNotFoundError:
            return record
        except OSError as exc:
            raise StateError(f"cannot read the journal {path}: {exc.strerror or exc}") from exc
        lines = data.split(b"\n")
        torn_tail = lines.pop()  # b"" when the last append completed
        entries = list(record.history)
        dropped = record.dropped
        for i, line in enumerate(lines):
            try:
                n, entry = _journal_line(line)
            except ValueError as exc:
                if i == len(lines) - 1 and not torn_tail:
                    torn_tail = line  # a crash can leave garbage ending in a newline too
                    break
                raise StateError(
                    f"the journal {path} is corrupt at line {i + 1} ({exc}); move it away to drop "
                    "that start's newest attempts from the history"
                ) from None
            have = dropped + len(entries)
            if n < have:  # already in the snapshot (a crash between a compaction's two steps)
                continue
            dropped += n - have  # attempts the agent did not see (more than the runtime keeps)
            entries.append(entry)
        if torn_tail:
            log.warning(
                "the journal %s ends with an incomplete line (%d bytes; a crash in the middle of an "
                "append): ignored, nothing before it is lost",
                path,
                len(torn_tail),
            )
        over = max(0, len(entries) - MAX_START_HISTORY)
        return _replace(record, history=tuple(entries[over:]), dropped=dropped + over)

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

    def save_stack(self, stack: list[StoredPatch]) -> None:
        """Replace the stored stack, then delete the patch files no entry names any more."""
        self._write_envelope(
            self.path / "stack.json", "stack", {"patches": [p.to_dict() for p in stack]}
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

    def append_journal(self, start: int, entries: list[tuple[int, dict[str, Any]]]) -> None:
        """Append (n, PatchResult.to_dict()) lines to the start's journal and fdatasync it. Raises
        OSError (the caller then writes a snapshot instead, so a half-written line is never followed by
        another)."""
        if not entries:
            return
        data = b"".join(_journal_bytes(n, e) for n, e in entries)
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


def _journal_bytes(n: int, entry: dict[str, Any]) -> bytes:
    sha = hashlib.sha256(canonical([n, entry])).hexdigest()
    return canonical({"entry": entry, "n": n, "sha256": sha}) + b"\n"


def _journal_line(line: bytes) -> tuple[int, dict[str, Any]]:
    """(n, entry) of one journal line; ValueError when it is not a whole, intact line."""
    try:
        d = loads_json(line)
    except JSONLimitError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(d, dict) or not isinstance(d.get("n"), int) or d["n"] < 0:
        raise ValueError("not a journal entry")
    entry = d.get("entry")
    if not isinstance(entry, dict):
        raise ValueError("not a journal entry")
    if d.get("sha256") != hashlib.sha256(canonical([d["n"], entry])).hexdigest():
        raise ValueError("its content does not match its sha256")
    try:
        PatchResult.from_dict(entry)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not an attempt: {exc}") from None
    return d["n"], entry


def _replace(record: StartRecord, **changes: Any) -> StartRecord:
    import dataclasses

    return dataclasses.replace(record, **changes)


def default_state_dir(socket_path: str) -> str:
    """Where the state lives when no state directory is given: next to the control socket."""
    return f"{socket_path}.state"
