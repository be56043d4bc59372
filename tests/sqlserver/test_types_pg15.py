"""sqlserver.protocol.types held to a real PostgreSQL 15's answers.

pg15_type_vectors.json was written by scripts/pg_type_vectors.py from a running PostgreSQL 15: for
each input literal, the type's output (what the wire carries in text format) and typsend's bytes
(binary format). Here, for every vector:
- decoding PostgreSQL's input literal and encoding the value gives PostgreSQL's text output
  (so input parsing is as lenient as PostgreSQL's, and output is written the same way);
- the binary form decodes to the same value as the text form, and re-encodes to the same bytes.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from sqlserver.protocol import types

VECTORS = json.loads((Path(__file__).parent / "pg15_type_vectors.json").read_text())
# A lower bound other than 1 ("[0:1]={7,8}") is not kept by a Python list: documented limit.
KEPT = [v for v in VECTORS if not v["text"].startswith("[")]


def _same(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN (floats and Decimals), element-wise for arrays."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    if isinstance(a, Decimal) and isinstance(b, Decimal) and a.is_nan():
        return b.is_nan()
    if isinstance(a, float) and isinstance(b, float) and a == 0 == b:
        return math.copysign(1, a) == math.copysign(1, b)
    return bool(type(a) is type(b) and a == b)


def _id(v: dict[str, Any]) -> str:
    return f"{v['type']}:{v['input']!r}"


def test_the_vectors_cover_every_required_type() -> None:
    required = {"bool", "int2", "int4", "int8", "float4", "float8", "numeric", "text", "varchar",
                "bpchar", "name", "bytea", "date", "timestamp", "timestamptz", "uuid", "json",
                "jsonb", "oid", "int4[]", "text[]"}  # fmt: skip
    assert required <= {v["type"] for v in VECTORS}


@pytest.mark.parametrize("vector", KEPT, ids=_id)
def test_text_input_then_output_is_postgresqls(vector: dict[str, Any]) -> None:
    oid = vector["oid"]
    value = types.decode_text(oid, vector["input"].encode())
    assert types.encode_text(oid, value).decode() == vector["text"]


@pytest.mark.parametrize("vector", KEPT, ids=_id)
def test_binary_form_is_postgresqls(vector: dict[str, Any]) -> None:
    oid = vector["oid"]
    data = bytes.fromhex(vector["binary"])
    from_binary = types.decode_binary(oid, data)
    from_text = types.decode_text(oid, vector["text"].encode())
    assert _same(from_binary, from_text), (from_binary, from_text)
    assert types.encode_binary(oid, from_binary) == data
    assert types.encode_binary(oid, from_text) == data


@pytest.mark.parametrize("vector", [v for v in VECTORS if v["text"].startswith("[")], ids=_id)
def test_arrays_with_other_lower_bounds_keep_their_elements(vector: dict[str, Any]) -> None:
    oid = vector["oid"]
    assert types.decode_text(oid, vector["text"].encode()) == types.decode_binary(
        oid, bytes.fromhex(vector["binary"])
    )
