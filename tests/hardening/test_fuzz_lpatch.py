"""Fuzzing `.lpatch` decoding (issue 10): arbitrary bytes and JSON, truncations, bit flips, hostile values
and mistyped fields. The only outcomes allowed: a PatchFile, or PatchFileError with a message; and a
patch whose manifest was changed never verifies."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from livepatch.errors import PatchRefused
from livepatch.patch import lpatch, signing
from livepatch.patch.lpatch import PatchFileError
from tests.hardening.fuzzing import (
    FUZZ,
    FUZZ_TIMEOUT_S,
    HOSTILE_JSON_TEXT,
    JSON_VALUES,
    paths,
    set_path,
)
from tests.hardening.hardening_helpers import greet_spec

pytestmark = pytest.mark.timeout(FUZZ_TIMEOUT_S)


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, signing.PublicKey]:
    private, public, _ = signing.generate_keypair(tmp_path_factory.mktemp("keys"))
    patch = lpatch.build(greet_spec(patch_id="fuzz"), signing.load_private_key(private))
    return lpatch.dumps(patch), signing.load_public_key(public)


def _load(data: bytes) -> lpatch.PatchFile | None:
    try:
        return lpatch.loads(data, source="fuzz.lpatch")
    except PatchFileError as exc:
        assert str(exc).startswith("fuzz.lpatch"), exc  # says which file and what
        return None


@FUZZ
@given(st.binary(max_size=2000))
def test_arbitrary_bytes(data: bytes) -> None:
    _load(data)


@FUZZ
@given(JSON_VALUES)
def test_arbitrary_json(value: object) -> None:
    _load(json.dumps(value).encode())


@FUZZ
@given(HOSTILE_JSON_TEXT)
def test_hostile_json_text(text: str) -> None:
    _load(text.encode("utf-8", "surrogatepass"))
    _load(('{"format": "lpatch", "format_version": 1, "manifest": ' + text + "}").encode())


@FUZZ
@given(data=st.data())
def test_truncations_and_bit_flips_never_verify(
    signed: tuple[bytes, signing.PublicKey], data: st.DataObject
) -> None:
    raw, key = signed
    original = lpatch.loads(raw)
    if data.draw(st.booleans()):
        mutated = raw[: data.draw(st.integers(0, len(raw) - 1))]
    else:
        buf = bytearray(raw)
        for _ in range(data.draw(st.integers(1, 8))):
            buf[data.draw(st.integers(0, len(buf) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        mutated = bytes(buf)
    pf = _load(mutated)
    if pf is None:
        return
    try:
        pf.verify([key])
    except PatchRefused:
        return
    # verified: only possible when the signed content is exactly the original's
    assert lpatch.canonical_bytes(pf.manifest) == lpatch.canonical_bytes(original.manifest)


@FUZZ
@given(data=st.data())
def test_mistyped_fields(signed: tuple[bytes, signing.PublicKey], data: st.DataObject) -> None:
    raw, key = signed
    doc = json.loads(raw)
    doc["manifest"]["modules"][0]["changes"] = doc["manifest"]["modules"][0]["changes"][:2]
    doc["manifest"]["modules"][0]["new_source"] = "..."  # keep the documents small
    where = data.draw(st.sampled_from(paths(doc)))
    value = data.draw(JSON_VALUES | HOSTILE_JSON_TEXT.map(lambda t: t[:100]))
    mutated = set_path(copy.deepcopy(doc), where, value)
    pf = _load(json.dumps(mutated).encode())
    if pf is not None:
        try:
            pf.verify([key])
        except PatchRefused:
            pass


def test_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    big = tmp_path / "big.lpatch"
    with open(big, "wb") as f:
        f.truncate(lpatch.MAX_FILE_BYTES + 1)
    with pytest.raises(PatchFileError, match="over the limit"):
        lpatch.read(big)
