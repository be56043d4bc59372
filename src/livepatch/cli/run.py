"""`livepatch run`: run an unmodified server under livepatch (integrations/runner.py does the work).

Everything after the target belongs to the server: `livepatch run -m app --socket x` passes `--socket x`
to app. Exit codes: the server's own; 1 with "error: ..." when it cannot start (target not found, no
trusted key, bad key, socket in use, state directory corrupt or in use, stale patches) or builds something live patching cannot cover (a forking server).
"""

from __future__ import annotations

import sys

import click

from livepatch.state_options import on_stale_option, resolve_state_dir, state_dir_option


@click.command(
    "run",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--socket",
    "socket_path",
    envvar="LIVEPATCH_SOCKET",
    type=str,
    default=None,
    help="Where the agent listens (or $LIVEPATCH_SOCKET; default: TMPDIR/livepatch-PID.sock).",
)
@click.option(
    "--trusted-key",
    "trusted_keys",
    multiple=True,
    type=str,
    help="A public key (.pub, from livepatch keygen) whose signed patches the server accepts. Repeatable.",
)
@click.option("--allow-unsigned", is_flag=True, help="Accept unsigned patches (development only).")
@state_dir_option
@on_stale_option
@click.option(
    "-m",
    "as_module",
    is_flag=True,
    help="TARGET is a module, run as `python -m TARGET` would run it.",
)
@click.argument("target")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def run_command(
    socket_path: str | None,
    trusted_keys: tuple[str, ...],
    allow_unsigned: bool,
    state_dir: str | None,
    on_stale: str,
    as_module: bool,
    target: str,
    args: tuple[str, ...],
) -> None:
    """Run a server (a script, or -m MODULE) with the livepatch agent and quiescence built into
    socketserver, http.server, asyncio and concurrent.futures (docs/integrations.md).

    \b
      livepatch run --trusted-key keys/livepatch.pub --socket app.sock -m myapp --port 8000
      livepatch run --allow-unsigned server.py 8000
    """
    from livepatch.errors import LivepatchError
    from livepatch.integrations import runner
    from livepatch.patch.safetext import printable

    def fail(message: str) -> None:
        click.echo(f"error: {printable(message)}", err=True)
        sys.exit(1)

    try:
        runner.run(
            runner.Target(target, as_module, args),
            socket_path=socket_path or runner.default_socket_path(),
            trusted_keys=trusted_keys,
            allow_unsigned=allow_unsigned,
            state_dir=resolve_state_dir(state_dir),
            on_stale=on_stale,
        )
    except LivepatchError as exc:  # a bad key or socket, a forking server, a target not found
        fail(str(exc))
