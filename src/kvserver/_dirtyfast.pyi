from collections.abc import Callable
from typing import Any

def methods(
    cls: type, bases: dict[str, Callable[..., Any]], keyspace: type, dbstate: type, tracker: type
) -> dict[str, Any]: ...
def configure(tracker: Any) -> None: ...

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
    ) -> None: ...
    def __call__(self, client: Any, commands: list[list[bytes]]) -> None: ...
