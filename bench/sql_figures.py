"""Figures 1-5 of docs/results-sql.md (figure 6: bench/sql_deadlocks.py), each one command:

    .venv/bin/python bench/sql_figures.py fig1   # and figure 4: throughput and latency around updates
    .venv/bin/python bench/sql_figures.py fig2   # OLAP queries on a timeline, global vs local
    .venv/bin/python bench/sql_figures.py fig3   # sync time, a patch every 100 ms; and against pool size
    .venv/bin/python bench/sql_figures.py fig5   # patch time against patch size, patches #1-#5
    .venv/bin/python bench/sql_figures.py tables # docs/results-sql.md's tables of figures 1-3, from DIR
    options: --out DIR (default results/sql-figures) --duration S --patch today|previous|K --olap-scale W --replot
    A panel whose DIR/figN/<panel>/summary.json exists is kept: the same command again completes a
    figure that was interrupted (remove the panel's directory to run it again).

Every update applies or reverts a real commit of this repository's sqlserver, on a server running that
commit's parent (lpbench.sql.history): figures 1-4 by default `today` (history.TODAY, the newest commit
that applies, whose parent runs today's pool), or patch #K of #1-#5 (their parents predate the pool's
rewrite); fig5: all five. The runs are lpbench's
(runner.run_once: every transaction recorded, the agent's events merged). Durations and sizes are cut
down for a busy 2-core machine (docs/results-sql.md says by how much). The figures go to DIR/figN.png;
each panel's data stays in DIR/figN/<panel>/ (summary.json, per-run requests.npz and events.json), so
`--replot` redraws without running anything.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from lpbench import plots, plots_sql
from lpbench.bench import load_results, run_series, typical_runs
from lpbench.runner import BenchConfig
from lpbench.sql import history

WORKLOADS = ("noop", "ycsb", "tpcc", "olap")
POLICIES = ("thread-per-connection", "pool")
SCALE = {
    "noop": 1.0,
    "ycsb": 1.0,
    "tpcc": 0.05,
    "olap": 0.05,
}  # YCSB 1000 rows; TPC-C 1 small warehouse
CONNECTIONS = {"noop": 10, "ycsb": 10, "tpcc": 10, "olap": 4}
POOL_GROUPS = (1, 2, 4, 8, 16)
OLAP_TIMELINE_SCALE = (
    1.0  # figure 2: one whole warehouse, so that queries run for a good part of a second
)


def every_100ms(duration: float) -> tuple[float, ...]:
    n = int((duration - 1.0) / 0.1 + 1e-9) + 1
    return tuple(round(0.5 + 0.1 * i, 3) for i in range(n))


def _series(
    cfg: BenchConfig, methods: list[str], patch: history.HistoryPatch, out: Path
) -> list[Any]:
    """One panel's runs into `out`; a panel already there (summary.json) is kept, not run again.

    A run that fails (a load driver that could not connect in time, a server that printed no ready
    line: at load 35-47 both happened) is retried once; a second failure is written to
    `out/failed.txt` and the figure goes on without the panel (its table row and plot are left out)
    -- figure 3's 26 runs died twice in one panel each before this."""
    if (out / "summary.json").exists():
        print(f"  {out.name}: kept (already run)", file=sys.stderr, flush=True)
        return load_results(out)
    for attempt in (1, 2):
        print(
            f"  {out.name}: {', '.join(methods)} ({cfg.duration_s:g} s each)"
            + (" -- again" if attempt > 1 else ""),
            file=sys.stderr,
            flush=True,
        )
        try:
            results, _ = run_series(
                cfg, methods, 1, [patch.patch], out,
                server_factory=lambda port, d: history.HistoricSqlServer(port, d, patch.code),
            )  # fmt: skip
            return results
        except (RuntimeError, OSError, TimeoutError) as exc:
            what = f"attempt {attempt}: {type(exc).__name__}: {exc}"
            print(f"  {out.name}: FAILED {what}", file=sys.stderr, flush=True)
            out.mkdir(parents=True, exist_ok=True)
            with open(out / "failed.txt", "a") as f:
                f.write(what + "\n")
    return []


def fig1(args: argparse.Namespace, patch: history.HistoryPatch | None) -> list[Path]:
    """Throughput (figure 1) and latency (figure 4) of each workload x policy: baseline, global, local;
    five updates evenly spread over the run (the paper: at 5, 10, 15, 20, 25 s of 30 s)."""
    out = args.out / "fig1"
    d = args.duration
    at = tuple(round(d * k / 6, 2) for k in range(1, 6))
    if patch is not None:
        for w in WORKLOADS:
            for p in POLICIES:
                cfg = BenchConfig(server="sql", workload=w, connections=CONNECTIONS[w], duration_s=d,
                                  at_s=at, policy=p, scale=SCALE[w])  # fmt: skip
                _series(cfg, ["none", "live-global", "live-local"], patch, out / f"{w}-{p}")
    thr, lat = [], []
    for w in WORKLOADS:
        for p in POLICIES:
            panel = out / f"{w}-{p}"
            typical = [
                (r.method, r.recording, r.updates) for r in typical_runs(load_results(panel))
            ]
            thr.append(plots.throughput_over_time(typical, panel / "throughput.png"))
            lat.append(plots.latency_scatter(typical, panel / "latency.png"))
    names = [f"{w}, {p}" for w in WORKLOADS for p in POLICIES]
    return [
        plots_sql.grid(thr, names, args.out / "fig1.png", columns=2),
        plots_sql.grid(
            lat, names, args.out / "fig4.png", columns=4, dpi=90
        ),  # 8 scatter panels: keep it small
    ]


def fig2(args: argparse.Namespace, patch: history.HistoryPatch | None) -> list[Path]:
    """OLAP: every connection's queries on a timeline, the migration windows shaded, global vs local."""
    out = args.out / "fig2"
    d = args.duration
    panels = []
    for p in POLICIES:
        panel = out / p
        if patch is not None:
            cfg = BenchConfig(server="sql", workload="olap", connections=CONNECTIONS["olap"],
                              duration_s=d, at_s=(round(d / 3, 2), round(2 * d / 3, 2)), policy=p,
                              scale=args.olap_scale)  # fmt: skip
            _series(cfg, ["live-global", "live-local"], patch, panel)
        if not (panel / "summary.json").exists():
            continue
        runs = [(r.method, r.recording, r.updates) for r in load_results(panel)]
        panels.append(plots_sql.olap_timeline(runs, p, panel / "timeline.png"))
    names = [p for p in POLICIES if (out / p / "summary.json").exists()]
    return [plots_sql.grid(panels, names, args.out / "fig2.png", columns=1)]


def fig3(args: argparse.Namespace, patch: history.HistoryPatch | None) -> list[Path]:
    """Sync time with a patch every 100 ms for the whole run: per workload, policy and method; and
    against the pool's thread groups (YCSB)."""
    out = args.out / "fig3"
    d = args.duration
    at = every_100ms(d)
    if patch is not None:
        for w in WORKLOADS:
            for p in POLICIES:
                cfg = BenchConfig(server="sql", workload=w, connections=CONNECTIONS[w], duration_s=d,
                                  at_s=at, policy=p, scale=SCALE[w])  # fmt: skip
                _series(cfg, ["live-global", "live-local"], patch, out / f"{w}-{p}")
        for g in POOL_GROUPS:
            cfg = BenchConfig(server="sql", workload="ycsb", connections=16, duration_s=d, at_s=at,
                              policy="pool", pool_groups=g, scale=SCALE["ycsb"])  # fmt: skip
            _series(cfg, ["live-global", "live-local"], patch, out / f"groups-{g}")
    by_config: dict[str, list[dict[str, Any]]] = {}
    for w in WORKLOADS:
        for p in POLICIES:
            by_config[f"{w}\n{'tpc' if p != 'pool' else 'pool'}"] = _updates(out / f"{w}-{p}")
    by_groups = {g: _updates(out / f"groups-{g}") for g in POOL_GROUPS}
    return [plots_sql.sync_times(by_config, by_groups, args.out / "fig3.png")]


def _updates(panel: Path) -> list[dict[str, Any]]:
    if not (panel / "summary.json").exists():
        return []  # a panel that failed twice (_series)
    return [u for r in load_results(panel) for u in r.updates]


def fig5(args: argparse.Namespace, patches: list[history.HistoryPatch] | None) -> list[Path]:
    """Patch time against patch size: patches #1-#5, each on its parent's server under NoOp load,
    applied and reverted every 0.6 s, `repeats` applies per method."""
    out = args.out / "fig5"
    repeats = 10
    at = tuple(round(1.0 + 0.6 * i, 2) for i in range(2 * repeats))
    cfg = BenchConfig(server="sql", workload="noop", connections=10, duration_s=at[-1] + 1.5,
                      at_s=at, policy="thread-per-connection")  # fmt: skip
    if patches is not None:
        for p in patches:
            if args.only and p.number not in args.only:
                continue
            _series(cfg, ["live-global", "live-local"], p, out / f"patch{p.number}")
    records = []
    for k in range(1, 10):
        for u in _updates(out / f"patch{k}"):
            if u["action"] == "apply":
                records.append({**u, "number": k})
    return [plots_sql.patch_time(records, args.out / "fig5.png")]


def _ms(x: float | None, digits: int = 1) -> str:
    return "-" if x is None or x != x else f"{x:,.{digits}f}"


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


def tables(args: argparse.Namespace) -> str:
    """The Markdown tables of figures 1-3 (whichever have data in DIR), as docs/results-sql.md has them."""
    out: list[str] = []
    fig1 = args.out / "fig1"
    if fig1.is_dir():
        out += ["| workload, policy | method | tx/s | p99 ms | updates ok | worst 100 ms bin near an update "
                "(tx/s) | longest pause near an update (ms) | max latency near an update (ms) | sync ms | "
                "failed |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for w in WORKLOADS:
            for p in POLICIES:
                panel = fig1 / f"{w}-{p}"
                if not (panel / "summary.json").exists():
                    continue
                summary = json.loads((panel / "summary.json").read_text())
                for method, m in summary["methods"].items():
                    runs = [r for r in summary["runs"] if r["method"] == method]
                    failed = sum(r["overall"]["errors"] + r["overall"]["lost"] for r in runs)
                    out.append(f"| {w}, {p} | {method} | {m['throughput_rps']:,.0f} | {_ms(m['p99_ms'], 0)} | "
                               f"{m['updates_ok']}/{m['updates']} | {m['update_min_bin_rps']:,.0f} | "
                               f"{_ms(m['update_max_gap_ms'], 0)} | {_ms(m['update_max_ms'], 0)} | "
                               f"{_ms(m['sync_ms'])} | {failed} |")  # fmt: skip
        out.append("")
    fig2 = args.out / "fig2"
    if fig2.is_dir():
        out += ["| policy | method | apply: sync / window (ms) | revert: sync / window (ms) | queries/s | failed |",
                "|---|---|---|---|---|---|"]  # fmt: skip
        for p in POLICIES:
            if not (fig2 / p / "summary.json").exists():
                continue
            for r in load_results(fig2 / p):
                cells = []
                for u in [u for u in r.updates if u["action"] in ("apply", "revert")]:
                    window = (u["window_ns"][1] - u["window_ns"][0]) / 1e6
                    sync = u.get("timings", {}).get("sync")
                    ok = u["outcome"] in ("applied", "reverted")
                    cells.append(
                        f"{_ms(sync)} / {window:,.0f}"
                        if ok
                        else f"**{u['outcome']}** / {window:,.0f}"
                    )
                rec = r.recording
                done = int((rec.status == 0).sum())
                out.append(f"| {p} | {r.method} | {' | '.join(cells[:2])} | {done / rec.duration_s:.1f} | "
                           f"{int((rec.status != 0).sum())} |")  # fmt: skip
        out.append("")
    fig3 = args.out / "fig3"
    if fig3.is_dir():
        out += [
            "| workload, policy | method | ok | sync p50 | p90 | p99 | tx/s |",
            "|---|---|---|---|---|---|---|",
        ]
        for w in WORKLOADS:
            for p in POLICIES:
                panel = fig3 / f"{w}-{p}"
                if not (panel / "summary.json").exists():
                    continue
                for r in load_results(panel):
                    ups = [u for u in r.updates if u["action"] in ("apply", "revert")]
                    took = [u for u in ups if u["outcome"] in ("applied", "reverted")]
                    sync = [
                        u["timings"]["sync"]
                        for u in took
                        if u.get("timings", {}).get("sync") is not None
                    ]
                    rec = r.recording
                    out.append(f"| {w}, {p} | {r.method.removeprefix('live-')} | {len(took)}/{len(ups)} | "
                               f"{_ms(_pct(sync, 0.5))} | {_ms(_pct(sync, 0.9))} | {_ms(_pct(sync, 0.99))} | "
                               f"{(rec.status == 0).sum() / rec.duration_s:,.0f} |")  # fmt: skip
        by_method: dict[str, list[str]] = {"live-global": [], "live-local": []}
        for g in POOL_GROUPS:
            if not (fig3 / f"groups-{g}" / "summary.json").exists():
                continue
            for r in load_results(fig3 / f"groups-{g}"):
                sync = [u["timings"]["sync"] for u in r.updates
                        if u["outcome"] in ("applied", "reverted") and u.get("timings", {}).get("sync") is not None]  # fmt: skip
                by_method[r.method].append(f"{_ms(_pct(sync, 0.5))} / {_ms(_pct(sync, 0.9))}")
        if by_method["live-global"]:
            out += ["", "| pool groups (YCSB, 16 conn.) | " + " | ".join(str(g) for g in POOL_GROUPS) + " |",
                    "|---|" + "---|" * len(POOL_GROUPS),
                    "| global sync p50 / p90 | " + " | ".join(by_method["live-global"]) + " |",
                    "| local sync p50 / p90 | " + " | ".join(by_method["live-local"]) + " |"]  # fmt: skip
    fig5 = args.out / "fig5"
    if fig5.is_dir():
        out += ["", "| patch | method | functions | bytes | applied | stage | sync | swap | total |",
                "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for k in range(1, 10):
            panel = fig5 / f"patch{k}"
            if not (panel / "summary.json").exists():
                continue
            for r in load_results(panel):
                ups = [u for u in r.updates if u["action"] == "apply"]
                applied = [u for u in ups if u["outcome"] == "applied"]
                med = {t: _pct([u["timings"][t] for u in applied if t in u.get("timings", {})], 0.5)
                       for t in ("stage", "sync", "swap", "total")}  # fmt: skip
                first = ups[0]["patch"] if ups else {"functions": 0, "bytes": 0}
                out.append(f"| #{k} | {r.method} | {first['functions']} | {first['bytes']:,} | "
                           f"{len(applied)}/{len(ups)} | " + " | ".join(_ms(med[t]) for t in med) + " |")  # fmt: skip
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("figure", choices=["fig1", "fig2", "fig3", "fig5", "tables"])
    ap.add_argument("--out", type=Path, default=Path("results/sql-figures"))
    ap.add_argument("--duration", type=float, default=None,
                    help="seconds per run (fig1: 15, fig2: 20, fig3: 6)")  # fmt: skip
    ap.add_argument("--patch", default="today",
                    choices=["today", "previous", "since", "1", "2", "3", "4", "5"],
                    help="figures 1-4: history.TODAY (default), history.PREVIOUS_TODAY or patch #K; "
                         "fig5: #1-#5 (history.CHOSEN), or with `since` history.SINCE")  # fmt: skip
    ap.add_argument("--repo", type=Path, default=Path("."), help="a git clone of this repository")
    ap.add_argument("--olap-scale", type=float, default=OLAP_TIMELINE_SCALE,
                    help="fig2: the OLAP data's scale (warehouses; default 1)")  # fmt: skip
    ap.add_argument("--replot", action="store_true", help="redraw from DIR only; run nothing")
    ap.add_argument("--only", type=lambda t: {int(x) for x in t.split(",")}, default=None,
                    help="fig5: run only these patches (e.g. 1,3), keep the others' data in DIR")  # fmt: skip
    args = ap.parse_args()
    args.duration = args.duration or {"fig1": 15.0, "fig2": 20.0, "fig3": 6.0}.get(args.figure, 0)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.figure == "tables":
        print(tables(args))
        return 0
    with tempfile.TemporaryDirectory(prefix="lpb-hist-") as tmp:
        named = {k: v for k, v in history.NAMED.items() if v is not None}
        commits = (
            (named[args.patch],)
            if args.figure != "fig5" and args.patch in named
            else history.SINCE
            if args.patch == "since"
            else history.CHOSEN
        )
        built = None if args.replot else history.build(args.repo, Path(tmp), commits)
        if args.figure == "fig5":
            paths = fig5(args, built)
        else:
            k = 0 if args.patch in named else int(args.patch) - 1
            patch = None if built is None else built[k]
            paths = {"fig1": fig1, "fig2": fig2, "fig3": fig3}[args.figure](args, patch)
    if built is not None:
        (args.out / f"{args.figure}-patches.json").write_text(json.dumps(
            [{"number": p.number, "sha": p.commit.sha, "functions": p.patch.n_functions,
              "bytes": p.patch.size_bytes, "subject": p.commit.subject} for p in built], indent=1))  # fmt: skip
    print("\n".join(str(p) for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
