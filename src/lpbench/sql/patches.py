"""The built-in patch of `livepatch bench --server sql`, made at run time from the INSTALLED sqlserver
(so its fingerprints match the running code) with the same transformation as kvserver's
(lpbench.patches): `_lpbench_rev = 2` inserted at the top of `sqlserver.fastpath.parse_burst`, which every
request's bytes go through (Session.receive), so the update is a real code swap on the hot path of
every workload. Built by `livepatch diff --category thread-local`, unsigned."""

from __future__ import annotations

from pathlib import Path

from lpbench.patches import BuiltPatch, bench_lines, copy_package, diff, insert_into

HOT_FUNCTION = ("sqlserver/fastpath.py", "parse_burst")


def sqlserver_package() -> Path:
    import sqlserver

    return Path(sqlserver.__file__).resolve().parent


def builtin_patch(workdir: Path) -> BuiltPatch:
    package = sqlserver_package()
    old = copy_package(package, workdir / "sql-old")
    new = copy_package(package, workdir / "sql-new")
    rel, name = HOT_FUNCTION
    path = new / rel
    source, done = insert_into(path.read_text(encoding="utf-8"), {name}, bench_lines)
    if done != [name]:
        raise RuntimeError(f"cannot build the built-in sql patch: no {name} in {rel}")
    path.write_text(source, encoding="utf-8")
    out = workdir / "builtin-sql.lpatch"
    diff(old, new, package.name, out)
    return BuiltPatch.from_file(out, (f"{rel}:{name}",))
