"""`livepatch diff` options of issue 13, through the real command: the inferred category and why,
`--category` overriding it, and `--accept-transformer` writing a patch that carries the generated hook."""

from __future__ import annotations

import json
from pathlib import Path

from livepatch.patch import lpatch
from tests.cli.test_cli_diff import cli, write_tree

BODY_V1 = "def total(xs):\n    return sum(xs)\n"
BODY_V2 = "def total(xs):\n    return sum(xs) * 2\n"


def test_category_is_inferred_with_its_reason_and_can_be_overridden(tmp_path: Path) -> None:
    old = write_tree(tmp_path / "o", {"p/__init__.py": "", "p/m.py": BODY_V1})
    new = write_tree(tmp_path / "n", {"p/__init__.py": "", "p/m.py": BODY_V2})
    proc = cli("diff", str(old), str(new), "-p", "p", "--json")
    data = json.loads(proc.stdout)
    assert data["manifest"]["category"] == "thread-local"
    assert "only the bodies or defaults of 1 existing function(s) change" in data["category_reason"]
    human = cli("diff", str(old), str(new), "-p", "p")
    assert "category thread-local: only the bodies" in human.stdout
    forced = json.loads(
        cli("diff", str(old), str(new), "-p", "p", "--category", "process", "--json").stdout
    )
    assert forced["manifest"]["category"] == "process"
    assert "given by the author (thread-local would be inferred" in forced["category_reason"]
    # a new module-level value is shared by every thread: process, and the reason names it
    shared = write_tree(tmp_path / "s", {"p/__init__.py": "", "p/m.py": "FACTOR = 2\n" + BODY_V2})
    data = json.loads(cli("diff", str(old), str(shared), "-p", "p", "--json").stdout)
    assert data["manifest"]["category"] == "process"
    assert "added value p.m:FACTOR" in data["category_reason"]
    # a function that rebinds a global touches shared state
    glob = "N = 0\n\ndef total(xs):\n    global N\n    N += 1\n    return sum(xs)\n"
    glob2 = glob.replace("sum(xs)", "sum(xs) * 2")
    a = write_tree(tmp_path / "ga", {"p/__init__.py": "", "p/m.py": glob})
    b = write_tree(tmp_path / "gb", {"p/__init__.py": "", "p/m.py": glob2})
    data = json.loads(cli("diff", str(a), str(b), "-p", "p", "--json").stdout)
    assert data["manifest"]["category"] == "process"
    assert "changed functions rebind globals: p.m:total" in data["category_reason"]


def test_accept_transformer_writes_the_generated_hook_and_is_never_silent(tmp_path: Path) -> None:
    case = Path(__file__).resolve().parent / "values_corpus_transformer" / "counter"
    old = write_tree(tmp_path / "o", {"p/__init__.py": "", "p/m.py": (case / "v1.py").read_text()})
    new = write_tree(tmp_path / "n", {"p/__init__.py": "", "p/m.py": (case / "v2.py").read_text()})
    out = tmp_path / "p.lpatch"
    refused = cli("diff", str(old), str(new), "-p", "p", "-o", str(out))
    assert refused.returncode == 1 and "--accept-transformer" in refused.stdout
    assert not out.exists()
    proc = cli("diff", str(old), str(new), "-p", "p", "-o", str(out), "--accept-transformer")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "generated transformer (confirmed with --accept-transformer)" in proc.stdout
    assert "def transform(ctx):" in proc.stdout  # printed for the author to read
    spec = lpatch.read(out).spec
    assert spec.category.value == "data" and "def transform(ctx)" in (spec.hooks_source or "")
