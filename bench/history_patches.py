"""Patches #1-#5 of the kvserver or sqlserver figures, chosen by `livepatch corpus` from this repository's
history (the rule: lpbench.history; each server's choice: lpbench.kv_history, lpbench.sql.history).

.venv/bin/python bench/history_patches.py choose --server kv|sql [--repo .] [--out DIR] [--jobs N]
    runs the corpus on every commit of main that changes src/<package>, tries each accepted one on its
    parent's server, prints the Markdown table of every commit's outcome and the CHOSEN tuple for the
    server's history module
.venv/bin/python bench/history_patches.py today --server kv|sql --since REV [--rev HEAD] [--repo .] [--out DIR]
    the same survey over the commits of SINCE..REV only; prints their table and the newest one that
    applied (sql: the candidate for history.TODAY, figures 1-4's patch)
.venv/bin/python bench/history_patches.py check --server kv|sql [--repo .]
    builds patches #1-#5 from git, starts each parent's server and applies and reverts its patch with
    both methods: every one must apply
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

from lpbench import history as common
from lpbench.commits import SUBJECTS


def table(records: list[dict[str, Any]]) -> None:
    for line in common.lines(records):
        print(line)


def _progress(c: dict[str, Any]) -> None:
    print(f"  {c['sha'][:7]} {c['outcome']}: {c['trial'] or '-'}", file=sys.stderr, flush=True)


def choose(subject: ModuleType, repo: Path, out: Path, jobs: int) -> int:
    records, accepted = subject.survey(repo, out, progress=_progress, jobs=jobs)
    (out / "survey.json").write_text(json.dumps(records, indent=1))
    table(records)
    chosen = common.choose(accepted)
    print("\nCHOSEN: tuple[HistoryCommit, ...] = (")
    for c in chosen:
        print(f"    HistoryCommit({c.sha!r}, {c.functions}, {c.bytes}, {c.subject[:60]!r}),")
    print(")")
    return 0


def today(subject: ModuleType, repo: Path, out: Path, since: str, rev: str, jobs: int) -> int:
    records, accepted = subject.survey(repo, out, f"{since}..{rev}", progress=_progress, jobs=jobs)
    (out / "survey-today.json").write_text(json.dumps(records, indent=1))
    table(records)
    if not accepted:
        print("\nno commit of the range applied")
        return 1
    c = accepted[-1]
    print(f"\nTODAY = HistoryCommit({c.sha!r}, {c.functions}, {c.bytes}, {c.subject[:60]!r})")
    return 0


def check(subject: ModuleType, repo: Path) -> int:
    bad = 0
    with tempfile.TemporaryDirectory(prefix="lpb-hist-") as tmp:
        for p in subject.build(repo, Path(tmp)):
            problem = subject.trial(p, Path(tmp))
            print(
                f"{p.label}, {p.patch.size_bytes:,} bytes: {problem or 'applied and reverted, global and local'}"
            )
            bad += problem is not None
    return 1 if bad else 0


def main(argv: list[str] | None = None, server: str | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["choose", "today", "check"])
    if server is None:
        ap.add_argument("--server", choices=sorted(SUBJECTS), required=True)
    ap.add_argument("--since", default="3cfe766", help="today: the range's start (excluded)")
    ap.add_argument("--rev", default="HEAD", help="today: the range's end")
    ap.add_argument("--repo", type=Path, default=Path("."))
    ap.add_argument("--out", type=Path, default=None,
                    help="default results/<server>-history-corpus")  # fmt: skip
    ap.add_argument("--jobs", type=int, default=1, help="commits surveyed at a time")
    args = ap.parse_args(argv)
    server = server or args.server
    subject = SUBJECTS[server]
    out = args.out or Path(f"results/{server}-history-corpus")
    out.mkdir(parents=True, exist_ok=True)
    if args.what == "choose":
        return choose(subject, args.repo, out, args.jobs)
    if args.what == "today":
        return today(subject, args.repo, out, args.since, args.rev, args.jobs)
    return check(subject, args.repo)


if __name__ == "__main__":
    sys.exit(main())
