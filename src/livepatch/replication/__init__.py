"""Hot standby: checkpoint replication with commit protection and failover (RemusDB; DESIGN.md).

Knows no server: a server implements `ReplicatedServer` (host.py documents the contract) and runs a
`Primary` (ships epochs, holds replies through its `Protection`) or a `Standby` (applies them, takes
over). kvserver's side is kvserver.replication_support; docs/standby.md is the user's guide.

Names are imported on first use (PEP 562), so `livepatch replication status` (which needs only the
status client) does not pay for the rest at start-up.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from livepatch.replication.host import ReplicatedServer, SnapshotRestart
    from livepatch.replication.primary import LossPolicy, Primary, PrimaryOptions
    from livepatch.replication.protection import MODES, HeldReplies, Mode, Protection
    from livepatch.replication.standby import Standby, StandbyOptions, listen
    from livepatch.replication.status import StatusServer, StatusUnavailable, query

_HOME = {
    "ReplicatedServer": "host",
    "SnapshotRestart": "host",
    "LossPolicy": "primary",
    "Primary": "primary",
    "PrimaryOptions": "primary",
    "MODES": "protection",
    "HeldReplies": "protection",
    "Mode": "protection",
    "Protection": "protection",
    "Standby": "standby",
    "StandbyOptions": "standby",
    "listen": "standby",
    "StatusServer": "status",
    "StatusUnavailable": "status",
    "query": "status",
}

__all__ = [
    "MODES",
    "HeldReplies",
    "LossPolicy",
    "Mode",
    "Primary",
    "PrimaryOptions",
    "Protection",
    "ReplicatedServer",
    "SnapshotRestart",
    "Standby",
    "StandbyOptions",
    "StatusServer",
    "StatusUnavailable",
    "listen",
    "query",
]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"livepatch.replication.{module}"), name)
    globals()[name] = value
    return value
