"""What command handlers return, as plain values; the codec encodes them for RESP2 or RESP3.

    int                -> integer               bytes            -> bulk string
    None               -> null (RESP2: $-1)     list / tuple     -> array
    SimpleString("OK") -> +OK                   ErrorReply(msg)  -> -msg (msg starts with its code: "ERR ...")
    dict               -> map (RESP2: flat array of key, value, ...)
    set / frozenset    -> set (RESP2: array)
    float              -> double (RESP2: bulk string in Redis's formatting)
    bool               -> boolean (RESP2: integer 1/0)
    NULL_ARRAY         -> *-1 (RESP3: null), e.g. EXEC aborted by WATCH
    Verbatim(text)     -> verbatim string (RESP3), bulk string in RESP2 (INFO, CLIENT LIST)

    NO_REPLY           -> nothing is sent (SHUTDOWN: Redis closes the connection without a reply)
    BLOCKED            -> nothing is sent yet: the client was parked by a blocking command (BLPOP ...);
                          its reply comes when it is served or times out (kvserver.commands.blocking)

(KV-core note for KV-data: NO_REPLY was added for SHUTDOWN; nothing else changed.)

Handlers signal errors by raising CommandError with the exact Redis error line (STYLE.md §4: one error
type carrying the reply it produces); the dispatcher turns it into an ErrorReply once, at the edge.
"""

from __future__ import annotations

from dataclasses import dataclass


class SimpleString(str):
    """A status reply such as OK or PONG (never contains CR or LF)."""


OK = SimpleString("OK")
QUEUED = SimpleString("QUEUED")
PONG = SimpleString("PONG")


@dataclass(frozen=True)
class ErrorReply:
    message: str  # "ERR unknown command 'FOO'", "WRONGTYPE Operation against ..."


@dataclass(frozen=True)
class Verbatim:
    text: str
    format: str = "txt"


class _NullArray:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NULL_ARRAY"


NULL_ARRAY = _NullArray()


class _NoReply:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_REPLY"


NO_REPLY = _NoReply()


class _Blocked:
    __slots__ = ()

    def __repr__(self) -> str:
        return "BLOCKED"


BLOCKED = _Blocked()


class CommandError(Exception):
    """Raised by a handler; its message is the full error line, code first ("ERR syntax error")."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# Redis's standard error lines, spelled once.
WRONGTYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
SYNTAX = "ERR syntax error"
NOT_INTEGER = "ERR value is not an integer or out of range"
NOT_FLOAT = "ERR value is not a valid float"
NO_SUCH_KEY = "ERR no such key"
OVERFLOW = "ERR increment or decrement would overflow"
MUST_BE_POSITIVE = "ERR value is out of range, must be positive"


def wrong_arity(name: str) -> str:
    return f"ERR wrong number of arguments for '{name.lower()}' command"


Reply = (
    int
    | bytes
    | None
    | list
    | tuple
    | dict
    | set
    | frozenset
    | float
    | bool
    | SimpleString
    | ErrorReply
    | Verbatim
    | _NullArray
    | _NoReply
    | _Blocked
)
