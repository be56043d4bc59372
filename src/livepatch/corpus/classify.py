"""One commit's outcome: the differ run on the package before and after it, in a forked child.

Why a child: the differ is pure but runs on arbitrary code from a history (deep nesting, huge modules,
a differ bug that loops); a child with an address-space limit (RLIMIT_AS) and a wall-clock timeout makes
every commit cost bounded memory and time, and a crash in it is one commit's `error`, never the run's.
The child is forked, so the two package versions reach it without being pickled; it sends back one
plain dict (`CommitResult.to_dict`'s fields) over a pipe.
"""

from __future__ import annotations

import enum
import multiprocessing
import resource
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from livepatch.patch import lpatch
from livepatch.patch.model import ChangeKind
from livepatch.patch.package import PackageError, PackageVersion, build_patch
from livepatch.patch.transformer import TRANSFORMER_KINDS

DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MEMORY_BYTES = 2 << 30  # address space of the child; a MemoryError above it is an `error`


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"  # the differ produced a patch
    REFUSED = "refused"  # the differ refused at least one change
    EMPTY = "empty"  # the code did not change (comments, blank lines, moved lines)
    ERROR = "error"  # could not be diffed: see ErrorKind
    SKIPPED = "skipped"  # does not change the package's code (tests, docs, other files)


class ErrorKind(enum.StrEnum):
    DOES_NOT_COMPILE = (
        "does-not-compile"  # old or new version: Python 2, newer syntax, broken commit
    )
    DIFFER_CRASH = "differ-crash"  # the differ raised instead of refusing: a bug to fix
    TIMEOUT = "timeout"
    MEMORY = "memory"
    TOO_LARGE = "too-large"  # over --max-lines, or the patch over the .lpatch size limit
    UNREADABLE = (
        "unreadable"  # the package reader refused a version (size limits, not UTF-8), git failed
    )
    INTERNAL = (
        "internal"  # anything else raised in the child (CPython's compile() raises SystemError
    )
    # instead of MemoryError when it runs out of memory at some points)


@dataclass
class CommitResult:
    sha: str
    subject: str
    outcome: Outcome
    reason: str = ""  # why skipped / what the error is
    error_kind: ErrorKind | None = None
    refusals: list[dict[str, str]] = field(default_factory=list)  # kind, module, qualname, reason
    functions: list[dict[str, str]] = field(
        default_factory=list
    )  # module, qualname, change, definition
    category: str | None = None
    bytes: int = 0  # size of the .lpatch file (unsigned)
    seconds: float = 0.0
    # refused, but `livepatch diff --accept-transformer` would produce the patch (a generated transform
    # hook sets the new instance attributes on the live instances; the author must confirm it)
    with_transformer: bool = False

    @property
    def refusal_kinds(self) -> list[str]:
        return sorted({r["kind"] for r in self.refusals})

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha": self.sha,
            "subject": self.subject,
            "outcome": self.outcome.value,
            "reason": self.reason,
            "error_kind": self.error_kind.value if self.error_kind else None,
            "refusal_kinds": self.refusal_kinds,
            "refusals": self.refusals,
            "functions": self.functions,
            "category": self.category,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "accepted_with_transformer": self.with_transformer,
        }


def _compile_error(old: PackageVersion, new: PackageVersion) -> str | None:
    """Which side does not compile (only modules the differ will compile: changed or added)."""
    for side, version, other in (("old", old, new), ("new", new, old)):
        for name, source in sorted(version.modules.items()):
            if other.modules.get(name) == source or (side == "old" and name not in new.modules):
                continue
            try:
                compile(source, name, "exec", dont_inherit=True)
            except SyntaxError as exc:
                return (
                    f"the {side} version of {name} does not compile: {exc.msg} (line {exc.lineno})"
                )
            except (RecursionError, ValueError) as exc:  # too deeply nested, NUL bytes
                return f"the {side} version of {name} does not compile: {type(exc).__name__}: {exc}"
    return None


def _diff(old: PackageVersion, new: PackageVersion, out: Path | None, sha: str) -> dict[str, Any]:
    """The outcome fields of one commit (runs in the child)."""
    bad = _compile_error(old, new)
    if bad is not None:
        return {"outcome": Outcome.ERROR, "error_kind": ErrorKind.DOES_NOT_COMPILE, "reason": bad}
    try:
        spec = build_patch(old, new, category=None).spec  # inferred, as `livepatch diff` does
    except PackageError as exc:  # the package layer's own "cannot read this version"
        return {"outcome": Outcome.ERROR, "error_kind": ErrorKind.UNREADABLE, "reason": str(exc)}
    except MemoryError:
        return {"outcome": Outcome.ERROR, "error_kind": ErrorKind.MEMORY, "reason": "out of memory"}
    except Exception as exc:  # the differ must refuse, not raise: record it as a bug found
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return {
            "outcome": Outcome.ERROR,
            "error_kind": ErrorKind.DIFFER_CRASH,
            "reason": f"{type(exc).__name__}: {exc} (at {Path(where.filename).name}:{where.lineno})",
        }
    if spec.refusals:
        refusals = [
            {"kind": r.kind.value, "module": r.module, "qualname": r.qualname, "reason": r.reason}
            for r in spec.refusals
        ]
        # kinds a generated transformer may cover (new attributes, class replacement: session 10)
        transformer = all(r.kind in TRANSFORMER_KINDS for r in spec.refusals) and not (
            build_patch(old, new, category=None, accept_transformer=True).spec.refusals
        )
        return {
            "outcome": Outcome.REFUSED,
            "refusals": refusals,
            "with_transformer": transformer,
        }
    if spec.changed_count == 0:
        return {"outcome": Outcome.EMPTY, "reason": "no definition changed (comments, layout)"}
    functions = [
        {
            "module": m.module,
            "qualname": c.qualname,
            "change": c.kind.value,
            "definition": c.definition.value,
        }
        for m in spec.modules
        for c in m.changes
        if c.kind is not ChangeKind.SAME
    ]
    try:
        data = lpatch.dumps(lpatch.build(spec))
    except lpatch.PatchFileError as exc:
        return {"outcome": Outcome.ERROR, "error_kind": ErrorKind.TOO_LARGE, "reason": str(exc)}
    if out is not None:
        (out / f"{sha[:12]}.lpatch").write_bytes(data)
    return {
        "outcome": Outcome.ACCEPTED,
        "functions": functions,
        "category": spec.category.value,
        "bytes": len(data),
    }


def _child(
    conn: Connection,
    old: PackageVersion,
    new: PackageVersion,
    out: Path | None,
    sha: str,
    memory: int,
) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    try:
        fields = _diff(old, new, out, sha)
    except MemoryError:
        fields = {
            "outcome": Outcome.ERROR,
            "error_kind": ErrorKind.MEMORY,
            "reason": "out of memory",
        }
    except Exception as exc:  # e.g. writing the patch file: one commit's error, reported
        fields = {
            "outcome": Outcome.ERROR,
            "error_kind": ErrorKind.INTERNAL,
            "reason": f"{type(exc).__name__}: {exc}",
        }
    conn.send(fields)
    conn.close()


def classify(
    sha: str,
    subject: str,
    old: PackageVersion,
    new: PackageVersion,
    *,
    timeout: float = DEFAULT_TIMEOUT_S,
    memory: int = DEFAULT_MEMORY_BYTES,
    out: Path | None = None,
) -> CommitResult:
    """Diff OLD against NEW in a forked child bounded by TIMEOUT seconds and MEMORY bytes. When OUT is
    given, an accepted patch is written there as SHA[:12].lpatch (unsigned). Call from one thread."""
    started = time.monotonic()
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(sender, old, new, out, sha, memory), daemon=True)
    proc.start()
    sender.close()
    try:
        if receiver.poll(timeout):
            try:
                fields = receiver.recv()
            except EOFError:  # the child died without a word (killed by the kernel, a hard crash)
                fields = {
                    "outcome": Outcome.ERROR,
                    "error_kind": ErrorKind.DIFFER_CRASH,
                    "reason": "the differ's process died without a result",
                }
        else:
            fields = {
                "outcome": Outcome.ERROR,
                "error_kind": ErrorKind.TIMEOUT,
                "reason": f"the differ took longer than {timeout:g} s",
            }
    finally:
        receiver.close()
        if proc.is_alive():
            proc.kill()
        proc.join()
    return CommitResult(sha, subject, seconds=time.monotonic() - started, **fields)
