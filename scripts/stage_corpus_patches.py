"""Stage every patch `livepatch corpus --out DIR` accepted into a fresh process running the old commit.

    python3 scripts/stage_corpus_patches.py REPO PACKAGE DIR

For each accepted commit of DIR/corpus.json: the package at the commit's first parent is extracted with
`git archive` (PKG/ or src/PKG/), a child process imports it (the package and every submodule that
imports under this Python) and runs the real runtime on DIR/patches/SHA12.lpatch: stage(), swap_in(),
swap_out(). It prints the counts by result and every commit staging refused or crashed on, with the
reason. `noimport`: the old version does not import here (missing dependency, Python 2 leftovers);
`noarchive`: the package is not at the parent commit. This checks that what the differ accepts the
runtime can apply (the live module state of a fresh import, no load, no behaviour check: applying under
load and running the commit's own tests is scripts/live_apply_history.py, branch `persist`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

CHILD = r"""
import importlib, json, pathlib, pkgutil, sys
root, pkg, patch = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, root)
try:
    top = importlib.import_module(pkg)
    for m in pkgutil.walk_packages(top.__path__, pkg + "."):
        if ".test" in m.name:
            continue
        try:
            importlib.import_module(m.name)
        except Exception:
            pass
except Exception as exc:
    print(json.dumps({"r": "noimport", "e": repr(exc)[:200]}))
    sys.exit()
from livepatch.errors import PatchRefused
from livepatch.patch import lpatch
from livepatch.runtime.staging import stage
spec, _ = lpatch.read(pathlib.Path(patch)).verified_spec([], allow_unsigned=True)
try:
    staged = stage(spec)
    staged.swap_in()
    staged.swap_out()
    print(json.dumps({"r": "ok"}))
except PatchRefused as exc:
    print(json.dumps({"r": "refused", "e": str(exc)[:300]}))
except Exception as exc:
    print(json.dumps({"r": "crash", "e": repr(exc)[:300]}))
"""


def _extract(repo: str, rev: str, package: str, into: str) -> str | None:
    for prefix in ("", "src/"):
        arch = subprocess.run(
            ["git", "-C", repo, "archive", rev, f"{prefix}{package}"],
            capture_output=True,
            check=False,
        )
        if arch.returncode == 0:
            subprocess.run(["tar", "-x", "-C", into], input=arch.stdout, check=True)
            return str(Path(into) / prefix) if prefix else into
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repo")
    parser.add_argument("package")
    parser.add_argument("dir", type=Path, help="the --out DIR of `livepatch corpus`")
    args = parser.parse_args()
    doc = json.loads((args.dir / "corpus.json").read_text())
    results: Counter[str] = Counter()
    bad = []
    for c in doc["commits"]:
        if c["outcome"] != "accepted":
            continue
        patch = args.dir / "patches" / f"{c['sha'][:12]}.lpatch"
        with tempfile.TemporaryDirectory() as tmp:
            root = _extract(args.repo, f"{c['sha']}^", args.package, tmp)
            if root is None:
                results["noarchive"] += 1
                continue
            proc = subprocess.run(
                [sys.executable, "-c", CHILD, root, args.package, str(patch)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            lines = proc.stdout.strip().splitlines()
            out = json.loads(lines[-1]) if lines else {"r": "crash", "e": proc.stderr[-300:]}
        results[out["r"]] += 1
        if out["r"] not in ("ok", "noimport"):
            bad.append(f"{c['sha'][:10]} {out['r']}: {out['e']}")
    print(dict(results))
    for line in bad:
        print(line)


if __name__ == "__main__":
    main()
