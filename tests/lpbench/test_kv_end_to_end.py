"""Short end-to-end runs against the real kvserver with its livepatch agent, through the real commands."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from lpbench.cli import bench_command
from lpbench.demo import run_demo
from lpbench.servers import livepatch_executable


def livepatch(*args: str, timeout: float = 110) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [livepatch_executable(), *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.timeout(150)
def test_bench_command_live_and_restart(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = livepatch(
        "bench", "--server", "kv", "--update", "live-local,live-global,restart",
        "--duration", "2.2", "--at", "0.8,1.6", "--connections", "6", "--keys", "500",
        "--out", str(out), "--json",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    methods = json.loads(proc.stdout)
    assert set(methods) == {"live-local", "live-global", "restart"}
    for name in ("live-local", "live-global"):
        m = methods[name]
        assert m["updates"] == 2 and m["updates_ok"] == 2  # apply, then revert
        assert m["connections_lost"] == 0 and m["errors"] == 0
        assert m["sync_ms"] >= 0 and m["swap_ms"] >= 0
    assert methods["restart"]["connections_lost"] >= 6  # every connection broke at each restart
    # A restart starts a new interpreter and reloads the data: clients see a pause. How long depends on
    # the machine (15 ms to over 100 ms here), so only its presence is asserted, not a length.
    assert methods["restart"]["update_max_gap_ms"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["runs"]) == 3
    events = json.loads((out / "live-local" / "run0" / "events.json").read_text())
    assert [u["outcome"] for u in events["updates"]] == ["applied", "reverted"]
    assert {"apply", "revert"} <= {h["action"] for h in events["history"]}
    for fig in ("throughput.png", "latency.png", "sync_swap.png"):
        assert (out / fig).stat().st_size > 1000
    # --replot redraws the figures from the saved data alone
    for fig in ("throughput.png", "latency.png", "sync_swap.png"):
        (out / fig).unlink()
    result = CliRunner().invoke(bench_command, ["--replot", "--out", str(out)])
    assert result.exit_code == 0, result.output
    for fig in ("throughput.png", "latency.png", "sync_swap.png"):
        assert (out / fig).stat().st_size > 1000


@pytest.mark.timeout(120)
def test_demo_fixes_the_bug_without_losing_a_connection(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    assert run_demo(out, duration_s=4.0, console=Console(file=open(tmp_path / "demo.txt", "w")))  # noqa: SIM115
    checks = json.loads((out / "summary.json").read_text())["checks"]
    assert checks == dict.fromkeys(checks, True)
    assert {"bug visible", "value right again", "no connection lost"} <= set(checks)
    for name in ("throughput.png", "latency.png", "requests.npz", "events.json", "fix.lpatch"):
        assert (out / name).exists()
    assert "timeline of the fix" in (tmp_path / "demo.txt").read_text()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--duration", "10", "--at", "12"], "outside the run"),
        (["--server", "redis", "--update", "live-local"], "need the livepatch agent"),
        (["--update", "sideways"], "unknown update method"),
        (["--at", "1,x"], "comma-separated numbers"),
    ],
)
def test_bench_refuses_bad_input_before_starting_anything(
    tmp_path: Path, args: list[str], message: str
) -> None:
    # In-process through click (the same command object the entry point loads): no start-up cost.
    result = CliRunner().invoke(bench_command, [*args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "o").exists()  # refused before anything was created


def test_bench_refuses_a_malformed_patch_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.lpatch"
    bad.write_text('{"format": "lpatch", "format_version": 1, "manifest": {"trunc')
    args = ["--patch", str(bad), "--update", "live-local", "--duration", "2", "--at", "1"]
    result = CliRunner().invoke(bench_command, [*args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert "not a valid patch file" in result.output
    assert not (tmp_path / "o" / "summary.json").exists()
