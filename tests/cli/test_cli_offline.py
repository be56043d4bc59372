"""The offline commands through the installed `livepatch` console script: keygen, inspect, usage errors."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from livepatch.cli import main
from livepatch.patch import lpatch, signing
from livepatch.patch.model import (
    Category,
    ChangeKind,
    DefinitionKind,
    ModulePatch,
    PatchSpec,
    Refusal,
    TargetChange,
)

LIVEPATCH = str(Path(sys.executable).parent / "livepatch")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LIVEPATCH, *args], capture_output=True, text=True, timeout=60, check=False
    )


def make_spec(refusals: tuple[Refusal, ...] = ()) -> PatchSpec:
    changes = (
        TargetChange("Cart.total", ChangeKind.CHANGED, DefinitionKind.METHOD, "a" * 64, "b" * 64),
        TargetChange("helper", ChangeKind.ADDED, DefinitionKind.FUNCTION, None, "c" * 64),
        TargetChange("same", ChangeKind.SAME, DefinitionKind.FUNCTION, "d" * 64, "d" * 64),
    )
    module = ModulePatch("shop.cart", "class Cart: ...\n", changes)
    return PatchSpec(
        "fix-42",
        "shop",
        Category.THREAD_LOCAL,
        (module,),
        description="fix totals",
        refusals=refusals,
    )


def test_keygen(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    proc = cli("keygen", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    key = out / "livepatch.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    key_id = signing.load_public_key(out / "livepatch.pub").key_id
    assert key_id in proc.stdout
    before = key.read_bytes()
    again = cli("keygen", "--out", str(out))
    assert again.returncode == 1
    assert "refusing to overwrite" in again.stderr
    assert key.read_bytes() == before


def test_inspect_signed_and_verified(tmp_path: Path) -> None:
    priv, pub, key_id = signing.generate_keypair(tmp_path / "k")
    path = tmp_path / "fix.lpatch"
    lpatch.write(path, lpatch.build(make_spec(), signing.load_private_key(priv)))
    proc = cli("inspect", str(path))
    assert proc.returncode == 0, proc.stderr
    assert f"key id {key_id}" in proc.stdout
    assert "Cart.total" in proc.stdout and "helper" in proc.stdout
    assert "same" not in proc.stdout.split("targets", 1)[1]  # unchanged definitions are not listed
    proc = cli("inspect", str(path), "--key", str(pub), "--json")
    assert proc.returncode == 0
    data = json.loads(proc.stdout)
    assert data["signed"] is True and data["key_id"] == key_id and data["signature_valid"] is True
    assert data["changed"] == 2
    assert data["manifest"]["patch_id"] == "fix-42"


def test_inspect_detects_tampering_and_other_keys(tmp_path: Path) -> None:
    priv, pub, _ = signing.generate_keypair(tmp_path / "k")
    _, other_pub, _ = signing.generate_keypair(tmp_path / "other")
    path = tmp_path / "fix.lpatch"
    lpatch.write(path, lpatch.build(make_spec(), signing.load_private_key(priv)))
    proc = cli("inspect", str(path), "--key", str(other_pub))
    assert proc.returncode == 1 and "does not trust" in proc.stderr
    doc = json.loads(path.read_text())
    doc["manifest"]["description"] = "innocent"
    path.write_text(json.dumps(doc))
    proc = cli("inspect", str(path), "--key", str(pub))
    assert proc.returncode == 1
    assert "bad signature" in proc.stderr


def test_inspect_unsigned_with_refusals(tmp_path: Path) -> None:
    path = tmp_path / "fix.lpatch"
    refusal = Refusal("shop.cart", "Cart", "__slots__ changed", "ship a transformer hook")
    lpatch.write(path, lpatch.build(make_spec((refusal,))))
    proc = cli("inspect", str(path))
    assert proc.returncode == 0
    assert "unsigned" in proc.stdout
    assert "__slots__ changed" in proc.stdout and "ship a transformer hook" in proc.stdout


def test_inspect_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "bad.lpatch"
    path.write_text('{"format": "lpatch", "format_version": 1, "manifest": {"form')
    proc = cli("inspect", str(path))
    assert proc.returncode == 1
    assert "truncated" in proc.stderr
    path.write_text(json.dumps({"format": "lpatch", "format_version": 7}))
    proc = cli("inspect", str(path))
    assert proc.returncode == 1 and "version 7" in proc.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    # in-process (click's runner) to keep the suite fast: the same command objects the script runs
    runner = CliRunner()
    for args in (
        ["apply"],
        ["diff", "--package", "x"],  # neither dirs nor --git
        ["apply", str(tmp_path), "--socket", "s"],  # a directory is no patch
        ["status"],  # --socket missing
        ["apply", "/nonexistent.lpatch", "--socket", "s", "--method", "sideways"],
        ["revert", "--socket", "s", "--timeout", "-1"],
    ):
        result = runner.invoke(main, args, env={"LIVEPATCH_SOCKET": None})
        assert result.exit_code == 2, (args, result.output)
    assert cli("apply").returncode == 2  # and once through the installed script


def test_unreachable_agent_exit_1(tmp_path: Path) -> None:
    proc = cli("status", "--socket", str(tmp_path / "none.sock"))
    assert proc.returncode == 1
    assert "no agent socket" in proc.stderr
