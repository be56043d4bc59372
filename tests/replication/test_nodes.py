"""The test pair's ports stay theirs on a shared machine (nodes.py): while a node is the primary its
replication port is not listened on, yet nobody else can bind it, and the node listens there again
when it is restarted as a standby (session 8's kill test failed once: another run took the port)."""

from __future__ import annotations

import errno
import socket

import pytest

from tests.replication.nodes import Node

pytestmark = pytest.mark.timeout(120)


def _bind(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))


def test_a_primarys_replication_port_stays_its_own(pair: tuple[int, Node, Node]) -> None:
    port, a, b = pair
    b.start_standby(port, a)
    a.start_primary(port, b)
    a.wait_protected()
    with pytest.raises(OSError) as exc:
        _bind(a.repl_port)  # unused while a is the primary, and still not free
    assert exc.value.errno == errno.EADDRINUSE
    a.kill()
    b.wait_status(lambda s: s["role"] == "primary", 60, "b took over")
    with pytest.raises(OSError):
        _bind(a.repl_port)  # nobody listens there now, and it is still not free
    a.start_standby(port, b)  # listens on its replication port again
    b.wait_protected()
