"""`--huge-pages` (kvserver.huge_pages): the server re-executes itself, same pid, with the settings
that give its heap transparent huge pages, and serves as usual; a validated update works on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kvserver import huge_pages
from tests.mve.mve_helpers import held, raw, update


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if b"=" in item)


@pytest.mark.timeout(180)
def test_huge_pages_option_reexecutes_with_the_settings_and_serves(
    kv_factory: Any, patches: dict[str, Path], work_dir: Path
) -> None:
    server = kv_factory(
        "--huge-pages", "--livepatch-socket", str(work_dir / "lp.sock"), "--allow-unsigned"
    )
    env = _environ(server.process.pid)  # the pid the test started: exec kept it
    assert env.get("PYTHONMALLOC") == "malloc"
    assert huge_pages.TUNABLE in env.get("GLIBC_TUNABLES", "").split(":")
    r = held(server)
    r.execute_command("DEBUG", "POPULATE", "20000")
    assert r.dbsize() == 20000 and r.get("key:17") == b"value:17"
    done = update(work_dir, patches["good"], "--window", "1s", "--exercise-wait", "0")
    assert done.returncode == 0 and "promoted" in done.stdout, done.stdout + done.stderr
    assert raw(r, "PING") == b"PANG"  # the promoted follower (a fork: the same settings) serves
    assert r.get("key:17") == b"value:17"
    if not huge_pages.problems():  # this machine gives huge pages: the heap has some
        smaps = Path(f"/proc/{server.process.pid}/smaps_rollup").read_text()
        anon_huge_kb = int(
            next(ln for ln in smaps.splitlines() if "AnonHugePages" in ln).split()[1]
        )
        print("AnonHugePages kB:", anon_huge_kb)
