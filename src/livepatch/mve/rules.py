"""Expected differences between the old and the new version's replies, as plain Python.

A rule is `def rule(request, old_reply, new_reply) -> bool`: `request` is the request as the server
received it (for a Redis-protocol server, the argument list, `list[bytes]`), the replies are the encoded
bytes each version sent. A rule returning True declares the difference expected. A rules file is a
Python module; every top-level function whose name starts with `rule` is a rule (in file order).

A rewrite is `def rewrite(request) -> request | None`: the follower (the new version) executes what it
returns instead of the leader's request (None: the request as it is). It is for a deliberate change of a
request's form, clients switching with the promotion (Varan's "put(k, v) becomes put(string, k, v)");
the replies are then compared as usual. Every top-level function whose name starts with `rewrite` is
one; they apply in file order, each to the previous one's result.

The built-in set (`BUILTIN`) covers the replies that differ by nature between two processes, whatever
the update: server introspection (INFO, CLIENT ID/LIST/INFO, HELLO, MEMORY, OBJECT, DEBUG, LASTSAVE,
CONFIG GET, ROLE, COMMAND), the clock (TIME) and random choices (RANDOMKEY, SRANDMEMBER, SPOP,
HRANDFIELD, ZRANDMEMBER) and SCAN cursors. Limitation: an accepted random choice that changes data
(SPOP) leaves the follower's data different from the leader's; both processes start from the same random
state after fork, so in practice they choose alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

Rule = Callable[[Any, bytes, bytes], bool]
Rewrite = Callable[[Any], Any]

_NONDETERMINISTIC = frozenset(
    {
        b"INFO",
        b"HELLO",
        b"MEMORY",
        b"OBJECT",
        b"DEBUG",
        b"LASTSAVE",
        b"TIME",
        b"RANDOMKEY",
        b"SRANDMEMBER",
        b"SPOP",
        b"HRANDFIELD",
        b"ZRANDMEMBER",
        b"SCAN",
        b"SSCAN",
        b"HSCAN",
        b"ZSCAN",
        b"ROLE",
        b"COMMAND",
        b"CONFIG",
    }
)
_CLIENT_INTROSPECTION = frozenset({b"ID", b"LIST", b"INFO"})


def _name(request: Any, i: int) -> bytes:
    if isinstance(request, list | tuple) and len(request) > i and isinstance(request[i], bytes):
        return request[i].upper()
    return b""


def rule_differs_by_nature(request: Any, old_reply: bytes, new_reply: bytes) -> bool:
    """Introspection, the clock, random choices and cursors differ between two processes."""
    name = _name(request, 0)
    if name in _NONDETERMINISTIC:
        return True
    return name == b"CLIENT" and _name(request, 1) in _CLIENT_INTROSPECTION


BUILTIN: tuple[Rule, ...] = (rule_differs_by_nature,)


class RulesError(Exception):
    """A rules file that cannot be loaded; the message says what to fix."""


def load_rules_source(source: str, filename: str) -> tuple[Rule | Rewrite, ...]:
    """The rules and rewrites a rules file defines (top-level functions named rule*/rewrite*, in file
    order)."""
    namespace: dict[str, Any] = {"__name__": "livepatch_mve_rules", "__file__": filename}
    try:
        exec(compile(source, filename, "exec"), namespace)
    except (
        BaseException
    ) as exc:  # SystemExit at the top level too: a refusal, not a dead agent thread
        raise RulesError(
            f"cannot load the rules file {filename}: {type(exc).__name__}: {exc} "
            "(fix it and run the update again)"
        ) from None
    found = [
        obj
        for key, obj in namespace.items()
        if key.startswith(("rule", "rewrite")) and inspect.isfunction(obj)
    ]
    for fn in found:
        rewrite = fn.__name__.startswith("rewrite")
        try:
            inspect.signature(fn).bind(*((None,) if rewrite else (None, b"", b"")))
        except TypeError:
            wanted = "(request)" if rewrite else "(request, old_reply, new_reply)"
            raise RulesError(f"{filename}: {fn.__name__} must take {wanted}") from None
    if not found:
        raise RulesError(
            f"{filename} defines no rule: write functions named rule_* taking "
            "(request, old_reply, new_reply) and returning True for an expected difference, "
            "or rewrite_* taking (request) and returning the request the new version runs"
        )
    return tuple(found)


def load_rules_file(path: str | Path) -> tuple[Rule | Rewrite, ...]:
    p = Path(path)
    try:
        source = p.read_text()
    except OSError as exc:
        raise RulesError(f"cannot read the rules file {p}: {exc.strerror or exc}") from None
    return load_rules_source(source, str(p))


def _is_rewrite(fn: Any) -> bool:
    return str(getattr(fn, "__name__", "")).startswith("rewrite")


@dataclass
class RuleSet:
    rules: Sequence[Rule]
    rewrites: Sequence[Rewrite] = ()

    @property
    def names(self) -> list[str]:
        return [getattr(r, "__name__", repr(r)) for r in (*self.rewrites, *self.rules)]

    def explain(self, request: Any, old_reply: bytes, new_reply: bytes) -> str | None:
        """The name of the first rule accepting this difference, or None (a divergence).

        A rule that raises accepts nothing (its error is part of the report's rule name)."""
        for rule in self.rules:
            try:
                if rule(request, old_reply, new_reply):
                    return getattr(rule, "__name__", "rule")
            except BaseException:  # a rule's bug (even sys.exit()) accepts nothing
                continue
        return None

    def rewrite(self, request: Any) -> Any:
        """The request the new version executes: each rewrite in turn (None keeps the request).

        A rewrite that raises or returns something that is not a non-empty list of bytes keeps the
        request as it was: the comparison then shows whether that was right."""
        for fn in self.rewrites:
            try:
                out = fn(request)
            except BaseException:
                continue
            if (
                isinstance(out, list | tuple)
                and out
                and all(isinstance(a, bytes | bytearray) for a in out)
            ):
                request = [bytes(a) for a in out]
        return request


def ruleset(source: str | None, filename: str = "<rules>") -> RuleSet:
    """The built-in rules, then those of `source` (the text of a rules file), if any."""
    extra = load_rules_source(source, filename) if source is not None else ()
    rules = [cast(Rule, fn) for fn in extra if not _is_rewrite(fn)]
    rewrites = [cast(Rewrite, fn) for fn in extra if _is_rewrite(fn)]
    return RuleSet((*BUILTIN, *rules), tuple(rewrites))


__all__ = ["BUILTIN", "Rewrite", "Rule", "RuleSet", "RulesError", "load_rules_file", "ruleset"]
