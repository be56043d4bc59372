"""Reading two versions of a package: directories (flat and src layout) and git revisions (no checkout)."""

from __future__ import annotations

import subprocess
from pathlib import Path, PurePosixPath

import pytest

from livepatch.patch.package import (
    MAX_SOURCE_BYTES,
    PackageError,
    module_name,
    read_directory,
    read_git,
)


def write_tree(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


V1 = {
    "shop/__init__.py": "",
    "shop/cart.py": "def total(items):\n    return sum(items)\n",
    "shop/sub/__init__.py": "X = 1\n",
    "shop/sub/tax.py": "def rate():\n    return 0.2\n",
    "shop/sub/__pycache__/tax.cpython-311.py": "garbage",
    "shop/README.txt": "not python",
    "other/__init__.py": "",
}


def test_module_names() -> None:
    assert module_name(PurePosixPath("cart.py"), "shop") == "shop.cart"
    assert module_name(PurePosixPath("__init__.py"), "shop") == "shop"
    assert module_name(PurePosixPath("sub/__init__.py"), "shop") == "shop.sub"
    assert module_name(PurePosixPath("tax.py"), "shop.sub") == "shop.sub.tax"


@pytest.mark.parametrize("prefix", ["", "src/"])
def test_read_directory(tmp_path: Path, prefix: str) -> None:
    write_tree(tmp_path, {prefix + k: v for k, v in V1.items()})
    v = read_directory(tmp_path, "shop")
    assert sorted(v.modules) == ["shop", "shop.cart", "shop.sub", "shop.sub.tax"]
    assert v.modules["shop.cart"] == V1["shop/cart.py"]
    sub = read_directory(tmp_path, "shop.sub")
    assert sorted(sub.modules) == ["shop.sub", "shop.sub.tax"]


def test_read_directory_errors(tmp_path: Path) -> None:
    write_tree(tmp_path, V1)
    with pytest.raises(PackageError, match="no package nothere"):
        read_directory(tmp_path, "nothere")
    with pytest.raises(PackageError, match="not a valid package name"):
        read_directory(tmp_path, "../etc")
    (tmp_path / "shop" / "bad.py").write_bytes(b"x = '\xff'\n")
    with pytest.raises(PackageError, match="not UTF-8"):
        read_directory(tmp_path, "shop")
    (tmp_path / "shop" / "bad.py").write_bytes(b"#" * (MAX_SOURCE_BYTES + 1))
    with pytest.raises(PackageError, match="over the limit"):
        read_directory(tmp_path, "shop")


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


@pytest.fixture()
def repo(tmp_path: Path) -> tuple[Path, str, str]:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q")
    git(r, "config", "user.email", "t@example.invalid")
    git(r, "config", "user.name", "t")
    write_tree(r, {"src/" + k: v for k, v in V1.items() if "__pycache__" not in k})
    git(r, "add", "-A")
    git(r, "commit", "-qm", "v1")
    old = git(r, "rev-parse", "HEAD")
    write_tree(r, {"src/shop/cart.py": "def total(items):\n    return sum(items) * 2\n"})
    (r / "src/shop/sub/tax.py").unlink()
    write_tree(r, {"src/shop/new.py": "def hello():\n    return 1\n"})
    git(r, "add", "-A")
    git(r, "commit", "-qm", "v2")
    git(r, "tag", "v2")
    # uncommitted work must not leak into what is read from revisions
    write_tree(r, {"src/shop/cart.py": "def total(items):\n    return 'dirty'\n"})
    return r, old, "v2"


def test_read_git_revisions(repo: tuple[Path, str, str]) -> None:
    r, old, new = repo
    v1 = read_git(r, old, "shop")
    v2 = read_git(r, new, "shop")
    assert sorted(v1.modules) == ["shop", "shop.cart", "shop.sub", "shop.sub.tax"]
    assert sorted(v2.modules) == ["shop", "shop.cart", "shop.new", "shop.sub"]
    assert v1.modules["shop.cart"] == V1["shop/cart.py"]
    assert "* 2" in v2.modules["shop.cart"]
    assert (r / "src/shop/cart.py").read_text().count("dirty") == 1  # work tree untouched


def test_read_git_errors(repo: tuple[Path, str, str]) -> None:
    r, old, _ = repo
    with pytest.raises(PackageError, match="failed"):
        read_git(r, "no-such-rev", "shop")
    with pytest.raises(PackageError, match="not a revision"):
        read_git(r, "--output=/tmp/x", "shop")
    with pytest.raises(PackageError, match="no package absent"):
        read_git(r, old, "absent")
