"""The replication tests' shared fixture: a port that moves between two nodes, and the two nodes."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.replication.nodes import Node, hold_port
from tests.support import free_port


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[int, Node, Node]]:
    """The served port (either node may hold it) and nodes a and b; both are killed at teardown, a
    stopped one (SIGSTOP, the fault tests) resumed first so the kill is not left pending."""
    port = free_port()
    service = hold_port(port)  # free between a primary's death and the takeover (nodes.py)
    a = Node("a", free_port(), tmp_path)
    b = Node("b", free_port(), tmp_path)
    try:
        yield port, a, b
    finally:
        for node in (a, b):
            if node.alive():
                node.signal(signal.SIGCONT)
            node.kill()
            node.release_port()
        service.close()
