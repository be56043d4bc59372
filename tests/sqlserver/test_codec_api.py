"""The codec's public surface (STYLE.md §12): every name in sqlserver.protocol.__all__ exists, is
listed once and imported once, and nothing public is imported without being listed."""

from __future__ import annotations

import ast
import dataclasses
import importlib
from collections import Counter
from pathlib import Path

import sqlserver.protocol as protocol
from sqlserver.protocol import messages

INIT = Path(protocol.__file__)


def test_every_public_name_exists_and_is_listed_once() -> None:
    assert [n for n in protocol.__all__ if not hasattr(protocol, n)] == []
    assert [n for n, c in Counter(protocol.__all__).items() if c > 1] == []


def test_every_public_name_is_imported_once_and_nothing_public_is_unlisted() -> None:
    tree = ast.parse(INIT.read_text())
    imported = Counter(
        alias.asname or alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    )
    assert [n for n, c in imported.items() if c > 1] == []
    assert sorted(n for n in imported if not n.startswith("_") and n not in protocol.__all__) == []


def test_the_interface_names_other_layers_build_on() -> None:
    # SQL_INTERFACES.md: the session and the network layer use these names.
    for name in ("FrontendParser", "BackendParser", "encode", "encode_frontend", "data_row",
                 "command_complete", "READY_IDLE", "READY_IN_TX", "READY_FAILED", "BIND_COMPLETE",
                 "PARSE_COMPLETE", "PgError", "ProtocolViolation", "parse_sasl_initial",
                 "parse_sasl_response", "ScramServer", "scram_verifier", "md5_salted_hash"):  # fmt: skip
        assert name in protocol.__all__, name
    for module, names in [("types", ["encode_text", "decode_text", "encode_binary", "decode_binary"]),
                          ("errors", ["UNIQUE_VIOLATION", "PROTOCOL_VIOLATION"])]:  # fmt: skip
        mod = importlib.import_module(f"sqlserver.protocol.{module}")
        assert all(hasattr(mod, n) for n in names)


def test_every_message_is_a_frozen_dataclass() -> None:
    classes = [
        c
        for c in vars(messages).values()
        if isinstance(c, type) and c.__module__ == messages.__name__
    ]
    assert len(classes) >= 40
    for cls in classes:
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
        assert cls.__name__ in protocol.__all__, cls
