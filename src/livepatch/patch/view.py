"""The staging view a compiled patch carries: which top-level statements of a module's new source staging
reads, so that applying the patch parses those few statements instead of the whole module.

Theory of operation. Staging reads a module's walk (walk.walk_tree) only for the targets it cannot take
from the compiled payload (patch.compiled): a changed `<block N>`, a member added to a class, a changed
class or value, an import. Parsing the whole new source for that is one C call per statement that holds
the GIL, and the walk visits every node: at a live update of kvserver's figures commit that is resp.py
(40 kB) parsed to reach one 3-line block. So `livepatch diff` computes, per module:

    manifest["compiled"]["views"] = {"<MAGIC hex>": {"<module>": {"spans": [[first, end], ...],
                                                                 "blocks": {"<block N>": i}}}}

`spans` are the 0-based physical-line ranges [first, end) of the top-level statements that define the
targets staging may read (every change but SAME and REMOVED ones), the `from __future__` imports and the
module-scope imports (the prelude a statement is compiled with), in source order; `blocks` maps a
changed block's name in the whole module to its index among the partial module's statements.

Exactness. The view is made, and kept, only if the walk of the partial module equals the walk of the whole
one for everything staging can read through it (`staging_view`: each definition under those statements
with its node, line numbers included, and its compiled code's fingerprint; the classes; the changed
blocks; the prelude), and each span parses to exactly its one statement. Otherwise no view is carried,
and staging parses the whole source as before. The section is covered by the patch's signature and read
only after it verified (`compiled.attach`), and keyed by the bytecode magic number, like the compiled
code it goes with: another interpreter parses the whole source. At staging, each span must still parse
to one statement (else the patch is refused as corrupt), and the existing checks stay: a block's node
must have the fingerprint the patch names, a definition the kind it says, compiled code the fingerprint
it says.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from livepatch.patch.model import ChangeKind, ModulePatch
from livepatch.patch.walk import ModuleWalk, module_scope_imports, source_lines, walk_tree

__all__ = ["ModuleView", "build_view", "decode_view", "staging_view"]


@dataclass(frozen=True)
class ModuleView:
    spans: tuple[tuple[int, int], ...]
    blocks: dict[str, int] = field(default_factory=dict)

    def parse(
        self, source: str, filename: str, between: Callable[[], None] | None = None
    ) -> ast.Module:
        """The partial module: each span parsed alone, padded with empty lines so that its line numbers
        are those of the whole source. SyntaxError when a span is not exactly one statement.
        `between` (if given) is called before each span's parse (staging's runtime.pacing.Pacer)."""
        lines = source_lines(source)
        body: list[ast.stmt] = []
        for first, end in self.spans:
            if between is not None:
                between()
            if not 0 <= first < end <= len(lines):
                raise SyntaxError(f"line span [{first}, {end}) outside the source")
            tree = ast.parse("\n" * first + "".join(lines[first:end]), filename)
            if len(tree.body) != 1:
                raise SyntaxError(f"line span [{first}, {end}) is not one statement")
            body.extend(tree.body)
        return ast.Module(body=body, type_ignores=[])

    def block(self, walk: ModuleWalk, qualname: str) -> ast.stmt | None:
        """The block `qualname` (named as in the whole module) in the walk of the partial module."""
        index = self.blocks.get(qualname)
        return None if index is None else walk.block(f"<block {index}>")

    def to_json(self) -> dict[str, Any]:
        return {"spans": [list(s) for s in self.spans], "blocks": dict(self.blocks)}


def decode_view(raw: Any, module: str) -> ModuleView:
    """A view from its manifest form; ValueError when malformed."""
    if not isinstance(raw, dict) or set(raw) != {"spans", "blocks"}:
        raise ValueError(f"{module}: a staging view that is not {{spans, blocks}}")
    spans, blocks = raw["spans"], raw["blocks"]
    if not isinstance(spans, list) or not all(
        isinstance(s, list) and len(s) == 2 and all(type(x) is int for x in s) for s in spans
    ):
        raise ValueError(f"{module}: a staging view's spans are not [first, end] pairs")
    if not isinstance(blocks, dict) or not all(
        isinstance(k, str) and type(v) is int for k, v in blocks.items()
    ):
        raise ValueError(f"{module}: a staging view's blocks are not name -> index")
    return ModuleView(tuple((s[0], s[1]) for s in spans), dict(blocks))


def staging_view(walk: ModuleWalk, tops: set[str], blocks: dict[str, ast.stmt | None]) -> object:
    """What staging can read through a walk about the top-level names `tops` and the `blocks`: the
    definitions and classes under those names (node dumps with line numbers, code fingerprints), the
    blocks' nodes and the prelude statements are compiled with."""

    def under(qualname: str) -> bool:
        return qualname.partition(".")[0] in tops

    def code(c: Any) -> str | None:
        return None if c is None else hashlib.sha256(_code_bytes(c)).hexdigest()

    return (
        sorted(
            (
                d.qualname,
                str(d.kind),
                _dump(d.node),
                code(d.code),
                d.owner,
                d.name,
                d.decorators,
            )
            for d in walk.definitions.values()
            if under(d.qualname)
        ),
        sorted(
            (c.qualname, _dump(c.node), c.decorators, str(c.slots), sorted(c.assignments))
            for c in walk.classes.values()
            if under(c.qualname)
        ),
        sorted((q, _dump(n) if n is not None else "") for q, n in blocks.items()),
        [_dump(s) for s in walk.future],
    )


def _dump(node: ast.AST) -> str:
    return ast.dump(node, include_attributes=True)


def _code_bytes(code: Any) -> bytes:
    import marshal  # the offline side only

    return marshal.dumps(code)


def build_view(mp: ModulePatch, filename: str) -> ModuleView | None:
    """The view of `mp` (offline, at `livepatch diff`), or None when staging should parse the whole
    source: nothing to read, a source that does not parse, or a partial walk that would differ."""
    wanted = {c.qualname for c in mp.changes if c.kind not in (ChangeKind.SAME, ChangeKind.REMOVED)}
    if not wanted:
        return None
    try:
        tree = ast.parse(mp.new_source, filename)
        code = compile(tree, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return None
    whole = walk_tree(mp.new_source, tree, code, full=False)
    body = tree.body
    chosen: set[int] = set()
    tops: set[str] = set()
    blocks: dict[str, ast.stmt | None] = {}
    index_of = {id(s): i for i, s in enumerate(body)}
    for qualname in wanted:
        if qualname.startswith("<block"):
            node = whole.block(qualname)
            blocks[qualname] = node
        else:
            top = qualname.partition(".")[0]
            tops.add(top)
            d = whole.definitions.get(top)
            node = d.node if d is not None else None
            if node is None and top in whole.classes:
                node = whole.classes[top].node
        if node is None or id(node) not in index_of:
            return None  # not a top-level statement of the source: staging finds out and refuses
        chosen.add(index_of[id(node)])
    for i, stmt in enumerate(body):  # the prelude: `from __future__` and module-scope imports
        if module_scope_imports([stmt]):
            chosen.add(i)
    lines = source_lines(mp.new_source)
    spans = []
    for i in sorted(chosen):
        stmt = body[i]
        first = min([stmt.lineno, *(d.lineno for d in getattr(stmt, "decorator_list", ()))]) - 1
        end = stmt.end_lineno if stmt.end_lineno is not None else stmt.lineno
        if (i + 1 < len(body) and body[i + 1].lineno <= end) or (
            i and body[i - 1].end_lineno == first + 1
        ):
            return None  # another statement on the same line: a span would hold both
        spans.append((first, end))
    if len(lines) < max(e for _, e in spans):
        return None
    partial_blocks: dict[str, int] = {}
    view = ModuleView(tuple(spans), partial_blocks)
    try:
        partial_tree = view.parse(mp.new_source, filename)
        partial_code = compile(partial_tree, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError):
        return None
    partial = walk_tree(mp.new_source, partial_tree, partial_code, full=False)
    for qualname, node in blocks.items():
        assert node is not None
        for k, other in enumerate(partial.statement_nodes):
            if _dump(other) == _dump(node):
                partial_blocks[qualname] = k
                break
        else:
            return None
    partial_found = {q: view.block(partial, q) for q in blocks}
    if staging_view(partial, tops, partial_found) != staging_view(whole, tops, blocks):
        return None
    return view
