# Types of the C module built from _mverecord.c (optional; see kvserver.mve_support).

from collections.abc import Callable
from typing import Any

class Recorder:
    depth: int
    flush_at: int
    def __init__(
        self,
        process: Callable[..., None],
        server: Any,
        pending: list[Any],
        flush: Callable[[], None],
        flush_at: int,
        blocked: Any,
        subscribed: Any,
        slow: Callable[[Any, list[list[bytes]]], None],
        /,
    ) -> None: ...
    def __call__(self, client: Any, commands: list[list[bytes]], /) -> None: ...

def encode_frame(records: list[Any], /) -> bytes | None: ...
