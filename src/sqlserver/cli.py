"""`livepatch serve sql` / `python -m sqlserver.cli`: parse options, listen, serve, shut down.

Prints exactly one readiness line, "sqlserver ready on HOST:PORT", on stdout once the socket listens (the
same shape as kvserver's, so tests and lpbench.servers.ManagedProcess wait for it instead of sleeping;
with --port 0 it tells the port the kernel picked). SIGTERM/SIGINT: stop accepting, close the sessions,
exit 0.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import click

from livepatch.state_options import on_stale_option, resolve_state_dir, state_dir_option

log = logging.getLogger("sqlserver")


@click.command("sql")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=5432, show_default=True, type=click.IntRange(0, 65535),
    help="TCP port (0: any free port; the ready line says which).",
)  # fmt: skip
@click.option(
    "--dir", "data_dir", type=click.Path(file_okay=False), default=None,
    help="Data directory (the SQLite database); default: a temporary one, removed at exit.",
)  # fmt: skip
@click.option(
    "--policy", type=click.Choice(["thread-per-connection", "pool"]),
    default="thread-per-connection", show_default=True, help="Connection policy.",
)  # fmt: skip
@click.option(
    "--pool-groups", default=3, show_default=True, type=click.IntRange(1, 1024),
    help="Thread groups of the pool policy (connections are assigned round-robin).",
)  # fmt: skip
@click.option(
    "--pool-quiescence", type=click.Choice(["priority", "naive"]), default="priority", hidden=True,
    help="Experiment only (lpbench's deadlock figure): naive = every pool thread at one priority.",
)  # fmt: skip
@click.option(
    "--thread-cache", default=8, show_default=True, type=click.IntRange(0, 100_000),
    help="Idle connection threads kept for new connections (thread-per-connection).",
)  # fmt: skip
@click.option(
    "--max-connections", default=100, show_default=True, type=click.IntRange(1, 100_000),
    help="Clients served at once; one more gets PostgreSQL's 53300 'too many clients'.",
)  # fmt: skip
@click.option(
    "--auth", type=click.Choice(["trust", "password", "md5", "scram-sha-256"]),
    default="trust", show_default=True, help="Client authentication.",
)  # fmt: skip
@click.option(
    "--password-file", type=click.Path(exists=True, dir_okay=False), default=None,
    help="user:password lines (needed by every --auth except trust).",
)  # fmt: skip
@click.option(
    "--synchronous", type=click.Choice(["full", "normal", "off"]), default="full",
    show_default=True, help="full: a COMMIT is acknowledged only once durable.",
)  # fmt: skip
@click.option(
    "--livepatch-socket", type=click.Path(dir_okay=False), default=None,
    help="Start the livepatch agent on this Unix socket.",
)  # fmt: skip
@click.option(
    "--trusted-key", "trusted_keys", multiple=True, type=click.Path(exists=True, dir_okay=False),
    help="Public key whose signed patches the agent accepts (repeatable).",
)  # fmt: skip
@click.option("--allow-unsigned", is_flag=True, help="Let the agent accept unsigned patches.")
@state_dir_option
@on_stale_option
@click.option(
    "--no-livepatch", is_flag=True,
    help="No agent, no managed thread, no quiescence point (overhead baseline).",
)  # fmt: skip
@click.option(
    "--loglevel", type=click.Choice(["debug", "info", "warning", "error"]), default="warning",
    show_default=True,
)  # fmt: skip
def serve_command(
    host: str,
    port: int,
    data_dir: str | None,
    policy: str,
    pool_groups: int,
    pool_quiescence: str,
    thread_cache: int,
    max_connections: int,
    auth: str,
    password_file: str | None,
    synchronous: str,
    livepatch_socket: str | None,
    trusted_keys: tuple[str, ...],
    allow_unsigned: bool,
    state_dir: str | None,
    on_stale: str,
    no_livepatch: bool,
    loglevel: str,
) -> None:
    """Run sqlserver, a PostgreSQL-protocol server over SQLite prepared for live patching."""
    logging.basicConfig(
        level=getattr(logging, loglevel.upper()),
        format="%(asctime)s sqlserver[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if no_livepatch and livepatch_socket:
        raise click.UsageError("--no-livepatch and --livepatch-socket exclude each other")
    if (trusted_keys or allow_unsigned) and not livepatch_socket:
        raise click.UsageError("--trusted-key and --allow-unsigned need --livepatch-socket")
    from sqlserver.config import SqlConfig

    try:
        config = SqlConfig(
            host=host,
            port=port,
            data_dir=data_dir,
            policy=policy,
            pool_groups=pool_groups,
            pool_quiescence=pool_quiescence,
            thread_cache=thread_cache,
            max_connections=max_connections,
            auth=auth,
            password_file=password_file,
            synchronous=synchronous,
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(
        run_server(
            config,
            livepatch_socket,
            list(trusted_keys),
            allow_unsigned,
            not no_livepatch,
            {"state_dir": resolve_state_dir(state_dir), "on_stale": on_stale},
        )
    )


def run_server(
    config: Any,
    livepatch_socket: str | None = None,
    trusted_keys: list[str] | None = None,
    allow_unsigned: bool = False,
    livepatch_enabled: bool = True,
    agent_options: dict[str, Any] | None = None,
) -> int:
    """Open the state, listen, announce readiness, serve until SIGTERM/SIGINT. Returns the exit status.
    agent_options: more keyword arguments of livepatch.Agent (state_dir, on_stale)."""
    from sqlserver.server.runner import NetOptions, Server, listen
    from sqlserver.state import ServerState

    options = NetOptions(
        host=config.host,
        port=config.port,
        policy=config.policy,
        pool_groups=config.pool_groups,
        pool_quiescence=config.pool_quiescence,
        thread_cache=config.thread_cache,
        max_connections=config.max_connections,
        livepatch=livepatch_enabled,
    )
    try:
        listener = listen(config.host, config.port)
    except OSError as exc:
        click.echo(
            f"sqlserver: cannot listen on {config.host}:{config.port}: {exc} "
            "(is another server using the port? try --port 0)",
            err=True,
        )
        return 1
    try:
        state = ServerState(config)
    except Exception as exc:  # an unusable data directory or password file: say which, do not serve
        listener.close()
        click.echo(f"sqlserver: cannot open the server state: {exc}", err=True)
        return 1
    # After the state: it creates the data directory, where the control socket usually lives
    # (`--dir data --livepatch-socket data/lp.sock` on a fresh directory).
    try:
        agent = _start_agent(
            livepatch_socket, trusted_keys or [], allow_unsigned, agent_options or {}
        )
    except BaseException:
        listener.close()
        state.shutdown()
        raise
    server = Server(state, listener, options)
    server.install_signal_handlers()
    host, port = server.address

    def ready() -> None:
        print(f"sqlserver ready on {host}:{port}", flush=True)

    try:
        return server.serve(on_ready=ready)
    finally:
        if agent is not None:
            agent.stop()


def _start_agent(
    socket_path: str | None, trusted_keys: list[str], allow_unsigned: bool, options: dict[str, Any]
) -> Any:
    if socket_path is None:
        return None
    try:
        from livepatch import Agent
    except ImportError as exc:
        raise click.ClickException(f"the livepatch agent is unavailable: {exc}") from None
    if allow_unsigned:
        log.warning(
            "the livepatch agent on %s accepts UNSIGNED patches: anyone who can write to the "
            "socket can change this server's code (use --trusted-key in production)",
            socket_path,
        )
    try:
        agent = Agent(
            socket_path=socket_path,
            trusted_keys=trusted_keys,
            allow_unsigned=allow_unsigned,
            **options,
        )
        agent.start()
    except Exception as exc:  # a bad key or an unusable socket path: do not serve half-configured
        raise click.ClickException(
            f"cannot start the livepatch agent on {socket_path}: {exc}"
        ) from None
    return agent


def main() -> None:
    serve_command(prog_name="python -m sqlserver.cli")


if __name__ == "__main__":
    main()
