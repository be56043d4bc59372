"""Drive a Session directly with the codec's client side (no sockets): the h11-style fake link.

state = ServerState(SqlConfig(data_dir=str(tmp_path)))
c = SessionClient(state)           # startup done, status "I"
r = c.query("select 1")            # Result(rows, tags, errors, status, messages)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlserver.config import SqlConfig
from sqlserver.protocol import (
    PROTOCOL_3_0,
    BackendParser,
    CommandComplete,
    DataRow,
    ErrorResponse,
    Query,
    ReadyForQuery,
    RowDescription,
    StartupMessage,
    encode_frontend,
)
from sqlserver.session import Session
from sqlserver.state import ServerState


@dataclass
class Result:
    messages: list[Any] = field(default_factory=list)

    @property
    def rows(self) -> list[tuple[bytes | None, ...]]:
        return [m.values for m in self.messages if isinstance(m, DataRow)]

    @property
    def text_rows(self) -> list[tuple[str | None, ...]]:
        return [tuple(None if v is None else v.decode() for v in r) for r in self.rows]

    @property
    def tags(self) -> list[str]:
        return [m.tag for m in self.messages if isinstance(m, CommandComplete)]

    @property
    def errors(self) -> list[str]:
        return [m.sqlstate for m in self.messages if isinstance(m, ErrorResponse)]

    @property
    def status(self) -> str | None:
        ready = [m.status for m in self.messages if isinstance(m, ReadyForQuery)]
        return ready[-1] if ready else None

    @property
    def descriptions(self) -> list[RowDescription]:
        return [m for m in self.messages if isinstance(m, RowDescription)]

    def of(self, cls: type) -> list[Any]:
        return [m for m in self.messages if isinstance(m, cls)]


class SessionClient:
    """A client of one Session: encodes messages, feeds them, parses what comes back."""

    def __init__(self, state: ServerState, user: str = "postgres", startup: bool = True) -> None:
        self.session: Session = state.new_session("test")
        self.parser = BackendParser()
        if startup:
            r = self.send(StartupMessage(PROTOCOL_3_0, {"user": user, "database": "postgres"}))
            assert r.status == "I", r.messages

    def send_bytes(self, data: bytes) -> Result:
        self.parser.feed(self.session.receive(data))
        out = Result()
        while (msg := self.parser.next()) is not None:
            out.messages.append(msg)
        return out

    def send(self, *msgs: Any) -> Result:
        return self.send_bytes(b"".join(encode_frontend(m) for m in msgs))

    def query(self, sql: str) -> Result:
        return self.send(Query(sql))


def new_state(tmp_path: Any, **kw: Any) -> ServerState:
    return ServerState(SqlConfig(data_dir=str(tmp_path), **kw))
