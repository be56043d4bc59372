"""Package-level patch building: two versions of a package (directories or git revisions) -> PatchSpec.

The per-definition classification is `livepatch.patch.diff`'s business; this module finds the package in
each version, maps file paths to module names (`pkg/sub/mod.py` -> `pkg.sub.mod`,
`pkg/sub/__init__.py` -> `pkg.sub`), pairs the modules, and hands every module whose source differs to
`patch_from_sources`. Modules present in only one version are reported separately:
- removed modules stay loaded in the server (removed code is never unloaded), so they need no patch;
- added modules are diffed against an empty old source: all their definitions are "added" and the
  runtime adds them to the live module when it exists (a module the server never imported is refused
  by staging, naming it).

Source is read as UTF-8 and never executed. Git revisions are read with `git show REV:path` (no checkout,
the work tree is untouched). Limits: MAX_PACKAGE_FILES files and MAX_SOURCE_BYTES bytes per file.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from livepatch.errors import LivepatchError
from livepatch.patch.limits import MAX_PACKAGE_FILES, MAX_SOURCE_BYTES
from livepatch.patch.model import Category, ChangeKind, PatchSpec, Waiver

_PREFIXES = ("", "src")  # where a package may live inside a version: flat or src layout
_GIT_TIMEOUT_S = 60.0


class PackageError(LivepatchError):
    """A version of the package cannot be found or read."""


@dataclass(frozen=True)
class PackageVersion:
    """One version of a package: module name -> source text."""

    package: str
    where: str  # for messages: the directory or "REPO@REV"
    modules: dict[str, str]


@dataclass(frozen=True)
class ModuleSummary:
    module: str
    status: str  # "changed" | "unchanged" | "added" | "removed"
    counts: dict[str, int] = field(default_factory=dict)  # ChangeKind value -> definitions


@dataclass(frozen=True)
class PackagePatch:
    spec: PatchSpec
    modules: tuple[ModuleSummary, ...]
    waived: tuple[Waiver, ...] = ()  # refusals the hooks file covers, each with its hook
    category_reason: str = ""  # why the patch has its category
    generated_transformer: str | None = (
        None  # what --accept-transformer generated (in hooks_source)
    )

    @property
    def removed_modules(self) -> list[str]:
        return [m.module for m in self.modules if m.status == "removed"]


def module_name(relative: PurePosixPath, package: str) -> str:
    """`relative` is a .py path below the package directory."""
    parts = list(relative.with_suffix("").parts)
    if parts and parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _package_dir(package: str) -> PurePosixPath:
    if not package or not all(p.isidentifier() for p in package.split(".")):
        raise PackageError(f"{package!r} is not a valid package name")
    return PurePosixPath(*package.split("."))


def _check_size(size: int, what: str) -> None:
    if size > MAX_SOURCE_BYTES:
        raise PackageError(
            f"{what} is {size} bytes, over the limit of {MAX_SOURCE_BYTES} per module"
        )


def _decode(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PackageError(f"{what} is not UTF-8 text: {exc.reason}") from exc


def read_directory(root: Path, package: str) -> PackageVersion:
    """The package as found at ROOT/PKG or ROOT/src/PKG."""
    rel = _package_dir(package)
    for prefix in _PREFIXES:
        pkg_dir = root / prefix / rel
        if (pkg_dir / "__init__.py").is_file():
            break
    else:
        raise PackageError(
            f"no package {package} in {root} (looked for {root / rel}/__init__.py and "
            f"{root / 'src' / rel}/__init__.py)"
        )
    modules: dict[str, str] = {}
    for path in sorted(pkg_dir.rglob("*.py")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        if len(modules) >= MAX_PACKAGE_FILES:
            raise PackageError(f"{pkg_dir} has more than {MAX_PACKAGE_FILES} modules")
        _check_size(path.stat().st_size, str(path))
        relative = PurePosixPath(path.relative_to(pkg_dir).as_posix())
        modules[module_name(relative, package)] = _decode(path.read_bytes(), str(path))
    return PackageVersion(package, str(root), modules)


def _git(repo: Path, *args: str) -> bytes:
    try:
        proc = subprocess.run(
            ["git", "-C", str(repo), *args],
            capture_output=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except FileNotFoundError as exc:
        raise PackageError("git is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise PackageError(f"git {' '.join(args)} took longer than {_GIT_TIMEOUT_S} s") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()
        raise PackageError(f"git {' '.join(args)} failed in {repo}: {err}")
    return proc.stdout


def read_git(repo: Path, rev: str, package: str) -> PackageVersion:
    """The package as committed at REV (found at PKG/ or src/PKG/ of the repository's root)."""
    if rev.startswith("-"):
        raise PackageError(f"{rev!r} is not a revision")  # never let a revision become a git option
    commit = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").decode().strip()
    rel = _package_dir(package)
    names = [
        n
        for n in _git(repo, "ls-tree", "-r", "-z", "--name-only", commit)
        .decode("utf-8")
        .split("\0")
        if n
    ]
    pkg_dir: PurePosixPath | None = None
    for prefix in _PREFIXES:
        candidate = PurePosixPath(prefix, rel) if prefix else rel
        if str(candidate / "__init__.py") in names:
            pkg_dir = candidate
            break
    if pkg_dir is None:
        raise PackageError(f"no package {package} in {repo} at {rev} (no {rel}/__init__.py)")
    files = [
        PurePosixPath(n)
        for n in names
        if n.endswith(".py") and PurePosixPath(n).is_relative_to(pkg_dir) and "__pycache__" not in n
    ]
    if len(files) > MAX_PACKAGE_FILES:
        raise PackageError(f"{package} at {rev} has more than {MAX_PACKAGE_FILES} modules")
    modules: dict[str, str] = {}
    for path in sorted(files):
        data = _git(repo, "show", f"{commit}:{path}")
        what = f"{path} at {rev}"
        _check_size(len(data), what)
        modules[module_name(path.relative_to(pkg_dir), package)] = _decode(data, what)
    return PackageVersion(package, f"{repo}@{rev}", modules)


def build_patch(
    old: PackageVersion,
    new: PackageVersion,
    *,
    category: Category | None = Category.PROCESS,
    description: str = "",
    hooks_source: str | None = None,
    patch_id: str | None = None,
    accept_transformer: bool = False,
) -> PackagePatch:
    """Diff every module of the two versions. The spec's `refusals` say whether it may be applied.
    `category` None: inferred (diff.infer_category; `PackagePatch.category_reason` says why).
    `accept_transformer`: the author confirms a generated transform hook for new instance attributes
    (patch/transformer.py)."""
    from livepatch.patch.diff import diff_sources  # RT-code's differ

    pairs: dict[str, tuple[str | None, str]] = {}
    statuses: dict[str, str] = {}
    for name in sorted(old.modules.keys() | new.modules.keys()):
        if name not in new.modules:
            statuses[name] = "removed"
        elif name not in old.modules:
            statuses[name] = "added"
            pairs[name] = (None, new.modules[name])  # its top level runs for the first time
        elif old.modules[name] == new.modules[name]:
            statuses[name] = "unchanged"
        else:
            statuses[name] = "changed"
            pairs[name] = (old.modules[name], new.modules[name])
    result = diff_sources(
        pairs,
        category=category,
        patch_id=patch_id,
        package=new.package,
        description=description,
        hooks_source=hooks_source,
        context=old.modules,  # the cross-module rules read every module the server loaded
        accept_transformer=accept_transformer,
    )
    spec = result.spec
    return PackagePatch(
        spec,
        tuple(_summaries(spec, statuses)),
        result.waived,
        result.category_reason,
        result.generated_transformer,
    )


def _summaries(spec: PatchSpec, statuses: Mapping[str, str]) -> list[ModuleSummary]:
    counts: dict[str, dict[str, int]] = {}
    for m in spec.modules:
        c = counts.setdefault(m.module, {k.value: 0 for k in ChangeKind})
        for change in m.changes:
            c[change.kind.value] += 1
    refused = {r.module for r in spec.refusals}
    out = []
    for name, status in statuses.items():
        if status == "changed" and name not in counts and name not in refused:
            status = "unchanged"  # the text differs, the code does not (comments, line shifts)
        out.append(ModuleSummary(name, status, counts.get(name, {k.value: 0 for k in ChangeKind})))
    return out
