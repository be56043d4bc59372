"""`livepatch corpus`: run the differ over a git history and report how much of it is patchable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from livepatch.corpus import walk
from livepatch.corpus.classify import DEFAULT_TIMEOUT_S, Outcome
from livepatch.corpus.history import CorpusError
from livepatch.corpus.summary import KindCount, Summary, summarise
from livepatch.patch.safetext import printable

_out = Console(highlight=False)
_PIPE_WIDTH = 160  # the table's width when stdout is a file or a pipe (rich would use 80)
_err = Console(stderr=True, highlight=False)

_HELP = """Run the differ on every commit of a git history that changes a package's code, and report
which commits would have produced a live patch, which were refused and why.

The first-parent chain of RANGE (OLD..NEW, or ..NEW for all of NEW's history) is walked oldest first;
commits changing only tests, docs or other files are skipped. Each commit is diffed against its first
parent, read with git archive (bare repositories work; no checkout is touched), with a time and memory
limit per commit. Outcomes: accepted, refused, empty (no code change), error (does not compile, too
large, timeout, a differ crash), skipped.

\b
Examples:
  livepatch corpus --git ../waitress ..main --package waitress
  livepatch corpus --git . v1.0..HEAD --package kvserver --paths src --json --out corpus-out/
"""


@click.command("corpus", help=_HELP)
@click.option(
    "--git",
    "git",
    nargs=2,
    type=str,
    required=True,
    metavar="REPO RANGE",
    help="Repository (clone or bare) and revision range OLD..NEW (..NEW: from the root commit).",
)
@click.option(
    "--package", "-p", "package", required=True, help="Package to measure, e.g. waitress."
)
@click.option(
    "--paths",
    default=None,
    metavar="SUBDIR",
    help="Directory holding the package (e.g. src); default: the root, else src/, at each commit.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Only the N most recent commits that change the package's code.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1, max=3600),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds the differ may take on one commit.",
)
@click.option(
    "--max-lines",
    type=click.IntRange(min=1),
    default=walk.DEFAULT_MAX_LINES,
    show_default=True,
    help="Package code lines one commit may change; larger commits are reported as too-large.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write corpus.json and every accepted patch (patches/SHA.lpatch, unsigned) here.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print the result as JSON (on failure: {"ok": false, "error": ...}).',
)
def corpus_command(
    git: tuple[str, str],
    package: str,
    paths: str | None,
    limit: int | None,
    timeout: float,
    max_lines: int,
    out: Path | None,
    as_json: bool,
) -> None:
    opts = walk.CorpusOptions(
        repo=Path(git[0]),
        range=git[1],
        package=package,
        paths=paths,
        limit=limit,
        timeout=timeout,
        max_lines=max_lines,
        out=out / "patches" if out is not None else None,
    )
    try:
        walk.check(opts)  # bad input is reported before anything is written
        if opts.out is not None:
            opts.out.mkdir(parents=True, exist_ok=True)
    except CorpusError as exc:
        raise click.ClickException(str(exc)) from exc
    except OSError as exc:
        raise click.ClickException(f"cannot create --out {out}: {exc.strerror}") from exc
    try:
        if as_json or not _err.is_terminal:
            done = walk.run(opts)
        else:
            with _err.status("reading the history") as status:
                done = walk.run(opts, lambda n, total: status.update(f"commit {n}/{total}"))
    except CorpusError as exc:
        raise click.ClickException(str(exc)) from exc
    summary = summarise(done.results)
    doc = _document(opts, summary, done)
    if out is not None:
        try:
            (out / "corpus.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        except OSError as exc:
            raise click.ClickException(
                f"cannot write {out / 'corpus.json'}: {exc.strerror}"
            ) from exc

    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
    else:
        if not _out.is_terminal:
            _out.width = _PIPE_WIDTH
        _out.print(_table(opts, summary, _out.width))


def _document(opts: walk.CorpusOptions, summary: Summary, done: walk.CorpusRun) -> dict[str, Any]:
    return {
        "ok": True,
        "repo": str(opts.repo),
        "range": opts.range,
        "range_commits": [done.old, done.new],  # the range as resolved when the corpus ran
        "package": opts.package,
        "paths": opts.paths,
        "summary": summary.to_dict(),
        "commits": [r.to_dict() for r in done.results],
    }


def _example(k: KindCount, width: int) -> Text:
    reason = printable(k.example_reason)
    return Text(f"{k.example[:10]} {reason[:width] + '…' if len(reason) > width else reason}")


_NUMBERS = ("commits", "% of changing", "only this kind")
_LABEL_WIDTH = 36
_FIXED_WIDTH = _LABEL_WIDTH + sum(len(h) for h in _NUMBERS) + 16  # with padding and borders


def _table(opts: walk.CorpusOptions, s: Summary, width: int) -> Table:
    """The summary; the example column only when WIDTH leaves room for it (an example is in --json)."""
    room = width - _FIXED_WIDTH - 16  # the column's own padding, its sha and some reason
    title = f"{opts.package} over {printable(str(opts.repo))} {printable(opts.range)}"
    table = Table(title=title, title_justify="left")
    table.add_column("", no_wrap=True, min_width=_LABEL_WIDTH)
    for header in _NUMBERS:
        table.add_column(header, justify="right", no_wrap=True, min_width=len(header))
    if room > 0:
        table.add_column("example (first commit, first reason)", no_wrap=True)

    def row(label: str | Text, *cells: str, example: KindCount | None = None) -> None:
        extra = [_example(example, room) if example else ""] if room > 0 else []
        table.add_row(label, *cells, *extra)

    row("seen", str(s.seen), "", "")
    row("change the package's code", str(s.changing), "100", "")
    for o in (Outcome.ACCEPTED, Outcome.REFUSED, Outcome.EMPTY, Outcome.ERROR):
        count = s.outcomes.get(o.value, 0)
        style = "bold green" if o is Outcome.ACCEPTED else ""
        row(Text(o.value, style=style), str(count), f"{s.pct(count):g}", "")
    for k in s.refusals:
        row(f"  refused: {k.kind}", str(k.commits), f"{s.pct(k.commits):g}", str(k.sole), example=k)
    for k in s.errors:
        row(f"  error: {k.kind}", str(k.commits), f"{s.pct(k.commits):g}", "", example=k)
    table.caption = (
        f"accepted: {s.accepted_pct:g}% of the commits changing the package "
        f"({s.accepted_of_code_pct:g}% of those whose code changed)"
    )
    return table
