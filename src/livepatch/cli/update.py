"""`livepatch update FILE --validate`, `promote`, `discard`, `update-status`, `retire`:
validated updates (livepatch.mve; docs/validated-updates.md). Exit status of `update`: 0 promoted,
1 discarded or refused (the report says which request diverged and how)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from livepatch.agent import client as agent_client
from livepatch.agent import protocol
from livepatch.patch import lpatch

_UPDATE_WAIT_S = 24 * 3600.0  # the agent answers when the follower is promoted or discarded
_QUERY_S = 30.0

socket_option = click.option(
    "--socket",
    "socket_path",
    required=True,
    envvar="LIVEPATCH_SOCKET",
    type=str,
    help="The agent's control socket (or $LIVEPATCH_SOCKET).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print the reply as JSON.")


def _ask(socket_path: str, req: dict[str, Any], timeout: float) -> dict[str, Any]:
    try:
        return agent_client.request(socket_path, req, timeout=timeout)
    except agent_client.AgentUnreachable as exc:
        raise click.ClickException(str(exc)) from None
    except protocol.ProtocolError as exc:
        raise click.ClickException(f"bad reply from the agent: {exc}") from None


TRANSFORM_FORM = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def parse_window(text: str) -> tuple[int | None, float | None]:
    """`1000` (requests) or `5s` (seconds) -> (requests, seconds)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|seconds?|r|req|requests?)?\s*", text)
    if not m:
        raise click.BadParameter(
            f"{text!r}: give a number of requests (e.g. 1000) or seconds (e.g. 5s)",
            param_hint="--window",
        )
    number, unit = m.group(1), (m.group(2) or "r")
    if unit.startswith("s"):
        if not 0 < float(number) <= 3600:
            raise click.BadParameter("seconds must be in (0, 3600]", param_hint="--window")
        return None, float(number)
    if "." in number or int(number) <= 0:
        raise click.BadParameter(
            "a number of requests must be a positive integer", param_hint="--window"
        )
    return int(number), None


_UPDATE_HELP = """Update the server behind --socket to the patch FILE, validated by multi-version execution.

With --validate the server forks; the copy (the follower) installs the patch and replays every request
the server executes, comparing its replies with the server's. Expected differences are declared in
--rules (a Python file of `def rule_*(request, old_reply, new_reply) -> bool`). The follower is
discarded at the first unexplained difference, a crash, a hang or a lag beyond --max-lag; it is
promoted (takes over every connection) when it agreed for --window (N requests or Ns seconds) and
every changed function ran at least once (or --exercise-wait passed). Exit status: 0 promoted, 1 discarded.

\b
Examples:
  livepatch update fix.lpatch --socket /run/kv/livepatch.sock --validate
  livepatch update fix.lpatch --socket S --validate --rules rules.py --window 10s
  livepatch update v2.lpatch --socket S --validate --transform myapp.migrations:pack_ints
  livepatch update fix.lpatch --socket S --validate --promote manual   # then livepatch promote
"""


@click.command("update", help=_UPDATE_HELP)
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@socket_option
@click.option("--validate", is_flag=True, help="Validate by multi-version execution (required).")
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Python file of rules: rule_*(request, old_reply, new_reply) -> bool accepts a difference, "
    "rewrite_*(request) -> request rewrites a request for the new version.",
)
@click.option(
    "--transform",
    "transform",
    default=None,
    metavar="MODULE:FUNC",
    help="A data transformer the follower runs on its copy of the data after the patch's own "
    "transform hook: FUNC(ctx) of MODULE, importable by the server (e.g. myapp.migrations:pack_ints).",
)
@click.option(
    "--window",
    default="5s",
    show_default=True,
    help="Agreement needed before promotion: N requests (1000) or seconds (5s).",
)
@click.option(
    "--promote",
    type=click.Choice(["auto", "manual"]),
    default="auto",
    show_default=True,
    help="manual: wait for `livepatch promote` (or `livepatch discard`).",
)
@click.option(
    "--max-lag",
    type=click.IntRange(min=1),
    default=100_000,
    show_default=True,
    help="Requests the follower may fall behind before it is discarded.",
)
@click.option(
    "--exercise-wait",
    "exercise_wait_s",
    type=click.FloatRange(min=0, max=3600),
    default=60.0,
    show_default=True,
    help="Longest wait (from the follower's start) for traffic to run every changed function once "
    "(0: do not wait); then the update is promoted and the report lists what never ran.",
)
@click.option(
    "--follow-back",
    is_flag=True,
    help="After promotion the old version stands by: if the new one crashes, the old one takes over "
    "the listening socket and restarts from the data directory; `livepatch retire` ends it.",
)
@json_option
def update_command(
    file: Path,
    socket_path: str,
    validate: bool,
    rules_path: Path | None,
    transform: str | None,
    window: str,
    promote: str,
    max_lag: int,
    exercise_wait_s: float,
    follow_back: bool,
    as_json: bool,
) -> None:
    if not validate:
        raise click.UsageError(
            "only validated updates exist so far: add --validate (or use `livepatch apply FILE`)"
        )
    window_requests, window_s = parse_window(window)
    if transform is not None and not TRANSFORM_FORM.fullmatch(transform):
        raise click.BadParameter(
            f"{transform!r}: give MODULE:FUNC, a module the server can import and a function in it "
            "taking the hook context (e.g. myapp.migrations:pack_ints)",
            param_hint="--transform",
        )
    try:
        pf = lpatch.read(file)
    except lpatch.PatchFileError as exc:
        raise click.ClickException(str(exc)) from None
    rules = None
    if rules_path is not None:
        try:
            rules = rules_path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise click.ClickException(f"cannot read the rules file {rules_path}: {exc}") from None
    req = {
        "op": "update",
        "patch": pf.to_document(),
        "rules": rules,
        "rules_name": str(rules_path) if rules_path else None,
        "transform": transform,
        "window_requests": window_requests,
        "window_s": window_s,
        "promote": promote,
        "max_lag": max_lag,
        "exercise_wait_s": exercise_wait_s,
        "follow_back": follow_back,
    }
    if promote == "manual":
        click.echo(
            "waiting for `livepatch promote` or `livepatch discard` (see `livepatch update-status`)",
            err=True,
        )
    reply = _ask(socket_path, req, _UPDATE_WAIT_S)
    report = reply.get("update")
    if as_json:
        click.echo(json.dumps(reply, indent=2))
    elif isinstance(report, dict):
        click.echo(_render(report))
    if not reply.get("ok"):
        if not as_json:
            click.echo(f"error: {reply.get('error') or 'failed'}", err=True)
        sys.exit(1)


def _render(r: dict[str, Any]) -> str:
    lines = [
        f"{r.get('outcome', '?')}: {r.get('reason', '')}",
        f"  patch {r.get('patch_id')}: {r.get('compared', 0)} requests compared, "
        f"{r.get('accepted_differences', 0)} expected differences accepted, "
        f"{r.get('elapsed_s', 0)} s",
        f"  rules: {', '.join(r.get('rules') or [])}",
    ]
    if r.get("fork_ms") is not None:
        line = f"  fork {r['fork_ms']:.1f} ms (the leader's pause)"
        if r.get("apply_ms") is not None:
            line += f"; the follower installed the new version in {r['apply_ms']:.0f} ms"
            if r.get("transform_ms"):
                line += f" (transform {r['transform_ms']:.0f} ms)"
        lines.append(line)
    if r.get("follow_back"):
        lines.append("  the old version stands by until `livepatch retire` (follow-back)")
    if r.get("not_exercised"):
        lines.append(f"  changed code never exercised: {', '.join(r['not_exercised'])}")
    d = r.get("divergence")
    if d:
        lines += [
            f"  diverging request #{d['seq']} (connection {d['connection']}): {d['request']}",
            f"    old version: {d['old_reply']}",
            f"    new version: {d['new_reply']}",
        ]
    return "\n".join(lines)


def _simple(op: str, socket_path: str, as_json: bool) -> None:
    reply = _ask(socket_path, {"op": op}, _QUERY_S)
    if as_json:
        click.echo(json.dumps(reply, indent=2))
    if not reply.get("ok"):
        if not as_json:
            click.echo(f"error: {reply.get('error')}", err=True)
        sys.exit(1)
    return None


@click.command("promote")
@socket_option
@json_option
def promote_command(socket_path: str, as_json: bool) -> None:
    """Promote the validated follower of a `livepatch update --promote manual`."""
    _simple("promote", socket_path, as_json)
    if not as_json:
        click.echo("promotion requested: the waiting `livepatch update` reports the outcome")


@click.command("discard")
@socket_option
@json_option
def discard_command(socket_path: str, as_json: bool) -> None:
    """Discard the follower of the running validated update (the old version serves on)."""
    _simple("discard", socket_path, as_json)
    if not as_json:
        click.echo("discard requested: the waiting `livepatch update` reports the outcome")


@click.command("update-status")
@socket_option
@json_option
def update_status_command(socket_path: str, as_json: bool) -> None:
    """Show the running validated update's follower: state, lag, requests compared, divergences."""
    reply = _ask(socket_path, {"op": "update-status"}, _QUERY_S)
    if as_json:
        click.echo(json.dumps(reply, indent=2))
        return
    s = reply.get("update")
    if s is None:
        click.echo("no validated update is running")
    else:
        click.echo(
            f"{s['state']}: patch {s['patch_id']}, follower pid {s['follower_pid']}, "
            f"{s['compared']} compared, lag {s['lag']}, {s['accepted_differences']} expected "
            f"differences, {s['divergences']} divergences"
        )
        if s["not_exercised_yet"]:
            click.echo(f"  not exercised yet: {', '.join(s['not_exercised_yet'])}")
    if reply.get("last"):
        click.echo("last: " + _render(reply["last"]))
    fb = reply.get("follow_back")
    if fb:
        click.echo(
            f"follow-back: {fb['state']} (old version pid {fb['old_version_pid']}, this server pid "
            f"{fb['server_pid']})"
        )


@click.command("retire")
@socket_option
@json_option
def retire_command(socket_path: str, as_json: bool) -> None:
    """End the follow-back of a server promoted with `update --follow-back`: the old version stops
    standing by (a crash of the new version is then the end of the server)."""
    reply = _ask(socket_path, {"op": "retire"}, _QUERY_S)
    if as_json:
        click.echo(json.dumps(reply, indent=2))
    if not reply.get("ok"):
        if not as_json:
            click.echo(f"error: {reply.get('error')}", err=True)
        sys.exit(1)
    if not as_json:
        click.echo("retired: the old version no longer stands by")


COMMANDS = (
    update_command,
    promote_command,
    discard_command,
    update_status_command,
    retire_command,
)


def register(group: click.Group) -> None:
    for cmd in COMMANDS:
        group.add_command(cmd)
