"""`livepatch stress` (a click command, found through the livepatch.commands entry point). Argument
checking and output; the work is in run.py. Exit status: 0 all checks held, 1 a failure (named), 2 bad
arguments."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from livepatch.errors import LivepatchError
from lpbench.stress.common import StressConfig, StressTarget

SERVERS = ("kv", "sql")
HANGS_SHOWN = 20  # hang records printed (all are in --json and report.json)
# A run of 100,000 cycles takes an hour or more; without a terminal the progress bar draws nothing, so a
# plain line goes to stderr this often (a log then tells how far the run got and what it has seen so far).
PROGRESS_EVERY_S = 60.0


def make_target(server: str, policy: str) -> StressTarget:
    if server == "kv":
        from lpbench.stress.kv import KvTarget

        return KvTarget()
    from lpbench.stress.sql import SqlTarget

    return SqlTarget(policy)


@click.command("stress")
@click.option("--server", type=click.Choice(SERVERS), default="kv", show_default=True,
              help="the server to start and stress (kv: kvserver, sql: sqlserver)")  # fmt: skip
@click.option("--policy", type=click.Choice(["thread-per-connection", "pool"]),
              default="thread-per-connection", show_default=True, help="sql: the connection policy")  # fmt: skip
@click.option("--workload", default=None,
              help="also run this lpbench workload as background load (kv: get, set, mixed; "
                   "sql: noop, ycsb, tpcc, olap), checked for failed requests and consistency")  # fmt: skip
@click.option("--load-connections", type=click.IntRange(min=1), default=4, show_default=True,
              help="connections of the --workload load")  # fmt: skip
@click.option("--scale", type=click.FloatRange(min=0, min_open=True), default=0.05, show_default=True,
              help="sql --workload: lpbench's --scale (TPC-C 0.05: one small warehouse)")  # fmt: skip
@click.option("--cycles", type=click.IntRange(min=1), default=100, show_default=True,
              help="apply+revert pairs")  # fmt: skip
@click.option("--methods", default="global,local", show_default=True,
              help="quiescence methods, used in turn, one per cycle")  # fmt: skip
@click.option("--connections", type=click.IntRange(min=1), default=8, show_default=True,
              help="checking connections, each sending version probes and logged writes")  # fmt: skip
@click.option("--request-deadline", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, help="seconds; a request taking longer is a hang")  # fmt: skip
@click.option("--patch-deadline", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="seconds; the runtime aborts a transition at it")  # fmt: skip
@click.option("--plant", default=None,
              help="self-test: plant a failure that must be caught (kv: wrong-write, stale-version; "
                   "any: kill-server)")  # fmt: skip
@click.option("--agent-state/--no-agent-state", default=False, show_default=True,
              help="keep the agent's state directory (stack and history across restarts): one "
                   "journal line and fdatasync per transition, ~11 ms each on a busy machine; off: "
                   "stress never restarts the server, so nothing it checks depends on it")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="write report.json, the patch and the server's log here")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="print the report as JSON")
@click.option("--progress-every", type=click.FloatRange(min=0), default=PROGRESS_EVERY_S,
              show_default=True,
              help="seconds between plain progress lines on stderr when it is not a terminal (a log "
                   "file, CI); 0: after every cycle. On a terminal a progress bar is drawn instead")  # fmt: skip
def stress_command(
    server: str, policy: str, workload: str | None, load_connections: int, scale: float, cycles: int, methods: str, connections: int, request_deadline: float,
    patch_deadline: float, plant: str | None, agent_state: bool, out: Path | None, as_json: bool,
    progress_every: float,
) -> None:  # fmt: skip
    """Apply and revert a patch CYCLES times under load; check every reply against its version."""
    cfg = StressConfig(
        server=server, policy=policy, cycles=cycles,
        methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        connections=connections, request_deadline_s=request_deadline,
        patch_deadline_s=patch_deadline, plant=plant, workload=workload,
        load_connections=load_connections, scale=scale, agent_state=agent_state,
    )  # fmt: skip
    try:
        cfg.check()
        target = make_target(server, policy)
        if plant is not None and plant not in (*target.plants, "kill-server"):
            raise ValueError(f"unknown --plant {plant!r} for --server {server}; known: "
                             f"{', '.join((*target.plants, 'kill-server'))}")  # fmt: skip
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    try:
        report = _with_progress(cfg, target, out, progress_every)
    except (RuntimeError, OSError, LivepatchError) as exc:
        raise click.ClickException(str(exc)) from exc
    if out is not None:
        (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    if as_json:
        click.echo(json.dumps(report, indent=1))
    else:
        _print(report)
    if not report["ok"]:
        click.echo("stress FAILED: " + "; ".join(report["failures"]), err=True)
        for kind, lines in report["examples"].items():
            for line in lines[:5]:
                click.echo(f"  {kind}: {line}", err=True)
        sys.exit(1)


def _with_progress(
    cfg: StressConfig, target: StressTarget, out: Path | None, every_s: float
) -> dict[str, Any]:
    """The run with a progress bar on a terminal, else a plain line on stderr every `every_s` seconds
    (and after the last cycle). Ctrl-C (SIGINT) stops it after the current cycle: the writes are
    still checked and the report printed, saying how many cycles ran (exit 1); a second Ctrl-C
    interrupts at once."""
    import signal
    import threading
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from lpbench.report import console
    from lpbench.stress.run import run_stress

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"), TimeRemainingColumn(), console=console, transient=True,
    ) as bar:  # fmt: skip
        task = bar.add_task(f"stress {cfg.server}", total=cfg.cycles, status="")

        plain = not console.is_terminal
        started = time.monotonic()
        last_line = [started]

        def progress(done: int, totals: dict[str, Any]) -> None:
            status = ", ".join(f"{k} {v}" for k, v in totals.items() if v or k == "requests")
            bar.update(task, completed=done, status=status)
            now = time.monotonic()
            if plain and (now - last_line[0] >= every_s or done == cfg.cycles):
                last_line[0] = now
                click.echo(f"stress {cfg.server}: {done}/{cfg.cycles} cycles in {now - started:.0f} s"
                           f"{', ' + status if status else ''}", err=True)  # fmt: skip

        interrupt = threading.Event()

        def on_sigint(signum: int, frame: object) -> None:
            if interrupt.is_set():
                raise KeyboardInterrupt
            interrupt.set()
            click.echo("stopping after this cycle (Ctrl-C again to stop at once)", err=True)

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            return run_stress(cfg, target, progress, keep=out, interrupt=interrupt)
        finally:
            signal.signal(signal.SIGINT, previous)


def _print(report: dict[str, Any]) -> None:
    from rich.table import Table

    from lpbench.report import out

    table = Table(title=f"livepatch stress: {report['config']['server']}, {report['cycles']} cycles, "
                        f"{report['seconds']} s")  # fmt: skip
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key in ("transitions", "requests", "load_requests", "probes_by_version", "failed_requests", "hung_requests",
                "wrong_version_replies", "lost_writes", "aborted_patches", "failed_patches",
                "hung_patches", "consistency_problems"):  # fmt: skip
        table.add_row(key, str(report[key]))
    for method, p in report["sync_ms"].items():
        if p["n"]:
            table.add_row(f"sync ms {method} p50/p90/p99/max",
                          f"{p['p50']:.2f} / {p['p90']:.2f} / {p['p99']:.2f} / {p['max']:.2f}")  # fmt: skip
    c = report["cycle_ms"]
    table.add_row(
        "cycles/s", f"{report['cycles'] / report['seconds']:.1f}" if report["seconds"] else "-"
    )
    table.add_row("ms per cycle: agent apply / revert (runtime's part), rounds wait, p50",
                  f"{c['agent_apply_p50']} ({c['runtime_apply_p50']}) / {c['agent_revert_p50']} "
                  f"({c['runtime_revert_p50']}), {c['rounds_wait_p50']}")  # fmt: skip
    table.add_row("client scheduling lag, max s", str(report["client_max_lag_s"]))
    rss = report["server_rss_mb"]
    table.add_row("server RSS MB, start / end", f"{rss['start']} / {rss['end']}")
    table.add_row("result", "ok" if report["ok"] else "FAILED")
    out.print(table)
    for h in report["hangs"][:HANGS_SHOWN]:
        during = [f"{t['action']} {t['method']} ({t['start_s']:+.2f}..{t['end_s']:+.2f} s)"
                  for t in h["transitions"]]  # fmt: skip
        out.print(
            f"hang {h['at_utc']} connection {h['connection']}: {h['request']}, no reply in "
            f"{h['waited_s']} s; transitions near: {', '.join(during) or 'none'}; "
            f"{h['sched']['verdict']} (server on CPU {h['sched']['server_cpu_s']} s, waiting for a CPU "
            f"{h['sched']['server_runqueue_wait_s']} s; client lag {h['sched']['client_max_lag_s']} s)",
            markup=False,
            highlight=False,
        )
