"""Shared test fixtures. The helpers live in tests/support.py (one home); the two most used are
re-exported here, so `from tests.conftest import free_port, require_tool` keeps working."""

from __future__ import annotations

from tests.support import free_port, require_tool

__all__ = ["free_port", "require_tool"]
