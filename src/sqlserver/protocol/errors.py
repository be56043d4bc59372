"""The one error type of the SQL server, carrying its SQLSTATE (STYLE.md §4), and the SQLSTATE table.

Every layer raises PgError (or a subclass); the session turns it into an ErrorResponse once, at the
edge, with to_message(). ProtocolViolation means the byte stream itself is broken: the session sends
the FATAL ErrorResponse and closes that one connection; other clients are not affected.
"""

from __future__ import annotations

from sqlserver.protocol.messages import ErrorResponse, NoticeResponse

# SQLSTATE codes the project uses (PostgreSQL's errcodes.txt names). One home for each code.
SUCCESSFUL_COMPLETION = "00000"
WARNING = "01000"
NO_DATA = "02000"
CONNECTION_EXCEPTION = "08000"
CONNECTION_FAILURE = "08006"
PROTOCOL_VIOLATION = "08P01"
FEATURE_NOT_SUPPORTED = "0A000"
CARDINALITY_VIOLATION = "21000"
STRING_DATA_RIGHT_TRUNCATION = "22001"
NUMERIC_VALUE_OUT_OF_RANGE = "22003"
INVALID_DATETIME_FORMAT = "22007"
DATETIME_FIELD_OVERFLOW = "22008"
DIVISION_BY_ZERO = "22012"
CHARACTER_NOT_IN_REPERTOIRE = "22021"
INVALID_PARAMETER_VALUE = "22023"
INVALID_TEXT_REPRESENTATION = "22P02"
UNTRANSLATABLE_CHARACTER = "22P05"
INVALID_BINARY_REPRESENTATION = "22P03"
NOT_NULL_VIOLATION = "23502"
FOREIGN_KEY_VIOLATION = "23503"
UNIQUE_VIOLATION = "23505"
CHECK_VIOLATION = "23514"
INVALID_CURSOR_STATE = "24000"
INVALID_TRANSACTION_STATE = "25000"
ACTIVE_SQL_TRANSACTION = "25001"
READ_ONLY_SQL_TRANSACTION = "25006"
NO_ACTIVE_SQL_TRANSACTION = "25P01"
IN_FAILED_SQL_TRANSACTION = "25P02"
INVALID_SQL_STATEMENT_NAME = "26000"
INVALID_AUTHORIZATION_SPECIFICATION = "28000"
INVALID_PASSWORD = "28P01"
INVALID_CURSOR_NAME = "34000"
INVALID_CATALOG_NAME = "3D000"
INVALID_SCHEMA_NAME = "3F000"
SERIALIZATION_FAILURE = "40001"
DEADLOCK_DETECTED = "40P01"
SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION = "42000"
INSUFFICIENT_PRIVILEGE = "42501"
SYNTAX_ERROR = "42601"
AMBIGUOUS_COLUMN = "42702"
UNDEFINED_COLUMN = "42703"
UNDEFINED_OBJECT = "42704"
GROUPING_ERROR = "42803"
DATATYPE_MISMATCH = "42804"
WRONG_OBJECT_TYPE = "42809"
UNDEFINED_FUNCTION = "42883"
UNDEFINED_TABLE = "42P01"
DUPLICATE_CURSOR = "42P03"
DUPLICATE_PREPARED_STATEMENT = "42P05"
DUPLICATE_SCHEMA = "42P06"
DUPLICATE_TABLE = "42P07"
DUPLICATE_OBJECT = "42710"
INDETERMINATE_DATATYPE = "42P18"
TOO_MANY_CONNECTIONS = "53300"
PROGRAM_LIMIT_EXCEEDED = "54000"
OBJECT_IN_USE = "55006"
CANT_CHANGE_RUNTIME_PARAM = "55P02"
LOCK_NOT_AVAILABLE = "55P03"
QUERY_CANCELED = "57014"
ADMIN_SHUTDOWN = "57P01"
INTERNAL_ERROR = "XX000"

# Severities (the non-localized 'V' field carries the same words).
ERROR = "ERROR"
FATAL = "FATAL"
PANIC = "PANIC"
NOTICE = "NOTICE"


class PgError(Exception):
    """An error to report to the client as an ErrorResponse with this SQLSTATE.

    Raised by any layer; caught once by the session, which sends to_message() and, when severity is
    FATAL, closes the connection. Immutable after construction; safe to share between threads.
    """

    def __init__(
        self,
        sqlstate: str,
        message: str,
        severity: str = ERROR,
        detail: str | None = None,
        hint: str | None = None,
        position: int | None = None,
    ) -> None:
        super().__init__(message)
        if len(sqlstate) != 5 or not sqlstate.isascii() or not sqlstate.isalnum():
            raise ValueError(f"a SQLSTATE is 5 ASCII letters or digits, not {sqlstate!r}")
        self.sqlstate = sqlstate
        self.message = message
        self.severity = severity
        self.detail = detail
        self.hint = hint
        self.position = position

    @property
    def fatal(self) -> bool:
        """True when the connection must be closed after reporting this error."""
        return self.severity in (FATAL, PANIC)

    def to_message(self) -> ErrorResponse:
        return ErrorResponse(
            severity=self.severity,
            sqlstate=self.sqlstate,
            message=self.message,
            detail=self.detail,
            hint=self.hint,
            position=self.position,
        )

    def to_notice(self) -> NoticeResponse:
        """The same content as a NoticeResponse (for warnings that do not abort anything)."""
        return NoticeResponse(
            severity=self.severity,
            sqlstate=self.sqlstate,
            message=self.message,
            detail=self.detail,
            hint=self.hint,
            position=self.position,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.sqlstate!r}, {self.message!r})"


class ProtocolViolation(PgError):
    """The client broke the wire protocol (08P01, FATAL): report it, then close only this connection."""

    def __init__(self, message: str, detail: str | None = None, hint: str | None = None) -> None:
        super().__init__(PROTOCOL_VIOLATION, message, FATAL, detail, hint)


def error_from_message(msg: ErrorResponse | NoticeResponse) -> PgError:
    """A PgError carrying what a received ErrorResponse says (client side: tests and drivers)."""
    return PgError(msg.sqlstate, msg.message, msg.severity, msg.detail, msg.hint, msg.position)
