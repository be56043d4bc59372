"""`livepatch diff` through the installed console script: directories and git revisions, the summary,
refusals (no file unless --hooks), signing, and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from livepatch.patch import lpatch, signing

LIVEPATCH = str(Path(sys.executable).parent / "livepatch")

OLD = {
    "shop/__init__.py": "",
    "shop/cart.py": (
        "def total(items):\n    return sum(items)\n\n\n"
        "def obsolete():\n    return 0\n\n\n"
        "class Cart:\n    def count(self):\n        return 1\n"
    ),
    "shop/tax.py": "def rate():\n    return 0.2\n",
    "shop/shift.py": "def f():\n    return 1\n",
    "shop/gone.py": "def g():\n    return 1\n",
}
NEW = {
    "shop/__init__.py": "",
    "shop/cart.py": (
        "def total(items):\n    return sum(items) * 2\n\n\n"
        "def helper():\n    return 3\n\n\n"
        "class Cart:\n    def count(self):\n        return 2\n"
    ),
    "shop/tax.py": "def rate():\n    return 0.2\n",
    "shop/shift.py": "# a comment moves everything down\n\n\ndef f():\n    return 1\n",
    "shop/fresh.py": "def h():\n    return 1\n",
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LIVEPATCH, *args], capture_output=True, text=True, timeout=60, check=False
    )


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return root


@pytest.fixture()
def versions(tmp_path: Path) -> tuple[Path, Path]:
    return write_tree(tmp_path / "old", OLD), write_tree(tmp_path / "new", NEW)


def test_summary_json(versions: tuple[Path, Path]) -> None:
    old, new = versions
    proc = cli("diff", str(old), str(new), "--package", "shop", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    status = {m["module"]: m["status"] for m in data["modules"]}
    assert status == {
        "shop": "unchanged",
        "shop.cart": "changed",
        "shop.tax": "unchanged",
        "shop.shift": "unchanged",  # line shifts are no change
        "shop.gone": "removed",
        "shop.fresh": "added",
    }
    cart = next(m for m in data["modules"] if m["module"] == "shop.cart")["counts"]
    assert cart == {
        "same": 1,
        "changed": 2,
        "added": 1,
        "removed": 1,
    }  # Cart same, total+count changed
    kinds = {
        (m["module"], c["qualname"]): c["kind"]
        for m in data["manifest"]["modules"]
        for c in m["changes"]
    }
    assert kinds[("shop.cart", "total")] == "changed"
    assert kinds[("shop.cart", "Cart.count")] == "changed"
    assert kinds[("shop.cart", "helper")] == "added"
    assert kinds[("shop.cart", "obsolete")] == "removed"
    assert kinds[("shop.fresh", "h")] == "added"
    assert data["written"] is None


def test_human_summary_and_signed_file(tmp_path: Path, versions: tuple[Path, Path]) -> None:
    old, new = versions
    priv, pub, key_id = signing.generate_keypair(tmp_path / "keys")
    out = tmp_path / "fix.lpatch"
    proc = cli(
        "diff",
        str(old),
        str(new),
        "--package",
        "shop",
        "-o",
        str(out),
        "--key",
        str(priv),
        "--category",
        "thread-local",
        "-m",
        "double totals",
    )
    assert proc.returncode == 0, proc.stderr
    for line in (
        "changed  shop.cart:total",
        "added    shop.cart:helper",
        "removed  shop.cart:obsolete",
        "changed  shop.cart:Cart.count",
    ):
        assert line in proc.stdout, proc.stdout
    assert "removed modules" in proc.stdout and "shop.gone" in proc.stdout
    assert f"signed by key {key_id}" in proc.stdout
    pf = lpatch.read(out)
    assert pf.verify([signing.load_public_key(pub)]) == key_id
    assert pf.spec.category.value == "thread-local"
    assert pf.spec.description == "double totals"


def test_refusals_block_the_file_unless_hooks(tmp_path: Path) -> None:
    old = write_tree(
        tmp_path / "o",
        {"p/__init__.py": "", "p/m.py": "LIMIT = 10\n\ndef f(limit=LIMIT):\n    return limit\n"},
    )
    # the default captured LIMIT when the module ran: changing LIMIT is refused (module state)
    new = write_tree(
        tmp_path / "n",
        {
            "p/__init__.py": "",
            "p/m.py": "LIMIT = 20\n\ndef f(limit=LIMIT):\n    return limit + 1\n",
        },
    )
    out = tmp_path / "p.lpatch"
    proc = cli("diff", str(old), str(new), "--package", "p", "-o", str(out))
    assert proc.returncode == 1
    assert "cannot be live-patched" in proc.stdout and "fix:" in proc.stdout
    assert "no patch written" in proc.stderr
    assert not out.exists()
    hooks = tmp_path / "hooks.py"
    hooks.write_text("def post_patch(ctx):\n    ctx.modules['p.m'].LIMIT = 20\n")
    proc = cli("diff", str(old), str(new), "--package", "p", "-o", str(out), "--hooks", str(hooks))
    assert proc.returncode == 0, proc.stderr
    assert lpatch.read(out).spec.hooks_source == hooks.read_text()
    assert "1 refusal(s) waived" in proc.stdout and "covered by hook: post_patch" in proc.stdout
    # what no hook can fix still blocks: a function turned into a generator
    gen = write_tree(
        tmp_path / "g",
        {"p/__init__.py": "", "p/m.py": "LIMIT = 10\n\ndef f(limit=LIMIT):\n    yield limit\n"},
    )
    out.unlink()
    proc = cli("diff", str(old), str(gen), "--package", "p", "-o", str(out), "--hooks", str(hooks))
    assert proc.returncode == 1
    assert "no hook can take care of these" in proc.stderr
    assert "--hooks" not in proc.stdout.split("cannot be live-patched", 1)[1]  # no hook helps here
    assert not out.exists()


def test_hooks_waive_only_the_refusals_their_hooks_cover(tmp_path: Path) -> None:
    """Regression (issue 10): `diff --hooks empty.py` on a change that adds an instance attribute wrote a
    patch that then failed every request with AttributeError. Only a transform hook covers it."""
    old = write_tree(
        tmp_path / "o",
        {
            "p/__init__.py": "",
            "p/m.py": "class Conn:\n    def __init__(self):\n        self.n = 0\n\n"
            "    def hit(self):\n        self.n += 1\n        return self.n\n",
        },
    )
    new = write_tree(
        tmp_path / "n",
        {
            "p/__init__.py": "",
            "p/m.py": "class Conn:\n    def __init__(self):\n        self.n = 0\n        self.seen = []\n\n"
            "    def hit(self):\n        self.seen.append(1)\n        self.n += 1\n        return self.n\n",
        },
    )
    out = tmp_path / "p.lpatch"
    for name, text in (
        ("empty.py", ""),
        ("post.py", "def post_patch(ctx):\n    pass\n"),
    ):
        hooks = tmp_path / name
        hooks.write_text(text)
        proc = cli("diff", str(old), str(new), "-p", "p", "-o", str(out), "--hooks", str(hooks))
        assert proc.returncode == 1, (name, proc.stdout)
        assert "new instance attribute `self.seen`" in proc.stdout
        assert "transform(ctx)" in proc.stdout  # the fix names the hook that would cover it
        assert "define in the hooks file the hooks each fix names" in proc.stderr
        assert not out.exists()
    hooks = tmp_path / "transform.py"
    hooks.write_text("def transform(ctx):\n    pass\n")
    proc = cli(
        "diff", str(old), str(new), "-p", "p", "-o", str(out), "--hooks", str(hooks), "--json"
    )
    assert proc.returncode == 0, proc.stdout
    data = json.loads(proc.stdout)
    assert data["ok"] is True and data["manifest"]["refusals"] == []
    assert [(w["qualname"], w["kind"], w["hook"]) for w in data["waived"]] == [
        ("Conn", "instance-attribute", "transform")
    ]
    assert out.exists()


def test_errors(tmp_path: Path, versions: tuple[Path, Path]) -> None:
    old, new = versions
    proc = cli("diff", str(old), str(old), "--package", "shop", "-o", str(tmp_path / "x.lpatch"))
    assert proc.returncode == 1 and "no definition changed" in proc.stderr
    assert not (tmp_path / "x.lpatch").exists()
    proc = cli("diff", str(old), str(new), "--package", "nope")
    assert proc.returncode == 1 and "no package nope" in proc.stderr
    broken = write_tree(tmp_path / "broken", {**NEW, "shop/cart.py": "def total(:\n"})
    proc = cli("diff", str(old), str(broken), "--package", "shop")
    assert proc.returncode == 1 and "does not compile" in proc.stderr
    bad_hooks = tmp_path / "h.py"
    bad_hooks.write_text("def pre_patch(:\n")
    proc = cli("diff", str(old), str(new), "--package", "shop", "--hooks", str(bad_hooks))
    assert proc.returncode == 1 and "hooks file" in proc.stderr
    proc = cli("diff", str(old), str(new), "--package", "shop", "--git", "r", "a", "b")
    assert proc.returncode == 2


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def test_git_revisions(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.invalid")
    git(repo, "config", "user.name", "t")
    write_tree(repo, OLD)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "old")
    old_rev = git(repo, "rev-parse", "HEAD")
    (repo / "shop" / "gone.py").unlink()
    write_tree(repo, NEW)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "new")
    out = tmp_path / "g.lpatch"
    proc = cli(
        "diff", "--git", str(repo), old_rev, "HEAD", "--package", "shop", "-o", str(out), "--json"
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert {m["module"]: m["status"] for m in data["modules"]}["shop.gone"] == "removed"
    spec = lpatch.read(out).spec
    # the same patch as from directories: the content hash (patch id) agrees
    dirs = cli(
        "diff",
        str(write_tree(tmp_path / "o", OLD)),
        str(write_tree(tmp_path / "n", NEW)),
        "--package",
        "shop",
        "--json",
    )
    assert json.loads(dirs.stdout)["manifest"]["patch_id"] == spec.patch_id
    proc = cli("diff", "--git", str(repo), "nope", "HEAD", "--package", "shop")
    assert proc.returncode == 1 and "nope" in proc.stderr
