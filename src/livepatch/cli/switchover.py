"""`livepatch switchover`: a planned, loss-free hand-over from a primary to its standby (docs/standby.md).

The primary (asked on its --replication-socket) stops executing requests, ships its last epoch, waits
until the standby holds it, answers the replies that waited for it, closes its clients and its address,
and becomes the standby of the server that takes the address over. This command asks, then waits
until the old primary follows the new one (its status says standby, streaming), and says so.
"""

from __future__ import annotations

import json
import time

import click

from livepatch.replication.status import StatusUnavailable, query

POLL_S = 0.05


@click.command("switchover")
@click.option(
    "--socket",
    "socket_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="The primary's --replication-socket, e.g. /tmp/kv-a.repl.sock.",
)
@click.option(
    "--timeout-s",
    type=click.FloatRange(1, 3600),
    default=30.0,
    show_default=True,
    help="How long to wait for the old primary to follow the new one.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
def switchover_command(socket_path: str, timeout_s: float, as_json: bool) -> None:
    """Make the caught-up standby the primary, and the primary its standby, losing nothing.

    Clients see their connection closed once (redis-py with a retry policy reconnects to the same
    address, now served by the other server); every reply they received stays true.

    Example: livepatch switchover --socket /tmp/kv-a.repl.sock"""
    started = time.monotonic()
    try:
        before = query(socket_path)
        if before.get("role") != "primary":
            raise click.ClickException(
                f"the server on {socket_path} is a {before.get('role')}, not a primary: give the "
                "primary's --replication-socket"
            )
        answer = query(socket_path, timeout=15.0, request="switchover")
    except StatusUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    if not answer.get("ok"):
        raise click.ClickException(f"switchover refused: {answer.get('error')}")
    deadline = started + timeout_s
    status: dict[str, object] = {}
    while time.monotonic() < deadline:
        try:
            status = query(socket_path, timeout=2.0)
        except StatusUnavailable:
            status = {}
        if status.get("role") == "standby" and status.get("state") == "streaming":
            break
        time.sleep(POLL_S)
    else:
        raise click.ClickException(
            f"the standby at {answer.get('standby')} should serve now, but the old primary does not "
            f"follow it after {timeout_s:.0f} s (its status: {status.get('state', 'unavailable')}); "
            f"see its log, and `livepatch replication status --socket {socket_path}`"
        )
    outcome = {
        "ok": True,
        "new_primary_replication": answer.get("standby"),
        "old_primary_now": "standby",
        "term": status.get("term"),
        "seconds": round(time.monotonic() - started, 3),
    }
    if as_json:
        click.echo(json.dumps(outcome, indent=2))
        return
    click.echo(
        f"switchover done in {outcome['seconds']} s: the standby (replication {answer.get('standby')}) "
        f"serves now (term {status.get('term')}); this server follows it as the standby"
    )
