"""The wire codec the load driver and the harness's client use: kvserver's sans-IO RESP codec.

One codec for the server, its tests and this harness (DESIGN.md: wire codecs are shared). This module only
names the three things the driver needs, so another server's codec (the SQL server's) can stand beside it:
    encode_command(*args) -> bytes      a request
    ReplyParser().feed(data); .replies() -> list of whole replies (possibly empty)
    is_error(reply) -> bool             an error reply (returned as a value, never raised)
"""

from __future__ import annotations

from typing import Any

from kvserver.replies import ErrorReply
from kvserver.resp import ReplyParser, encode_command

__all__ = ["ReplyParser", "encode_command", "is_error"]


def is_error(reply: Any) -> bool:
    return isinstance(reply, ErrorReply)
