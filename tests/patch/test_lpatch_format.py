"""The .lpatch file: signing round trip and every way a file can be bad."""

from __future__ import annotations

import base64
import importlib.util
import json
import marshal
import os
import stat
from pathlib import Path

import pytest

from livepatch.errors import PatchRefused
from livepatch.patch import compiled, lpatch, signing
from livepatch.patch.fingerprint import code_fingerprint
from livepatch.patch.model import (
    Category,
    ChangeKind,
    DefinitionKind,
    ModulePatch,
    PatchSpec,
    TargetChange,
)


def make_spec(body: str = "return 2") -> PatchSpec:
    change = TargetChange("f", ChangeKind.CHANGED, DefinitionKind.FUNCTION, "a" * 64, "b" * 64)
    module = ModulePatch("pkg.mod", f"def f():\n    {body}\n", (change,), "c" * 64)
    return PatchSpec("p1", "pkg", Category.THREAD_LOCAL, (module,), description="fix f")


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[signing.PrivateKey, signing.PublicKey]:
    priv, pub, key_id = signing.generate_keypair(tmp_path / "keys")
    private = signing.load_private_key(priv)
    public = signing.load_public_key(pub)
    assert private.key_id == public.key_id == key_id
    return private, public


def test_keygen_modes_and_refuses_overwrite(tmp_path: Path) -> None:
    priv, pub, _ = signing.generate_keypair(tmp_path)
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    assert pub.read_text().startswith("-----BEGIN PUBLIC KEY-----")
    before = priv.read_bytes()
    with pytest.raises(signing.KeyFileError, match="refusing to overwrite"):
        signing.generate_keypair(tmp_path)
    assert priv.read_bytes() == before


def test_load_key_rejects_garbage(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_text("not a key")
    with pytest.raises(signing.KeyFileError, match="not a PEM public key"):
        signing.load_public_key(bad)
    with pytest.raises(signing.KeyFileError, match="cannot read"):
        signing.load_private_key(tmp_path / "missing.key")


def test_round_trip_signed(tmp_path: Path, keys) -> None:
    private, public = keys
    path = tmp_path / "fix.lpatch"
    lpatch.write(path, lpatch.build(make_spec(), private))
    pf = lpatch.read(path)
    assert pf.spec == make_spec()
    assert pf.signature is not None and pf.signature.key_id == public.key_id
    assert pf.verify([public]) == public.key_id


def test_layout_does_not_matter_content_does(tmp_path: Path, keys) -> None:
    private, public = keys
    doc = json.loads(lpatch.dumps(lpatch.build(make_spec(), private)))
    compact = json.dumps(doc, separators=(",", ":")).encode()
    assert lpatch.loads(compact).verify([public]) == public.key_id


def test_tampered_manifest_is_refused(keys) -> None:
    private, public = keys
    doc = json.loads(lpatch.dumps(lpatch.build(make_spec(), private)))
    doc["manifest"]["modules"][0]["new_source"] = "def f():\n    return 666\n"
    pf = lpatch.loads(json.dumps(doc).encode())
    with pytest.raises(PatchRefused, match="bad signature"):
        pf.verify([public])


@pytest.mark.parametrize(
    "manifest",
    [
        {"z": [], "a": {"\u00e9": '\u00fc\u2028\n"', "b": [1, 2.5, None, True]}, "\u00e9": 1},
        {"modules": [{"y": 1, "x": "\u00ff"}, [], "s"], "compiled": {"views": {}}, "n": None},
        {},
    ],
)
def test_canonical_bytes_in_pieces_are_the_same_bytes(manifest: dict) -> None:
    calls: list[None] = []
    pieces = lpatch.canonical_bytes(manifest, lambda: calls.append(None))
    assert pieces == lpatch.canonical_bytes(manifest)
    assert pieces == json.dumps(
        manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=True
    ).encode("utf-8")
    assert len(calls) == sum(len(v) if isinstance(v, list) else 1 for v in manifest.values())


def test_a_tampered_manifest_is_refused_when_checked_in_pieces(keys) -> None:
    """The agent checks the signature with its pacer between the pieces of the canonical encoding."""
    private, public = keys
    doc = json.loads(lpatch.dumps(lpatch.build(make_spec(), private)))
    calls: list[None] = []
    _spec, signer = lpatch.from_document(doc).verified_spec(
        [public], between=lambda: calls.append(None)
    )
    assert signer == public.key_id and calls
    doc["manifest"]["modules"][0]["new_source"] = "def f():\n    return 666\n"
    with pytest.raises(PatchRefused, match="bad signature"):
        lpatch.from_document(doc).verified_spec([public], between=lambda: None)


def test_tampered_signature_is_refused(keys) -> None:
    private, public = keys
    pf = lpatch.build(make_spec(), private)
    assert pf.signature is not None
    flipped = bytes([pf.signature.value[0] ^ 1]) + pf.signature.value[1:]
    bad = lpatch.PatchFile(pf.spec, pf.manifest, lpatch.Signature(pf.signature.key_id, flipped))
    again = lpatch.loads(lpatch.dumps(bad))
    with pytest.raises(PatchRefused, match="bad signature"):
        again.verify([public])


def test_wrong_key_is_refused(tmp_path: Path, keys) -> None:
    private, _ = keys
    _, other_pub, _ = signing.generate_keypair(tmp_path / "other")
    other = signing.load_public_key(other_pub)
    pf = lpatch.loads(lpatch.dumps(lpatch.build(make_spec(), private)))
    with pytest.raises(PatchRefused, match="does not trust"):
        pf.verify([other])
    # a forged key id (claiming the trusted key) still fails the signature check
    assert pf.signature is not None
    forged = lpatch.PatchFile(
        pf.spec, pf.manifest, lpatch.Signature(other.key_id, pf.signature.value)
    )
    with pytest.raises(PatchRefused, match="bad signature"):
        forged.verify([other])


def test_unsigned(keys) -> None:
    _, public = keys
    pf = lpatch.loads(lpatch.dumps(lpatch.build(make_spec())))
    assert not pf.signed
    with pytest.raises(PatchRefused, match="not signed"):
        pf.verify([public])
    assert pf.verify([public], allow_unsigned=True) is None


def test_truncated_file(keys) -> None:
    private, _ = keys
    data = lpatch.dumps(lpatch.build(make_spec(), private))
    for cut in (0, 1, len(data) // 2, len(data) - 3):
        with pytest.raises(lpatch.PatchFileError, match=r"not a valid patch file|truncated"):
            lpatch.loads(data[:cut])


def test_oversize_file(tmp_path: Path) -> None:
    path = tmp_path / "big.lpatch"
    with open(path, "wb") as f:
        f.truncate(lpatch.MAX_FILE_BYTES + 1)
    with pytest.raises(lpatch.PatchFileError, match="over the limit"):
        lpatch.read(path)
    with pytest.raises(lpatch.PatchFileError, match="over the limit"):
        lpatch.loads(b" " * (lpatch.MAX_FILE_BYTES + 1))


def test_oversize_spec_is_not_written() -> None:
    spec = make_spec("return '" + "x" * lpatch.MAX_FILE_BYTES + "'")
    with pytest.raises(lpatch.PatchFileError, match="over the limit"):
        lpatch.dumps(lpatch.build(spec))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(format_version=2), "file format version 2"),
        (lambda d: d["manifest"].update(format_version=99), "manifest format version 99"),
        (lambda d: d.pop("format"), "not a patch file"),
        (lambda d: d.update(manifest=[]), "not an object"),
        (lambda d: d["manifest"].pop("modules"), "missing field 'modules'"),
        (lambda d: d["manifest"].update(category="nonsense"), "malformed manifest"),
        (lambda d: d["signature"].update(value="***"), "not valid base64"),
        (lambda d: d["signature"].update(value="AAAA"), "Ed25519 signature has 64"),
        (lambda d: d["signature"].update(algorithm="rsa"), "unsupported signature algorithm"),
    ],
)
def test_malformed_documents(keys, mutate, message: str) -> None:
    private, _ = keys
    doc = json.loads(lpatch.dumps(lpatch.build(make_spec(), private)))
    mutate(doc)
    with pytest.raises(lpatch.PatchFileError, match=message):
        lpatch.loads(json.dumps(doc).encode())


def test_not_utf8() -> None:
    with pytest.raises(lpatch.PatchFileError, match="not UTF-8"):
        lpatch.loads(b"\xff\xfe{}")


# -- compiled code (livepatch.patch.compiled) ---------------------------------------------------------


def _resign(doc: dict, private: signing.PrivateKey) -> dict:
    """The document with its manifest signed again, as an author would after changing it."""
    sig = lpatch.Signature(private.key_id, private.sign(lpatch.canonical_bytes(doc["manifest"])))
    return {**doc, "signature": sig.to_dict()}


def test_a_signed_patch_carries_its_code_compiled_for_this_interpreter(keys) -> None:
    private, public = keys
    doc = json.loads(lpatch.dumps(lpatch.build(make_spec("return 41 + 1"), private)))
    section = doc["manifest"]["compiled"]
    assert section["format"] == compiled.SECTION_FORMAT
    assert list(section["code"]) == [importlib.util.MAGIC_NUMBER.hex()]
    assert list(section["code"][importlib.util.MAGIC_NUMBER.hex()]) == ["pkg.mod"]
    spec, signer = lpatch.from_document(doc).verified_spec([public])
    assert signer == public.key_id
    (mp,) = spec.modules
    assert isinstance(mp, compiled.CompiledModulePatch)
    code = mp.compiled["f"].code
    assert mp.compiled["f"].defaults == ()
    assert eval(code) == 42  # the body of f, as compiled by `build`
    assert code_fingerprint(code) == code_fingerprint(
        next(
            c
            for c in compile(mp.new_source, "x", "exec", dont_inherit=True).co_consts
            if hasattr(c, "co_code")
        )
    )


def test_the_compiled_code_is_covered_by_the_signature(keys) -> None:
    private, public = keys
    doc = json.loads(lpatch.dumps(lpatch.build(make_spec("return 1"), private)))
    other = json.loads(lpatch.dumps(lpatch.build(make_spec("return 666"), private)))
    magic = importlib.util.MAGIC_NUMBER.hex()
    doc["manifest"]["compiled"]["code"][magic] = other["manifest"]["compiled"]["code"][magic]
    with pytest.raises(PatchRefused, match="bad signature"):
        lpatch.from_document(doc).verified_spec([public])


def test_compiled_code_is_decoded_only_after_the_signature_verified(keys) -> None:
    """Bytes that are not valid marshal data: a signed patch reports them malformed, an unsigned or a
    badly signed one never gets as far as decoding them."""
    private, public = keys
    doc = json.loads(lpatch.dumps(lpatch.build(make_spec(), private)))
    garbage = base64.b64encode(b"\xff\x00 not marshal data").decode()
    doc["manifest"]["compiled"]["code"][importlib.util.MAGIC_NUMBER.hex()]["pkg.mod"] = garbage
    with pytest.raises(PatchRefused, match="bad signature"):  # tampered: refused before decoding
        lpatch.from_document(doc).verified_spec([public])
    unsigned = {**doc, "signature": None}
    spec, signer = lpatch.from_document(unsigned).verified_spec([public], allow_unsigned=True)
    assert signer is None
    assert not isinstance(spec.modules[0], compiled.CompiledModulePatch)  # compiled from source
    with pytest.raises(
        lpatch.PatchFileError, match=r"compiled code is malformed.*cannot be decoded"
    ):
        lpatch.from_document(_resign(doc, private)).verified_spec([public])


def test_code_compiled_for_another_interpreter_is_ignored(keys) -> None:
    private, public = keys
    doc = json.loads(lpatch.dumps(lpatch.build(make_spec(), private)))
    code = doc["manifest"]["compiled"]["code"]
    code["00000000"] = code.pop(importlib.util.MAGIC_NUMBER.hex())
    spec, _ = lpatch.from_document(_resign(doc, private)).verified_spec([public])
    assert type(spec.modules[0]) is ModulePatch
    assert spec == make_spec()


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c, m: c.update(code=[]), 'no "code" object'),
        (lambda c, m: c["code"].update({m: "x"}), "not an object of modules"),
        (
            lambda c, m: c["code"][m].update({"pkg.other": c["code"][m]["pkg.mod"]}),
            "does not change",
        ),
        (lambda c, m: c["code"][m].update({"pkg.mod": 7}), "not a string"),
    ],
)
def test_malformed_signed_compiled_sections(keys, mutate, message: str) -> None:
    private, public = keys
    doc = json.loads(lpatch.dumps(lpatch.build(make_spec(), private)))
    mutate(doc["manifest"]["compiled"], importlib.util.MAGIC_NUMBER.hex())
    with pytest.raises(lpatch.PatchFileError, match=message):
        lpatch.from_document(_resign(doc, private)).verified_spec([public])


def test_a_section_of_an_unknown_format_is_ignored(keys) -> None:
    private, public = keys
    doc = json.loads(lpatch.dumps(lpatch.build(make_spec(), private)))
    doc["manifest"]["compiled"]["format"] = 99
    spec, _ = lpatch.from_document(_resign(doc, private)).verified_spec([public])
    assert type(spec.modules[0]) is ModulePatch


def test_a_source_that_does_not_compile_gets_no_compiled_code(keys) -> None:
    private, _ = keys
    doc = json.loads(lpatch.dumps(lpatch.build(make_spec("return ("), private)))
    assert "compiled" not in doc["manifest"]  # staging compiles the source and refuses, naming it


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ((1, {}, {"g": compile("g = 1", "x", "exec")}), "which the patch does not add"),
        ((1, {"f": (compile("1", "x", "eval"), ((1, 2),))}, {}), "a malformed default"),
        ((1, {"f": "not code"}, {}), "not a \\(code, defaults\\) pair"),
        ((2, {}, {}), "unknown layout"),
    ],
)
def test_malformed_signed_payloads(keys, payload, message: str) -> None:
    private, public = keys
    doc = json.loads(lpatch.dumps(lpatch.build(make_spec(), private)))
    encoded = base64.b64encode(marshal.dumps(payload)).decode()
    doc["manifest"]["compiled"]["code"][importlib.util.MAGIC_NUMBER.hex()]["pkg.mod"] = encoded
    with pytest.raises(lpatch.PatchFileError, match=message):
        lpatch.from_document(_resign(doc, private)).verified_spec([public])
