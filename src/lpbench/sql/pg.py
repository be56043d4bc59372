"""A minimal PostgreSQL client on the shared sans-IO codec: enough for benchmark drivers and checks.

A step of a conversation is one round trip ending in ReadyForQuery:
    "BEGIN"                          a plain string: a simple Query (BEGIN, COMMIT, ";", loading SQL)
    ("SELECT .. $1 ..", (p1, ...))   a prepared statement and its parameters: the extended protocol as a
                                     JDBC PreparedStatement does it once prepared server-side (BenchBase's
                                     way): Parse (named, once per connection and SQL text) + Bind + Execute
                                     + Sync in one write; parameters in text format, types left to the server
Authentication: trust only (what `serve sql` and the test PostgreSQL use by default); anything else is an
error saying so.

Concurrency: a Conversation or BlockingClient belongs to one thread.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlserver.protocol import (
    PROTOCOL_3_0,
    AuthenticationOk,
    BackendParser,
    Bind,
    CommandComplete,
    CopyData,
    CopyDone,
    CopyInResponse,
    DataRow,
    EmptyQueryResponse,
    ErrorResponse,
    Execute,
    ParameterStatus,
    Parse,
    Query,
    ReadyForQuery,
    StartupMessage,
    Sync,
    Terminate,
    encode_frontend,
)

SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
RETRYABLE = (SERIALIZATION_FAILURE, DEADLOCK_DETECTED)
_EXECUTE_SYNC = encode_frontend(Execute("", 0)) + encode_frontend(Sync())

Step = str | tuple[str, tuple[object, ...]]


@dataclass
class Result:
    """Everything the server sent for one Query, up to and including its ReadyForQuery."""

    rows: list[tuple[bytes | None, ...]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    error: ErrorResponse | None = None
    status: str = "I"  # ReadyForQuery's transaction status

    def scalar(self) -> str | None:
        """The first column of the first row as text."""
        if not self.rows or self.rows[0][0] is None:
            return None
        return self.rows[0][0].decode()

    def raise_for_error(self, sql: str = "") -> Result:
        if self.error is not None:
            raise SqlError(self.error, sql)
        return self


class SqlError(Exception):
    def __init__(self, error: ErrorResponse, sql: str = "") -> None:
        super().__init__(
            f"{error.sqlstate} {error.message}" + (f" (in: {sql[:200]})" if sql else "")
        )
        self.sqlstate = error.sqlstate
        self.error = error


class AuthNotSupported(Exception):
    pass


def lit(value: object) -> str:
    """An SQL literal: NULL, numbers as they are, everything else as a quoted string."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


class Conversation:
    """Client side of one connection, sans-IO. feed() returns the Results completed by that data."""

    __slots__ = ("_current", "copy_ready", "parameters", "parser", "prepared")

    def __init__(self) -> None:
        self.parser = BackendParser()
        self._current = Result()
        self.parameters: dict[str, str] = {}  # ParameterStatus values
        self.copy_ready = False  # CopyInResponse seen: the server waits for COPY data
        self.prepared: dict[str, str] = {}  # SQL text -> statement name on this connection

    @staticmethod
    def startup(user: str = "postgres", database: str = "postgres") -> bytes:
        return encode_frontend(StartupMessage(PROTOCOL_3_0, {"user": user, "database": database}))

    @staticmethod
    def query(sql: str) -> bytes:
        return encode_frontend(Query(sql))

    def request(self, step: Step) -> bytes:
        """The bytes of one step (see the module's docstring)."""
        if isinstance(step, str):
            return encode_frontend(Query(step))
        sql, params = step
        name = self.prepared.get(sql)
        head = b""
        if name is None:
            name = self.prepared[sql] = f"lp{len(self.prepared)}"
            head = encode_frontend(Parse(name, sql))
        values = tuple(None if p is None else str(p).encode() for p in params)
        return head + encode_frontend(Bind("", name, (), values, ())) + _EXECUTE_SYNC

    @staticmethod
    def terminate() -> bytes:
        return encode_frontend(Terminate())

    def feed(self, data: bytes) -> list[Result]:
        self.parser.feed(data)
        done = []
        cur = self._current
        while (msg := self.parser.next()) is not None:
            kind = type(msg)
            if kind is DataRow:
                cur.rows.append(msg.values)  # type: ignore[union-attr]
            elif kind is CommandComplete:
                cur.tags.append(msg.tag)  # type: ignore[union-attr]
            elif kind is ReadyForQuery:
                cur.status = msg.status  # type: ignore[union-attr]
                done.append(cur)
                cur = self._current = Result()
            elif kind is ErrorResponse:
                cur.error = msg  # type: ignore[assignment]
            elif kind is ParameterStatus:
                self.parameters[msg.name] = msg.value  # type: ignore[union-attr]
            elif kind is CopyInResponse:
                self.copy_ready = True
            elif kind is EmptyQueryResponse:
                cur.tags.append("")
            elif type(msg).__name__.startswith("Authentication") and kind is not AuthenticationOk:
                raise AuthNotSupported(
                    f"the server asks for {type(msg).__name__}; this client speaks trust auth only"
                )
        return done


class BlockingClient:
    """One blocking connection (loading data, consistency checks, tests). OSError on transport errors."""

    def __init__(
        self, host: str, port: int, timeout_s: float = 30.0, user: str = "postgres"
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conv = Conversation()
        self.sock.sendall(self.conv.startup(user))
        self._wait().raise_for_error("startup")

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.sock.sendall(self.conv.terminate())
        except OSError:
            pass
        self.sock.close()

    def _wait(self) -> Result:
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionResetError("the server closed the connection")
            done = self.conv.feed(data)
            if done:
                return done[0]

    def run(self, step: Step) -> Result:
        """Send one step; its Result (errors are in it, not raised)."""
        self.sock.sendall(self.conv.request(step))
        return self._wait()

    def copy_in(self, table: str, rows: Sequence[Sequence[object]], chunk: int = 2000) -> None:
        """COPY table FROM STDIN (text format) with these rows; raises SqlError."""
        sql = f"COPY {table} FROM STDIN"
        self.sock.sendall(self.conv.query(sql))
        while not self.conv.copy_ready:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionResetError("the server closed the connection")
            done = self.conv.feed(data)
            if done:  # an error instead of CopyInResponse
                done[0].raise_for_error(sql)
        self.conv.copy_ready = False
        for i in range(0, len(rows), chunk):
            text = "".join(
                "\t".join("\\N" if v is None else str(v) for v in row) + "\n"
                for row in rows[i : i + chunk]
            )
            self.sock.sendall(encode_frontend(CopyData(text.encode())))
        self.sock.sendall(encode_frontend(CopyDone()))
        self._wait().raise_for_error(sql)

    def execute(self, step: Step) -> Result:
        """Like run, but raise SqlError on an error."""
        return self.run(step).raise_for_error(str(step))
