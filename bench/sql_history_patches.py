"""Patches #1-#5 of the sqlserver figures, chosen by `livepatch corpus` from this repository's history.

.venv/bin/python bench/sql_history_patches.py choose [--repo .] [--out DIR]
    runs the corpus on every commit of main that changes src/sqlserver, prints the Markdown table
    of every commit's outcome and the CHOSEN tuple for lpbench/sql/history.py (the rule is there)
.venv/bin/python bench/sql_history_patches.py today --since REV [--rev HEAD] [--repo .] [--out DIR]
    the same survey over the sqlserver commits of SINCE..REV only; prints their table and the newest
    one that applied: the candidate for history.TODAY (figures 1-4's patch)
.venv/bin/python bench/sql_history_patches.py check [--repo .]
    builds patches #1-#5 from git, starts each parent's sqlserver and applies and reverts its
    patch with both methods: every one must apply (prints the agent's timings)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from lpbench.sql import history


def table(records: list[dict[str, Any]]) -> None:
    print(
        "| commit | corpus | functions | bytes | on its parent's server | subject / refusal kinds |"
    )
    print("|---|---|---|---|---|---|")
    for c in records:
        what = (
            c["subject"][:70]
            if c["outcome"] == "accepted"
            else ", ".join(c["refusal_kinds"] or [c.get("error_kind") or ""])
        )
        tried = c["trial"] or ("-" if c["servable"] else "no server at the parent")
        tried = " ".join(tried.split()).replace("|", "/")  # one Markdown cell
        print(f"| {c['sha'][:7]} | {c['outcome']} | {len(c['functions'])} | {c['bytes']:,} | "
              f"{tried[:160]} | {what} |")  # fmt: skip


def choose(repo: Path, out: Path) -> int:
    records, accepted = history.survey(repo, out)
    (out / "survey.json").write_text(json.dumps(records, indent=1))
    table(records)
    chosen = history.choose(accepted)
    print("\nCHOSEN: tuple[HistoryCommit, ...] = (")
    for c in chosen:
        print(f"    HistoryCommit({c.sha!r}, {c.functions}, {c.bytes}, {c.subject[:60]!r}),")
    print(")")
    return 0


def today(repo: Path, out: Path, since: str, rev: str) -> int:
    records, accepted = history.survey(repo, out, f"{since}..{rev}")
    (out / "survey-today.json").write_text(json.dumps(records, indent=1))
    table(records)
    if not accepted:
        print("\nno commit of the range applied")
        return 1
    c = accepted[-1]
    print(f"\nTODAY = HistoryCommit({c.sha!r}, {c.functions}, {c.bytes}, {c.subject[:60]!r})")
    return 0


def check(repo: Path) -> int:
    bad = 0
    with tempfile.TemporaryDirectory(prefix="lpb-hist-") as tmp:
        for p in history.build(repo, Path(tmp)):
            problem = history.trial(p, Path(tmp))
            print(
                f"{p.label}, {p.patch.size_bytes:,} bytes: {problem or 'applied and reverted, global and local'}"
            )
            bad += problem is not None
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["choose", "today", "check"])
    ap.add_argument("--since", default="3cfe766", help="today: the range's start (excluded)")
    ap.add_argument("--rev", default="HEAD", help="today: the range's end")
    ap.add_argument("--repo", type=Path, default=Path("."))
    ap.add_argument("--out", type=Path, default=Path("results/sql-history-corpus"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.what == "choose":
        return choose(args.repo, args.out)
    if args.what == "today":
        return today(args.repo, args.out, args.since, args.rev)
    return check(args.repo)


if __name__ == "__main__":
    sys.exit(main())
