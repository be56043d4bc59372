"""Measure patchability over real git histories: run `livepatch corpus` on each project and print the
markdown tables docs/patchability.md reports ("Measuring patchability over a git history").

    python3 scripts/patchability.py waitress=PATH h11=PATH kvserver=PATH [--out DIR]

PATH is a clone or a bare repository of the project (e.g. what `git clone --bare
https://github.com/Pylons/waitress` makes); the package, range and layout of each project are in
PROJECTS. Each project's full corpus document is kept in DIR/NAME/corpus.json (with its accepted patches
in DIR/NAME/patches/). Besides the corpus's own figures it breaks the module-state refusals down by
what the statements did, read from the refusals' reasons (best effort: the differ names at most three
statements added and three removed per module), and ranks the refusal *reasons* (finer than the kinds:
`reason_class`) by the commits each one alone blocks: "unblocked if this reason were gone" counts the
refused commits all of whose refusals are of that one reason (a commit with two reasons counts for
neither until both are handled).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

LIVEPATCH = str(Path(sys.executable).parent / "livepatch")
# A commit "is a fix" when its subject says so: a heuristic, for the fixes-only figure issue 13 quotes.
FIX = re.compile(r"\b(fix|fixes|fixed|bug|bugfix|crash|regression|cve|security|vulnerab)", re.I)
# name -> (package, range, --paths or None)
PROJECTS: dict[str, tuple[str, str, str | None]] = {
    "waitress": ("waitress", "..HEAD", None),
    "h11": ("h11", "..HEAD", None),
    "kvserver": ("kvserver", "..main", "src"),
}


def corpus(
    name: str, repo: str, out: Path, timeout: float | None = None
) -> tuple[list[str], dict[str, Any]]:
    package, rng, paths = PROJECTS[name]
    argv = ["livepatch", "corpus", "--git", repo, rng, "--package", package]
    argv += ["--paths", paths] if paths else []
    argv += ["--timeout", str(timeout)] if timeout else []
    argv += ["--json", "--out", str(out / name)]
    proc = subprocess.run(
        [LIVEPATCH, *argv[1:]], capture_output=True, text=True, check=False, timeout=4 * 3600
    )
    if proc.returncode != 0:
        sys.exit(f"{name}: {proc.stdout.strip() or proc.stderr.strip()}")
    doc: dict[str, Any] = json.loads(proc.stdout)
    return argv, doc


def reuse(name: str, repo: str, out: Path) -> tuple[list[str], dict[str, Any]]:
    package, rng, paths = PROJECTS[name]
    argv = ["livepatch", "corpus", "--git", repo, rng, "--package", package]
    argv += ["--paths", paths] if paths else []
    argv += ["--json", "--out", str(out / name)]
    doc: dict[str, Any] = json.loads((out / name / "corpus.json").read_text())
    return argv, doc


def module_state_shapes(doc: dict[str, Any]) -> Counter[str]:
    """Commits refused for module state, by what their module-level statements did."""
    shapes: Counter[str] = Counter()
    for c in doc["commits"]:
        reasons = [r["reason"] for r in c["refusals"] if r["kind"] == "module-state"]
        if not reasons:
            continue
        text = " ".join(reasons)
        new, gone = "is new or changed" in text, "is gone" in text
        if "`__all__" in text:
            shapes["edits `__all__`"] += 1
        if new and not gone:
            shapes["only adds statements (new constants, new code at top level)"] += 1
        elif gone and not new:
            shapes["only removes statements"] += 1
        else:
            shapes["changes statements (one removed, one added)"] += 1
    return shapes


# (reason class, pattern on "kind: reason"), first match wins: what a refusal is about, finer than its kind
_REASONS: list[tuple[str, re.Pattern[str]]] = [
    (n, re.compile(p, re.S))
    for n, p in [
        (
            "star import added/removed",
            r"^module-state: module-level state changed \(`from \S+ import \*`",
        ),
        (
            "if/try block at module level",
            r"^module-state: module-level state changed \(`(if|try)\b",
        ),
        ("`__all__` edited in code", r"^module-state: .*`__all__"),
        ("code reads globals()/vars()", r"^module-state: .*module's namespace itself"),
        ("value read when the module body ran", r"^module-state: .*when the module body ran"),
        ("statements reordered", r"^module-state: .*reordered"),
        ("other module-level statement", r"^module-state: "),
        (
            "class value read by the class body / bound twice",
            r"^class-state: .*(bound more than once|read it)",
        ),
        ("class-level statement changed", r"^class-state: "),
        ("class bases/metaclass changed", r"^class-layout: .*bases or metaclass"),
        ("__slots__ changed", r"^class-layout: .*__slots__"),
        ("new instance attribute", r"^instance-attribute: "),
        ("import binds another object", r"^import: "),
        ("definition changes kind", r"^kind-change: "),
    ]
]


def reason_class(refusal: dict[str, Any]) -> str:
    text = f"{refusal['kind']}: {refusal['reason']}"
    for name, pattern in _REASONS:
        if pattern.search(text):
            return name
    return str(refusal["kind"])


def reason_ranking(doc: dict[str, Any]) -> list[tuple[str, int, int, str]]:
    """(reason class, refused commits with it, commits unblocked if it alone were gone, example sha),
    most unblocked first. A refused commit a confirmed transformer would patch counts its instance
    attributes as the reason "new instance attribute (transformer available)"."""
    with_it: Counter[str] = Counter()
    alone: Counter[str] = Counter()
    example: dict[str, str] = {}
    for c in doc["commits"]:
        if c["outcome"] != "refused":
            continue
        classes = {reason_class(r) for r in c["refusals"]}
        if c.get("accepted_with_transformer"):
            classes = {
                "new instance attribute (transformer available)"
                if k == "new instance attribute"
                else k
                for k in classes
            }
        for k in classes:
            with_it[k] += 1
            example.setdefault(k, c["sha"][:10])
        if len(classes) == 1:
            alone[next(iter(classes))] += 1
    return sorted(
        ((k, n, alone[k], example[k]) for k, n in with_it.items()),
        key=lambda t: (-t[2], -t[1], t[0]),
    )


def markdown(name: str, argv: list[str], doc: dict[str, Any]) -> str:
    s = doc["summary"]
    o = s["outcomes"]
    changing = s["commits_changing_package"]
    lines = [
        f"### {name}",
        "",
        "```",
        shlex.join(argv),
        "```",
        "",
        f"Range {doc['range']} resolved to {(doc['range_commits'][0] or 'the root')[:12]}.."
        f"{doc['range_commits'][1][:12]}. "
        f"{s['commits_seen']} first-parent commits seen, {changing} change the package's code: "
        f"**{o['accepted']} accepted ({s['accepted_pct']}%)**, {o['refused']} refused, "
        f"{o['empty']} empty, {o['error']} errors; accepted among the {changing - o['empty']} "
        f"commits whose code changed: {s['accepted_of_code_changes_pct']}%; among the "
        f"{s['compiling_code_changes']} whose code changed and compiles under this Python: "
        f"**{s['accepted_of_compiling_code_changes_pct']}%**. With `--accept-transformer` confirmed "
        f"(+{s['refused_but_accepted_with_transformer']} commits): {s['accepted_with_transformer_pct']}% "
        f"of the changing commits, {s['accepted_with_transformer_of_compiling_code_changes_pct']}% of "
        "those whose code changed and compiles.",
        "",
        "| refusal kind | commits | % of changing | only this kind | example |",
        "|---|---|---|---|---|",
    ]
    for k in s["refusals_by_kind"]:
        lines.append(
            f"| `{k['kind']}` | {k['commits']} | {k['pct_of_changing']} | {k['sole']} | "
            f"{k['example'][:10]} |"
        )
    for k in s["errors_by_kind"]:
        lines.append(
            f"| error: {k['kind']} | {k['commits']} | {k['pct_of_changing']} | | "
            f"{k['example'][:10]} |"
        )
    fixes = [c for c in doc["commits"] if c["outcome"] != "skipped" and FIX.search(c["subject"])]
    fixed = sum(1 for c in fixes if c["outcome"] == "accepted")
    if fixes:
        lines += [
            "",
            f"Commits whose subject names a fix (`{FIX.pattern}`): {len(fixes)}, accepted "
            f"{fixed} ({round(100 * fixed / len(fixes), 1)}%).",
        ]
    steps = ", then ".join(f"`{w['kind']}` → {w['accepted_pct']}%" for w in s["widening"])
    lines += ["", f"Widening (upper bound): {steps}." if steps else "No refusals.", ""]
    shapes = module_state_shapes(doc)
    if shapes:
        lines.append("Module-state refusals: " + "; ".join(f"{v} {k}" for k, v in shapes.items()))
        lines.append("")
    ranking = reason_ranking(doc)
    if ranking:
        lines += [
            "| refusal reason | refused commits with it | unblocked if this reason were gone | example |",
            "|---|---|---|---|",
            *(f"| {k} | {n} | {a} | {e} |" for k, n, a, e in ranking),
            "",
        ]
    crashes = [c for c in doc["commits"] if c["error_kind"] == "differ-crash"]
    for c in crashes:
        lines.append(f"- differ crash at {c['sha'][:10]}: {c['reason']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repos", nargs="+", metavar="NAME=PATH", help=f"NAME in {sorted(PROJECTS)}")
    parser.add_argument("--out", type=Path, default=None, help="keep the corpus documents here")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="print the tables from the corpus documents already in --out (no corpus run)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=None,
        help="seconds per commit (livepatch corpus --timeout; its default is 60 s of wall time, which "
        "a heavily loaded machine can exceed: a commit then counts as an error)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        for item in args.repos:
            name, _, path = item.partition("=")
            if name not in PROJECTS or not path:
                parser.error(f"{item!r}: give NAME=PATH with NAME in {sorted(PROJECTS)}")
            argv, doc = (
                corpus(name, path, out, args.timeout) if not args.reuse else reuse(name, path, out)
            )
            print(markdown(name, argv, doc))
            print()


if __name__ == "__main__":
    main()
