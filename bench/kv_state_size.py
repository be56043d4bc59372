"""Live patch pause and restart time against the size of kvserver's data set.

    .venv/bin/python bench/kv_state_size.py [--sizes 0,1000000,10000000]

For each size: start kvserver with its agent (`--livepatch-socket`, `--allow-unsigned`), fill it with
`DEBUG POPULATE N` ("key:i" -> "value:i"), then
  - live patch: build a patch of one handler (ECHO) with `livepatch diff`, apply it with
    `livepatch apply --json`; report the agent's timings (stage, sync, swap, total) and the pause of the
    event loop (event `reached` to `finished`: the time the loop was parked);
  - restart: SAVE, stop (SIGTERM), start again from the snapshot: time to the readiness line.
The design goal (DESIGN.md invariant 5): the patch costs the same with 10M keys as with none; a restart
grows with the data. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kv_common import SRC, kvserver, machine_note

OLD_ECHO = "    return argv[1]\n"
NEW_ECHO = '    return b"v2:" + argv[1]\n'


def livepatch(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "livepatch.cli", *args], capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise RuntimeError(f"livepatch {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout


def build_patch(work: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__")
    for side in ("old", "new"):
        shutil.copytree(SRC / "kvserver", work / side / "kvserver", ignore=ignore)
    handler = work / "new" / "kvserver" / "commands" / "connection.py"
    text = handler.read_text()
    start = text.index("def echo_command")
    handler.write_text(text[:start] + text[start:].replace(OLD_ECHO, NEW_ECHO, 1))
    out = work / "echo.lpatch"
    livepatch("diff", str(work / "old"), str(work / "new"), "--package", "kvserver", "-o", str(out))
    return out


def measure(size: int, patch: Path, work: Path) -> dict[str, float]:
    data = work / f"data-{size}"
    sock = work / f"agent-{size}.sock"
    args = ("--dir", str(data), "--appendonly", "no", "--save", "", "--livepatch-socket", str(sock),
            "--allow-unsigned")  # fmt: skip
    row: dict[str, float] = {"keys": size}
    with kvserver(*args) as kv:
        r = redis.Redis(port=kv.port, socket_timeout=3600)
        t0 = time.monotonic()
        if size:
            r.execute_command("DEBUG", "POPULATE", str(size))
        row["populate_s"] = time.monotonic() - t0
        row["rss_mb"] = r.info("memory")["used_memory_rss"] / 1e6
        result = json.loads(livepatch("apply", str(patch), "--socket", str(sock), "--json"))[
            "result"
        ]
        assert result["outcome"] == "applied", result
        assert r.echo("x") == b"v2:x"
        events = {e["name"]: e["t_ns"] for e in result["events"]}
        row.update(
            {
                f"{k}_ms": v
                for k, v in result["timings"].items()
                if k in ("stage", "sync", "swap", "total")
            }
        )
        row["pause_ms"] = (events["finished"] - events["reached"]) / 1e6
        t0 = time.monotonic()
        r.save()
        row["save_s"] = time.monotonic() - t0
        t0 = time.monotonic()
    row["stop_s"] = time.monotonic() - t0
    with kvserver(*args) as kv:
        row["restart_s"] = kv.started_s
        assert redis.Redis(port=kv.port).dbsize() == size
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="0,1000000,10000000")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"# live patch and restart against state size ({machine_note()})\n")
    cols = ["keys", "rss_mb", "populate_s", "stage_ms", "sync_ms", "swap_ms", "pause_ms", "total_ms",
            "save_s", "stop_s", "restart_s"]  # fmt: skip
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    with tempfile.TemporaryDirectory(prefix="kvss-") as tmp:
        work = Path(tmp)
        patch = build_patch(work)
        for size in sizes:
            row = measure(size, patch, work)
            cells = [f"{int(row['keys']):,}"] + [
                f"{row.get(c, float('nan')):,.2f}" for c in cols[1:]
            ]
            print("| " + " | ".join(cells) + " |", flush=True)
    print("\ncommand: .venv/bin/python bench/kv_state_size.py --sizes " + args.sizes)


if __name__ == "__main__":
    main()
