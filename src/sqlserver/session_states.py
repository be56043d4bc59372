"""The state machine of one PostgreSQL session, as tables.

Rule 1: everything that decides a session's phase or transaction status lives in this file. The
session (session.py) reports events; this file says where they lead, or refuses them. No I/O, no
locks, no SQLite here.

A session has two orthogonal pieces of state:

* the phase of the connection:  STARTUP -> AUTHENTICATING -> READY <-> COPY_IN, and CLOSED;
* the transaction status that ReadyForQuery reports: I (idle), T (in a transaction block),
  E (in a failed transaction block: every statement but ROLLBACK/COMMIT/ROLLBACK TO is refused
  with 25P02 until the block ends).

Rules (PostgreSQL's, from postgres.c and xact.c):
1. A fatal error or Terminate closes the session from any phase; nothing leaves CLOSED.
2. Only statements run in READY (or COPY_IN for copy messages); a statement error moves T to E and
   leaves I as I (the implicit transaction of the failed statement is rolled back).
3. BEGIN in T is a warning, not an error; COMMIT in I is a warning; COMMIT in E rolls back (its tag
   is ROLLBACK); ROLLBACK anywhere ends the block; ROLLBACK TO a savepoint returns E to T.
4. The extended protocol's "discard until Sync" after an error is not a state of its own here: it
   is a flag of the session, cleared by Sync (it changes no phase and no status).
"""

from __future__ import annotations

STARTUP = "startup"
AUTHENTICATING = "authenticating"
READY = "ready"
COPY_IN = "copy_in"
CLOSED = "closed"

IDLE, IN_TRANSACTION, FAILED = "I", "T", "E"

# (phase, event) -> next phase
PHASES: dict[tuple[str, str], str] = {
    (STARTUP, "ssl_request"): STARTUP,
    (STARTUP, "startup_trust"): READY,
    (STARTUP, "startup_password"): AUTHENTICATING,
    (STARTUP, "cancel_request"): CLOSED,
    (AUTHENTICATING, "auth_continue"): AUTHENTICATING,
    (AUTHENTICATING, "auth_ok"): READY,
    (READY, "copy_in"): COPY_IN,
    (COPY_IN, "copy_done"): READY,
    (COPY_IN, "copy_fail"): READY,
}
CLOSING_EVENTS = ("terminate", "fatal")

# (status, event) -> next status
STATUSES: dict[tuple[str, str], str] = {
    (IDLE, "begin"): IN_TRANSACTION,
    (IN_TRANSACTION, "begin"): IN_TRANSACTION,
    (IDLE, "commit"): IDLE,
    (IN_TRANSACTION, "commit"): IDLE,
    (FAILED, "commit"): IDLE,
    (IDLE, "rollback"): IDLE,
    (IN_TRANSACTION, "rollback"): IDLE,
    (FAILED, "rollback"): IDLE,
    (IDLE, "error"): IDLE,
    (IN_TRANSACTION, "error"): FAILED,
    (FAILED, "error"): FAILED,
    (IN_TRANSACTION, "rollback_to"): IN_TRANSACTION,
    (FAILED, "rollback_to"): IN_TRANSACTION,
}
# Statement kinds (statement.py) accepted in FAILED; every other one gets 25P02.
ALLOWED_WHEN_FAILED = frozenset({"commit", "rollback", "rollback_to", "empty"})


class StateError(Exception):
    """An event the table does not allow in the current state (a bug in the caller)."""


class SessionState:
    """Phase and transaction status of one session, moved only through the tables above."""

    __slots__ = ("phase", "status")

    def __init__(self) -> None:
        self.phase = STARTUP
        self.status = IDLE

    def on(self, event: str) -> str:
        """Move the phase; returns the new phase."""
        if event in CLOSING_EVENTS:
            self.phase = CLOSED
            return CLOSED
        nxt = PHASES.get((self.phase, event))
        if nxt is None:
            raise StateError(f"event {event!r} is not allowed in phase {self.phase!r}")
        self.phase = nxt
        return nxt

    def tx(self, event: str) -> str:
        """Move the transaction status; returns the new status."""
        nxt = STATUSES.get((self.status, event))
        if nxt is None:
            raise StateError(
                f"transaction event {event!r} is not allowed in status {self.status!r}"
            )
        self.status = nxt
        return nxt

    def allows(self, kind: str) -> bool:
        """May a statement of this kind run now (rule 3: a failed block accepts only its end)?"""
        return self.status != FAILED or kind in ALLOWED_WHEN_FAILED
