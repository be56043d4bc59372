#!/usr/bin/env python3
"""One entry point for a fresh machine: creates .venv, installs livepatch, runs a job.

    python3 dev.py demo      # the main job: live-patch a running kvserver (`livepatch demo`)
    python3 dev.py test      # the test suite (pytest), then nothing else
    python3 dev.py lint      # ruff and mypy
    python3 dev.py shell CMD # run CMD inside the virtualenv

Only the standard library is used here, so this works with nothing but Python 3.11.
Extra arguments after the job name are passed on (e.g. `python3 dev.py test -k kvserver`).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("LIVEPATCH_VENV", ROOT / ".venv"))
BIN = VENV / "bin"
STAMP = VENV / ".livepatch-installed"


def _fingerprint() -> str:
    # Reinstall when the declared dependencies or the C sources (built by the install) change.
    digest = hashlib.sha256()
    for path in [ROOT / "pyproject.toml", ROOT / "setup.py", *sorted(ROOT.glob("src/*/*.c"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def ensure_venv() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"livepatch needs Python >= 3.11, this is {sys.version.split()[0]}")
    if not (BIN / "python").exists():
        print(f"creating virtualenv in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    print("installing livepatch and its dependencies (first run only)", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "-e", f"{ROOT}[dev]"], check=True)
    STAMP.write_text(_fingerprint())


def run(argv: list[str]) -> int:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(argv, cwd=ROOT, env=env).returncode


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in {"demo", "test", "lint", "shell"}:
        print(__doc__)
        return 2
    job, extra = sys.argv[1], sys.argv[2:]
    ensure_venv()
    if job == "demo":
        return run([str(BIN / "livepatch"), "demo", *extra])
    if job == "test":
        return run([str(BIN / "python"), "-m", "pytest", *extra])
    if job == "lint":
        rc = run([str(BIN / "ruff"), "check", "src", "tests", "bench", "scripts"])
        rc |= run([str(BIN / "ruff"), "format", "--check", "src", "tests", "bench", "scripts"])
        return rc | run([str(BIN / "mypy")])
    return run(extra)


if __name__ == "__main__":
    sys.exit(main())
