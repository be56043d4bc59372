"""`livepatch replication status`: what a replicating server reports on its status socket."""

from __future__ import annotations

import json
from typing import Any

import click

from livepatch.replication.status import StatusUnavailable, query

_PRIMARY_ROWS = (
    ("state", "state"),
    ("standby", "standby"),
    ("term", "term"),
    ("epoch", "epoch (being filled)"),
    ("acked_epoch", "acknowledged epoch"),
    ("lag_epochs", "lag (epochs)"),
    ("lag_ms", "lag (ms)"),
    ("protection", "protection"),
    ("protected", "protected now"),
    ("held_replies", "held replies"),
    ("bytes_per_epoch", "bytes per epoch (sent)"),
    ("compression_ratio", "compression ratio"),
    ("full_syncs", "full syncs"),
    ("degradations", "degradations"),
)
_STANDBY_ROWS = (
    ("state", "state"),
    ("listen", "listening on"),
    ("takeover", "takes over"),
    ("term", "term"),
    ("epoch", "epoch applied"),
    ("acked_epoch", "acknowledged epoch"),
    ("since_last_frame_ms", "since last frame (ms)"),
    ("epochs_applied", "epochs applied"),
    ("full_syncs", "full syncs"),
)


@click.group("replication")
def replication_command() -> None:
    """Hot standby: inspect a primary or standby (docs/standby.md)."""


@replication_command.command("status")
@click.option(
    "--socket",
    "socket_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The server's --replication-socket, e.g. /tmp/kv.repl.sock.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the status as one JSON object.")
def status_command(socket_path: str, as_json: bool) -> None:
    """Epoch, lag, bytes per epoch, compression ratio and held replies of one server.

    Example: livepatch replication status --socket /tmp/kv.repl.sock"""
    try:
        status = query(socket_path)
    except StatusUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps({"ok": True, **status}, indent=2))
        return
    rows = _PRIMARY_ROWS if status.get("role") == "primary" else _STANDBY_ROWS
    click.echo(f"role: {status.get('role')}")
    for key, label in rows:
        click.echo(f"  {label}: {_show(status.get(key))}")


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)
