from collections.abc import Callable
from typing import Any

def methods(
    cls: type, bases: dict[str, Callable[..., Any]], keyspace: type, dbstate: type, tracker: type
) -> dict[str, Any]: ...
def configure(tracker: Any) -> None: ...
def hold_replies(held: Any, conn: Any, epoch: int, data: bytes) -> None: ...
def release_held(held: Any, acked: int) -> list[tuple[Any, bytes]]: ...

class Processor:
    def __init__(
        self,
        server: Any,
        tracker: Any,
        held_by_conn: dict[Any, Any],
        slow: Callable[[Any, bool], None],
        hold: Callable[[Any, int], None],
        full: bool,
        readonly: frozenset[bytes] | set[bytes] | None = None,
        held: Any = None,
    ) -> None: ...
    def __call__(self, client: Any, commands: list[list[bytes]]) -> None: ...
