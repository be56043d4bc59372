"""Raw protocol access for the command tests: a reply as the wire carried it, and an error line."""

from __future__ import annotations

import pytest
import redis


def raw(client: redis.Redis, *args: object) -> object:
    """One command's reply as the protocol carried it, without redis-py's reply callbacks."""
    conn = client.connection_pool.get_connection()
    try:
        conn.send_command(*args)
        return conn.read_response()
    finally:
        client.connection_pool.release(conn)


def err(client: redis.Redis, *args: object) -> str:
    """The error line a command gets (redis-py drops the leading 'ERR ')."""
    with pytest.raises(redis.ResponseError) as info:
        raw(client, *args)
    return str(info.value)
