"""The built-in patches, made at run time from the INSTALLED kvserver source, so they always match the code
the server runs (a patch's fingerprints must match the live code, or the agent refuses it).

The transformation (documented in docs/lpbench.md, and small on purpose):
    pick handler functions (module-level `def *_command` in kvserver/commands/*.py, in file then line
    order); in each, insert a few lines right before its first statement that is not the docstring,
    indented like that statement. Nothing else changes (other functions only shift by whole lines,
    which the diff ignores). Functions whose body starts on the `def` line are skipped.

What is inserted:
    bench     `_lpbench_rev = 2  # lpbench built-in patch`: a harmless change of the code object, so the
              update is a real code swap of a function on the hot path (GET's handler by default)
    bug       in GET's handler: keys starting with "demo:" lose their value's last byte (the demo's
              planted bug; the fix is the reverse patch: buggy -> installed)

Patches are built by the `livepatch diff` command (category thread-local: the changes are code-only,
so both global and local quiescence may apply them), signed with the harness's key (lpbench.keys), which
its servers trust: the new code travels compiled and the agent stages it without compiling.
"""

from __future__ import annotations

import ast
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from livepatch.patch import lpatch
from lpbench.keys import harness_key
from lpbench.servers import livepatch_executable

MARK = "# lpbench built-in patch"
HOT_FUNCTION = ("kvserver/commands/strings.py", "get_command")
DEMO_PREFIX = b"demo:"

# (indent, parameter names) -> lines to insert
Insertion = Callable[[str, list[str]], list[str]]


def bench_lines(indent: str, params: list[str]) -> list[str]:
    return [f"{indent}_lpbench_rev = 2  {MARK}"]


def bug_lines(indent: str, params: list[str]) -> list[str]:
    ctx, argv = params[0], params[1]
    return [
        f"{indent}if {argv}[1].startswith({DEMO_PREFIX!r}):  {MARK}: planted bug",
        f"{indent}    _v = {ctx}.db.lookup({argv}[1], {ctx}.now_ms)",
        f"{indent}    return _v[:-1] if type(_v) is bytes else _v",
    ]


@dataclass(frozen=True)
class BuiltPatch:
    path: Path
    n_functions: int  # definitions the patch changes (its manifest's count, not ours)
    size_bytes: int  # of the .lpatch file
    targets: tuple[
        str, ...
    ] = ()  # "relpath:function" the transformation changed ([] for a user's file)

    @classmethod
    def from_file(cls, path: Path, targets: tuple[str, ...] = ()) -> BuiltPatch:
        """Any .lpatch (the harness's or a user's --patch FILE); raises PatchFileError if malformed."""
        spec = lpatch.read(path).spec
        return cls(path, spec.changed_count, path.stat().st_size, targets)


def installed_package() -> Path:
    """Directory of the kvserver package this interpreter imports (the code `livepatch serve kv` runs)."""
    import kvserver

    return Path(kvserver.__file__).resolve().parent


def handler_functions(package: Path) -> list[tuple[str, str]]:
    """(path relative to the package's parent, name) of every module-level `def *_command` in
    commands/*.py, in file then line order."""
    out = []
    for path in sorted((package / "commands").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = f"{package.name}/commands/{path.name}"
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_command"):
                out.append((rel, node.name))
    return out


def insert_into(source: str, names: set[str], lines_for: Insertion) -> tuple[str, list[str]]:
    """Source with `lines_for(...)` inserted into each named module-level function; and the names done."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, list[str]]] = []
    done: list[str] = []
    for node in tree.body:
        if not (isinstance(node, ast.FunctionDef) and node.name in names):
            continue
        body = node.body
        first = body[0]
        if (
            isinstance(first, ast.Expr)
            and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)
            and len(body) > 1
        ):
            first = body[1]
        if first.lineno == node.lineno:
            continue  # `def f(): return x` on one line: no room to insert without reflowing
        indent = lines[first.lineno - 1][: first.col_offset]
        params = [a.arg for a in node.args.posonlyargs + node.args.args]
        edits.append((first.lineno - 1, [line + "\n" for line in lines_for(indent, params)]))
        done.append(node.name)
    for index, new in sorted(edits, reverse=True):  # bottom-up: earlier indexes stay valid
        lines[index:index] = new
    new_source = "".join(lines)
    ast.parse(
        new_source
    )  # a transformation that breaks the syntax is a bug here, not in the server
    return new_source, done


def copy_package(package: Path, root: Path) -> Path:
    """root/<package name>/... without caches; returns root."""
    dest = root / package.name
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(package, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root


def make_version(
    package: Path, root: Path, targets: list[tuple[str, str]], lines_for: Insertion
) -> list[str]:
    """Copy the package under root and apply the insertion to the targets; returns "rel:name" changed."""
    copy_package(package, root)
    by_file: dict[str, set[str]] = {}
    for rel, name in targets:
        by_file.setdefault(rel, set()).add(name)
    changed = []
    for rel, names in by_file.items():
        path = root / rel
        new_source, done = insert_into(path.read_text(encoding="utf-8"), names, lines_for)
        path.write_text(new_source, encoding="utf-8")
        changed += [f"{rel}:{n}" for n in sorted(done)]
    return changed


def diff(old_root: Path, new_root: Path, package: str, out: Path) -> None:
    """`livepatch diff OLD NEW --package P -o OUT --category thread-local --key K`; raises with its
    output."""
    argv = [
        livepatch_executable(), "diff", str(old_root), str(new_root),
        "--package", package, "-o", str(out), "--category", "thread-local",
        "--key", str(harness_key()[0]),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(
            f"`livepatch diff` failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}".strip()
        )


def build(
    workdir: Path, name: str, targets: list[tuple[str, str]], lines_for: Insertion
) -> BuiltPatch:
    """A patch installed -> installed+insertion for the targets, written to workdir/name.lpatch."""
    package = installed_package()
    old = copy_package(package, workdir / f"{name}-old")
    changed = make_version(package, workdir / f"{name}-new", targets, lines_for)
    if not changed:
        raise RuntimeError(f"none of {targets} could be changed in {package}")
    out = workdir / f"{name}.lpatch"
    diff(old, workdir / f"{name}-new", package.name, out)
    return BuiltPatch.from_file(out, tuple(changed))


def builtin_patch(workdir: Path) -> BuiltPatch:
    """The default patch of `livepatch bench`: GET's handler gains a harmless statement."""
    return build(workdir, "builtin", [HOT_FUNCTION], bench_lines)


def sized_patch(workdir: Path, functions: int) -> BuiltPatch:
    """A patch changing the first `functions` handlers (fewer if kvserver has fewer)."""
    targets = handler_functions(installed_package())[:functions]
    return build(workdir, f"size{functions}", targets, bench_lines)


def demo_patches(workdir: Path) -> tuple[BuiltPatch, BuiltPatch]:
    """(bug, fix): installed -> buggy GET, and buggy -> installed."""
    package = installed_package()
    clean = copy_package(package, workdir / "clean")
    changed = make_version(package, workdir / "buggy", [HOT_FUNCTION], bug_lines)
    if not changed:
        raise RuntimeError(f"cannot plant the demo's bug: no {HOT_FUNCTION[1]} in {package}")
    bug, fix = workdir / "bug.lpatch", workdir / "fix.lpatch"
    diff(clean, workdir / "buggy", package.name, bug)
    diff(workdir / "buggy", clean, package.name, fix)
    return BuiltPatch.from_file(bug, tuple(changed)), BuiltPatch.from_file(fix, tuple(changed))
