"""What the person at the terminal sees: a progress bar while runs go, one summary table at the end.

Concurrency: used from the harness's main thread only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from lpbench.runner import Tick

console = Console(stderr=True)  # progress: stderr, so stdout stays the result
# The table: stdout; rich assumes 80 columns when stdout is not a terminal, too narrow for 13 columns.
out = Console(width=None if Console().is_terminal else 140)


@contextmanager
def progress_bar(total_s: float = 0.0) -> Iterator[Any]:
    """Yields start(label, run_s) -> Tick: each run advances one overall bar by its elapsed seconds.
    With total_s 0 (sweeps whose length unfolds run by run) the bar's total grows with each run."""
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(), console=console, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("starting", total=total_s)
        done = [0.0]

        def start(label: str, run_s: float) -> Tick:
            base = done[0]
            done[0] += run_s
            if total_s <= 0:
                progress.update(task, total=done[0])
            progress.update(task, description=label, completed=base)

            def tick(elapsed: float) -> None:
                progress.update(task, completed=base + min(elapsed, run_s))

            return tick

        yield start


def _ms(x: Any) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.2f}"


def _rps(x: Any) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.0f}"


def summary_table(methods: dict[str, dict[str, Any]], title: str) -> Table:
    """One row per update method (medians over runs; see bench.aggregate)."""
    table = Table(title=title, title_style="bold")
    for col in ("method", "runs", "req/s", "min bin", "p50", "p99", "p99.9", "max", "max ±1.5s",
                "sync", "swap", "gap", "conns lost", "errors"):  # fmt: skip
        table.add_column(col, justify="left" if col == "method" else "right")
    for name, m in methods.items():
        table.add_row(
            name, str(m["runs"]), f"{m['throughput_rps']:.0f}", _rps(m["update_min_bin_rps"]), _ms(m["p50_ms"]), _ms(m["p99_ms"]),
            _ms(m["p99_9_ms"]), _ms(m["max_ms"]), _ms(m["update_max_ms"]), _ms(m["sync_ms"]),
            _ms(m["swap_ms"]), _ms(m["update_max_gap_ms"]), str(m["connections_lost"]), str(m["errors"]),
        )  # fmt: skip
    table.caption = (
        "latencies and times in ms; medians over runs; near an update (±1.5 s): min bin = worst 100 ms "
        "throughput bin (req/s), gap = longest pause without replies"
    )
    return table
