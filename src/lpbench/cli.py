"""`livepatch bench` and `livepatch demo` (click commands, found through the livepatch.commands entry
points). Argument checking and output only; the work is in bench, experiments and demo."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from livepatch.errors import LivepatchError
from livepatch.runtime.lifecycle import Outcome
from lpbench.runner import BenchConfig
from lpbench.servers import SERVERS
from lpbench.sql.workloads import SQL_WORKLOAD_NAMES
from lpbench.updates import METHODS, RESTARTED, UPDATE_OK
from lpbench.workloads import WORKLOADS

STATE_SIZE_RATE = 1000.0


def _floats(text: str, what: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated numbers, got {text!r}") from None


def _ints(text: str, what: str) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"{what} must be comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise click.BadParameter(f"{what} must be integers >= 1")
    return vals


@click.command("bench")
@click.option("--server", type=click.Choice(sorted(SERVERS)), default="kv", show_default=True)
@click.option("--workload", type=click.Choice(sorted(WORKLOADS) + list(SQL_WORKLOAD_NAMES)), default=None,
              help="kv/redis: get, set, mixed [default: mixed]; sql: noop, ycsb, tpcc, olap [default: noop]")  # fmt: skip
@click.option("--policy", type=click.Choice(["thread-per-connection", "pool"]),
              default="thread-per-connection", show_default=True, help="sql: connection policy")  # fmt: skip
@click.option("--pool-groups", type=click.IntRange(min=1), default=3, show_default=True,
              help="sql --policy pool: thread groups")  # fmt: skip
@click.option("--scale", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="sql: YCSB 1000 x scale rows; TPC-C/OLAP warehouses (below 1: one smaller warehouse)")  # fmt: skip
@click.option("--connections", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              help="seconds per run [default: 30; state-size: 5]")  # fmt: skip
@click.option("--keys", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help="total requests/s, open loop (latency from the scheduled start); default closed loop "
                   f"(state-size: {STATE_SIZE_RATE:g})")  # fmt: skip
@click.option("--update", "updates", default="none,live-global,live-local,restart", show_default=True,
              help=f"comma-separated update methods: {', '.join(METHODS)}")  # fmt: skip
@click.option(
    "--at",
    "at",
    default=None,
    help="update times in seconds [default: 5,10,15,20,25; state-size: 2.5]",
)
@click.option("--patch", "patch_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="a .lpatch to apply and revert alternately (default: the built-in patch of GET)")  # fmt: skip
@click.option("--commit", "commit", default=None, metavar="REV[,REV...]",
              help="instead of a patch file: a commit of this repository's history of the server's package; "
                   "the server runs its parent (from git) and the update is the commit's patch. A hash, a "
                   "name (kv: figures; sql: today, previous) or `chosen` (patches #1-#5; patch-size)")  # fmt: skip
@click.option("--repo", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="--commit: a git clone of the livepatch repository")  # fmt: skip
@click.option("--runs", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="load-driver processes (connections are divided among them)")  # fmt: skip
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--experiment", type=click.Choice(["runs", "patch-size", "state-size"]), default="runs",
              show_default=True, help="runs: figures 1-3; patch-size: figure 4; state-size: figure 5")  # fmt: skip
@click.option(
    "--sizes", default="1,10,100", show_default=True, help="patch-size: changed functions"
)
@click.option(
    "--states", default="10000,100000,1000000", show_default=True, help="state-size: keys"
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("results/bench"),
              show_default=True)  # fmt: skip
@click.option(
    "--json", "as_json", is_flag=True, help="print the summary as JSON instead of a table"
)
@click.option(
    "--replot", is_flag=True, help="redraw the figures of a finished run in --out; run nothing"
)
def bench_command(
    server: str, workload: str | None, policy: str, pool_groups: int, scale: float, connections: int, duration: float | None, keys: int, rate: float | None,
    updates: str, at: str | None, patch_file: Path | None, commit: str | None, repo: Path, runs: int, processes: int, seed: int,
    experiment: str, sizes: str, states: str, out: Path, as_json: bool, replot: bool,
) -> None:  # fmt: skip
    """Measure what clients feel while the server's code is updated; write data, summary.json, plots."""
    from lpbench import bench, experiments, report
    from lpbench.patches import BuiltPatch, builtin_patch

    if replot:
        _replot(out, experiment)
        return
    if workload is None:
        workload = "noop" if server == "sql" else "mixed"
    if (server == "sql") != (workload in SQL_WORKLOAD_NAMES):
        raise click.BadParameter(
            f"--workload {workload} does not fit --server {server}: sql takes "
            f"{', '.join(SQL_WORKLOAD_NAMES)}; kv and redis take {', '.join(sorted(WORKLOADS))}"
        )
    if commit is not None and patch_file is not None:
        raise click.UsageError("--commit and --patch exclude each other (both name the patch)")
    if server == "sql" and experiment != "runs":
        raise click.UsageError(f"--experiment {experiment} exists for --server kv only")
    methods = [m.strip() for m in updates.split(",") if m.strip()]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise click.BadParameter(f"unknown update method(s) {unknown}; known: {', '.join(METHODS)}")
    default_duration, default_at = (
        (5.0, "2.5") if experiment == "state-size" else (30.0, "5,10,15,20,25")
    )
    if experiment == "state-size" and rate is None:
        # Open loop, so a restart's downtime shows as latency of the requests that waited through it
        # (closed loop would only lose the one in-flight request per connection).
        rate = STATE_SIZE_RATE
    cfg = BenchConfig(
        server=server, workload=workload, connections=connections,
        duration_s=duration or default_duration, keys=keys, rate=rate,
        at_s=tuple(_floats(at or default_at, "--at")), processes=processes, seed=seed,
        policy=policy, pool_groups=pool_groups, scale=scale,
    )  # fmt: skip
    try:
        cfg.check()
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    size_list = _ints(sizes, "--sizes")
    state_list = _ints(states, "--states")
    live = experiment != "runs" or any(m.startswith("live-") for m in methods)
    if live and server not in ("kv", "sql"):
        raise click.UsageError(
            f"live updates need the livepatch agent: use --server kv or sql (not {server})"
        )
    out.mkdir(parents=True, exist_ok=True)
    workdir = out / "patches"
    workdir.mkdir(exist_ok=True)
    try:
        commits = None
        if commit is not None:
            from lpbench.commits import prepare

            commits = prepare(server, commit, repo, workdir)
            if experiment != "patch-size" and len(commits) != 1:
                raise click.UsageError(
                    f"--commit names {len(commits)} commits: --experiment {experiment} takes one "
                    "(several, or `chosen`: --experiment patch-size)"
                )
        factory = commits[0].server_factory if commits and experiment != "patch-size" else None
        patches: list[BuiltPatch] = []
        if experiment != "patch-size" and live:
            if commits:
                patches = [commits[0].history.patch]
            elif patch_file:
                patches = [BuiltPatch.from_file(patch_file)]
            elif server == "sql":
                from lpbench.sql.patches import builtin_patch as sql_builtin_patch

                patches = [sql_builtin_patch(workdir)]
            else:
                patches = [builtin_patch(workdir)]
        if experiment == "runs":
            total = cfg.duration_s * runs * len(methods)
            with report.progress_bar(total) as start:
                _, summary = bench.run_series(cfg, methods, runs, patches, out, start, factory)
            failed = [
                f"{r['method']} run {r['index']}: {u['action']} at {u['at_s']:.1f}s {u['outcome']}"
                for r in summary["runs"] for u in r["updates"]
                if u["outcome"] not in UPDATE_OK
            ]  # fmt: skip
            if as_json:
                click.echo(json.dumps(summary["methods"], indent=1, default=str))
            else:
                report.out.print(report.summary_table(summary["methods"], f"lpbench: {server}, {workload}, "
                                     f"{connections} connections, {'rate ' + str(rate) if rate else 'closed loop'}"))  # fmt: skip
        elif experiment == "patch-size":
            with report.progress_bar() as start:
                result = experiments.patch_size_sweep(
                    cfg, size_list, runs, out, workdir, start, commits
                )
            failed = [f"{a['method']} {a['functions']} functions: {a['outcome']}" for a in result["applies"]
                      if a["outcome"] != Outcome.APPLIED]  # fmt: skip
            _print_rows(result["applies"], as_json)
        else:
            cfg = replace(cfg, at_s=cfg.at_s[:1])
            with report.progress_bar() as start:
                result = experiments.state_size_sweep(cfg, state_list, patches, out, start, factory)
            failed = [f"{r['keys']} keys {r['method']}: {r['outcome']}" for r in result["rows"]
                      if r["method"] not in ("fork", "none") and r["outcome"] not in (Outcome.APPLIED, RESTARTED)]  # fmt: skip
            _print_rows(result["rows"], as_json)
    except (RuntimeError, ValueError, OSError, LivepatchError) as exc:  # e.g. a malformed --patch
        raise click.ClickException(str(exc)) from exc
    click.echo(
        f"results in {out}/ (summary.json, PNG figures, per-run requests.npz and events.json)",
        err=True,
    )
    if failed:
        click.echo("some updates did not succeed:\n  " + "\n  ".join(failed), err=True)
        sys.exit(1)


def _replot(out: Path, experiment: str) -> None:
    from lpbench import bench, experiments, report

    if not (out / "summary.json").exists():
        raise click.UsageError(f"--replot: no summary.json in {out} (run without --replot first)")
    try:
        if experiment == "runs":
            paths, methods = bench.replot(out)
            report.out.print(report.summary_table(methods, f"lpbench: {out}"))
        elif experiment == "patch-size":
            paths = [experiments.replot_patch_size(out)]
        else:
            paths = [experiments.replot_state_size(out)]
    except (KeyError, OSError, ValueError) as exc:
        raise click.ClickException(
            f"--replot: {out} does not hold a {experiment} result ({exc})"
        ) from exc
    click.echo("redrawn: " + ", ".join(str(p) for p in paths), err=True)


def _print_rows(rows: list[dict[str, Any]], as_json: bool) -> None:
    from rich.table import Table

    from lpbench import report

    if as_json:
        click.echo(json.dumps(rows, indent=1, default=str))
        return
    table = Table()
    for key in rows[0] if rows else []:
        table.add_column(key, justify="right")
    for row in rows:
        table.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row.values()))
    report.out.print(table)


@click.command("demo")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("demo-output"),
              show_default=True)  # fmt: skip
@click.option("--duration", type=click.FloatRange(min=3), default=8.0, show_default=True,
              help="seconds of client load")  # fmt: skip
def demo_command(out: Path, duration: float) -> None:
    """Live-patch a running kvserver: plant a bug, show it, apply the fix, show no client noticed."""
    from lpbench.demo import run_demo

    try:
        ok = run_demo(out, duration)
    except (RuntimeError, OSError) as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(0 if ok else 1)
