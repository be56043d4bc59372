"""PostgreSQL v3 protocol messages as small frozen dataclasses, one per message (STYLE.md §2).

Frontend messages are what a client sends (the server's FrontendParser produces them, the client's
encode_frontend writes them); backend messages are what the server sends (encode writes them, the
client's BackendParser produces them). CopyData and CopyDone travel in both directions and are one
class each.

Constructors check what the wire could not carry (a NUL inside a string, a kind outside 'S'/'P', a
status outside I/T/E); parsers check the wire themselves, so a parsed message is always valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Protocol codes carried in the first message (no type byte), from pqcomm.h.
PROTOCOL_3_0 = 3 << 16  # 196608
SSL_REQUEST_CODE = 80877103  # 1234 << 16 | 5679
GSSENC_REQUEST_CODE = 80877104  # 1234 << 16 | 5680
CANCEL_REQUEST_CODE = 80877102  # 1234 << 16 | 5678

# Transaction status in ReadyForQuery.
STATUS_IDLE = "I"
STATUS_IN_TRANSACTION = "T"
STATUS_FAILED = "E"

FORMAT_TEXT = 0
FORMAT_BINARY = 1


def _check_text(what: str, value: str) -> None:
    if "\0" in value:
        raise ValueError(f"{what} may not contain a NUL character: {value!r}")


def _check_kind(what: str, kind: str) -> None:
    if kind not in ("S", "P"):
        raise ValueError(f"{what} kind must be 'S' (statement) or 'P' (portal), not {kind!r}")


def _check_formats(what: str, formats: tuple[int, ...]) -> None:
    for f in formats:
        if f not in (FORMAT_TEXT, FORMAT_BINARY):
            raise ValueError(f"{what}: format codes are 0 (text) or 1 (binary), not {f}")


# --------------------------------------------------------------------------------------------
# Frontend (client -> server)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartupMessage:
    """First message of a session: protocol (3 << 16 | minor) and parameters (user, database...)."""

    protocol: int
    params: dict[str, str] = field(default_factory=dict)

    @property
    def major(self) -> int:
        return self.protocol >> 16

    @property
    def minor(self) -> int:
        return self.protocol & 0xFFFF


@dataclass(frozen=True, slots=True)
class SSLRequest:
    """Asks for TLS; the server answers one byte, b"N" (no) or b"S" (yes)."""


@dataclass(frozen=True, slots=True)
class GSSENCRequest:
    """Asks for GSSAPI encryption; the server answers one byte, b"N"."""


@dataclass(frozen=True, slots=True)
class CancelRequest:
    """Sent on a new connection: cancel the running statement of the session (pid, key)."""

    pid: int
    key: int


@dataclass(frozen=True, slots=True)
class Query:
    """Simple query: one string that may hold several statements."""

    sql: str


@dataclass(frozen=True, slots=True)
class Parse:
    """Extended query: prepare `query` as statement `name` ("" = unnamed); oid 0 = unspecified."""

    name: str
    query: str
    param_oids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Bind:
    """Extended query: bind `params` (raw bytes, None = NULL) of `statement` into `portal`.

    param_formats / result_formats hold 0 codes (all text), 1 code (for all) or one per item.
    """

    portal: str
    statement: str
    param_formats: tuple[int, ...] = ()
    params: tuple[bytes | None, ...] = ()
    result_formats: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Describe:
    """Describe a statement ('S') or a portal ('P')."""

    kind: str
    name: str = ""

    def __post_init__(self) -> None:
        _check_kind("Describe", self.kind)


@dataclass(frozen=True, slots=True)
class Execute:
    """Run `portal`, returning at most max_rows rows (0 or negative = all, as in PostgreSQL)."""

    portal: str = ""
    max_rows: int = 0


@dataclass(frozen=True, slots=True)
class Close:
    """Close a statement ('S') or a portal ('P'); closing a missing one is not an error."""

    kind: str
    name: str = ""

    def __post_init__(self) -> None:
        _check_kind("Close", self.kind)


@dataclass(frozen=True, slots=True)
class Sync:
    """End of an extended-query batch: commit an implicit transaction, answer ReadyForQuery."""


@dataclass(frozen=True, slots=True)
class Flush:
    """Send what is buffered without ending the batch."""


@dataclass(frozen=True, slots=True)
class Terminate:
    """The client is leaving."""


@dataclass(frozen=True, slots=True)
class CopyData:
    """A chunk of COPY data (both directions)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CopyDone:
    """End of COPY data (both directions)."""


@dataclass(frozen=True, slots=True)
class CopyFail:
    """The client aborts COPY FROM STDIN with this reason."""

    message: str


@dataclass(frozen=True, slots=True)
class PasswordMessage:
    """A 'p' message, raw: a password, a SASLInitialResponse or a SASLResponse.

    Only the authentication layer knows which one it expects (see frontend.parse_password,
    parse_sasl_initial, parse_sasl_response).
    """

    data: bytes


FrontendMessage = (
    StartupMessage
    | SSLRequest
    | GSSENCRequest
    | CancelRequest
    | Query
    | Parse
    | Bind
    | Describe
    | Execute
    | Close
    | Sync
    | Flush
    | Terminate
    | CopyData
    | CopyDone
    | CopyFail
    | PasswordMessage
)

# --------------------------------------------------------------------------------------------
# Backend (server -> client)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuthenticationOk:
    pass


@dataclass(frozen=True, slots=True)
class AuthenticationCleartextPassword:
    pass


@dataclass(frozen=True, slots=True)
class AuthenticationMD5Password:
    salt: bytes

    def __post_init__(self) -> None:
        if len(self.salt) != 4:
            raise ValueError(f"the MD5 salt is 4 bytes, not {len(self.salt)}")


@dataclass(frozen=True, slots=True)
class AuthenticationSASL:
    mechanisms: tuple[str, ...] = ("SCRAM-SHA-256",)

    def __post_init__(self) -> None:
        for m in self.mechanisms:
            _check_text("SASL mechanism", m)
            if not m:
                raise ValueError("a SASL mechanism name may not be empty")


@dataclass(frozen=True, slots=True)
class AuthenticationSASLContinue:
    data: bytes


@dataclass(frozen=True, slots=True)
class AuthenticationSASLFinal:
    data: bytes


@dataclass(frozen=True, slots=True)
class ParameterStatus:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class BackendKeyData:
    pid: int
    key: int


@dataclass(frozen=True, slots=True)
class ReadyForQuery:
    status: str = STATUS_IDLE

    def __post_init__(self) -> None:
        if self.status not in (STATUS_IDLE, STATUS_IN_TRANSACTION, STATUS_FAILED):
            raise ValueError(f"ReadyForQuery status is I, T or E, not {self.status!r}")


@dataclass(frozen=True, slots=True)
class FieldDescription:
    """One column of a RowDescription (table_oid/column_attr 0 when not a table column)."""

    name: str
    table_oid: int = 0
    column_attr: int = 0
    type_oid: int = 25
    type_size: int = -1
    type_modifier: int = -1
    format: int = FORMAT_TEXT


@dataclass(frozen=True, slots=True)
class RowDescription:
    fields: tuple[FieldDescription, ...] = ()


@dataclass(frozen=True, slots=True)
class DataRow:
    values: tuple[bytes | None, ...] = ()


@dataclass(frozen=True, slots=True)
class CommandComplete:
    tag: str


@dataclass(frozen=True, slots=True)
class EmptyQueryResponse:
    pass


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """An error; `extra` holds other fields as (code letter, value), e.g. ("W", where)."""

    severity: str
    sqlstate: str
    message: str
    detail: str | None = None
    hint: str | None = None
    position: int | None = None
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class NoticeResponse:
    """A notice or warning; same fields as ErrorResponse."""

    severity: str
    sqlstate: str
    message: str
    detail: str | None = None
    hint: str | None = None
    position: int | None = None
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ParseComplete:
    pass


@dataclass(frozen=True, slots=True)
class BindComplete:
    pass


@dataclass(frozen=True, slots=True)
class CloseComplete:
    pass


@dataclass(frozen=True, slots=True)
class NoData:
    pass


@dataclass(frozen=True, slots=True)
class ParameterDescription:
    oids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class PortalSuspended:
    pass


@dataclass(frozen=True, slots=True)
class CopyInResponse:
    """The server is ready for COPY FROM STDIN data; format 0 = text (column formats all 0)."""

    format: int = FORMAT_TEXT
    column_formats: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check_formats("CopyInResponse", (self.format, *self.column_formats))


@dataclass(frozen=True, slots=True)
class CopyOutResponse:
    """COPY TO STDOUT data follows."""

    format: int = FORMAT_TEXT
    column_formats: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        _check_formats("CopyOutResponse", (self.format, *self.column_formats))


@dataclass(frozen=True, slots=True)
class NegotiateProtocolVersion:
    """The newest minor version the server supports, and the _pq_ options it did not recognise.

    On the wire the version is the whole code, 3 << 16 | newest_minor (196608 for 3.0), as
    PostgreSQL sends it.
    """

    newest_minor: int = 0
    unrecognized: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NotificationResponse:
    pid: int
    channel: str
    payload: str


BackendMessage = (
    AuthenticationOk
    | AuthenticationCleartextPassword
    | AuthenticationMD5Password
    | AuthenticationSASL
    | AuthenticationSASLContinue
    | AuthenticationSASLFinal
    | ParameterStatus
    | BackendKeyData
    | ReadyForQuery
    | RowDescription
    | DataRow
    | CommandComplete
    | EmptyQueryResponse
    | ErrorResponse
    | NoticeResponse
    | ParseComplete
    | BindComplete
    | CloseComplete
    | NoData
    | ParameterDescription
    | PortalSuspended
    | CopyInResponse
    | CopyOutResponse
    | CopyData
    | CopyDone
    | NegotiateProtocolVersion
    | NotificationResponse
)
