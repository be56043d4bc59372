"""The state-directory options, shared by `livepatch run`, `livepatch serve kv` and `livepatch serve sql`
(one definition, one help text; docs/cli.md, "State directory"). Imports only click: the servers' own
command lines import it without loading the `livepatch` command or the runtime."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

NONE = "none"  # --state-dir none: keep nothing across restarts


def state_dir_option(fn: F) -> F:
    return click.option(
        "--state-dir",
        "state_dir",
        type=str,
        default=None,
        help="Where the agent keeps the applied patches and the history across restarts "
        "(default: SOCKET.state next to the control socket; 'none': keep nothing).",
    )(fn)


def on_stale_option(fn: F) -> F:
    return click.option(
        "--on-stale-patches",
        "on_stale",
        type=click.Choice(["refuse", "warn"]),
        default="refuse",
        show_default=True,
        help="At start, when a kept patch fits neither the running code nor is included in it: "
        "refuse to start, or start without it and log an error.",
    )(fn)


def resolve_state_dir(value: str | None) -> Any:
    """The Agent's state_dir argument for an option value."""
    from livepatch.agent.agent import NEXT_TO_SOCKET

    if value is None:
        return NEXT_TO_SOCKET
    return None if value == NONE else value
