"""`livepatch serve kv` / `python -m kvserver`: parse options, load data, listen, run the loop.

Prints exactly one readiness line, "kvserver ready on HOST:PORT", on stdout once the socket listens and
the data set is loaded (tests and benchmarks wait for it instead of sleeping).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import sys
from typing import Any

import click

from kvserver import replication_cli
from kvserver.config import DEFAULT_SAVE, Config, parse_save
from livepatch.state_options import on_stale_option, resolve_state_dir, state_dir_option

log = logging.getLogger("kvserver")


def _size(text: str) -> int:
    from kvserver.config import _memory

    try:
        return _memory(text)
    except ValueError:
        raise click.BadParameter(f"not a size: {text!r} (e.g. 512mb, 1gb, 65536)") from None


@click.command("kv")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=6379, show_default=True, type=int, help="TCP port (0: any free port)."
)
@click.option(
    "--dir",
    "data_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Data directory; enables persistence (snapshot and append-only file).",
)
@click.option(
    "--appendonly",
    type=click.Choice(["yes", "no"]),
    default=None,
    help="Append-only file [default: yes when --dir is given].",
)
@click.option(
    "--appendfsync",
    type=click.Choice(["always", "everysec", "no"]),
    default="everysec",
    show_default=True,
    help="When the append-only file is fsynced.",
)
@click.option(
    "--save",
    "save_policy",
    default=None,
    metavar='"SECS CHANGES ..."',
    help=f'Snapshot policy like Redis\'s (default with --dir: "{DEFAULT_SAVE}"; "" disables).',
)
@click.option("--requirepass", default=None, help="Password clients must send with AUTH or HELLO.")
@click.option("--databases", default=16, show_default=True, type=click.IntRange(1, 1024))
@click.option("--maxclients", default=10000, show_default=True, type=click.IntRange(1))
@click.option(
    "--proto-max-bulk-len", default="512mb", show_default=True, help="Largest bulk string."
)
@click.option(
    "--max-multibulk-len",
    default=1024 * 1024,
    show_default=True,
    type=click.IntRange(1),
    help="Most arguments in one request.",
)
@click.option(
    "--max-inline-len",
    default="64kb",
    show_default=True,
    help="Longest inline request or length line.",
)
@click.option(
    "--client-query-buffer-limit",
    default="1gb",
    show_default=True,
    help="Most bytes buffered for one incomplete request.",
)
@click.option(
    "--client-output-buffer-limit",
    default="512mb",
    show_default=True,
    help="Most reply bytes a slow client may leave unread before it is closed (0: none).",
)
@click.option(
    "--livepatch-socket",
    type=click.Path(dir_okay=False),
    default=None,
    help="Start the livepatch agent on this Unix socket.",
)
@click.option(
    "--trusted-key",
    "trusted_keys",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Public key whose signed patches the agent accepts (repeatable).",
)
@click.option("--allow-unsigned", is_flag=True, help="Let the agent accept unsigned patches.")
@state_dir_option
@on_stale_option
@click.option(
    "--no-livepatch",
    is_flag=True,
    help="No agent, no managed thread, no quiescence point (overhead baseline).",
)
@click.option(
    "--huge-pages",
    is_flag=True,
    help="Transparent huge pages for the heap (PYTHONMALLOC=malloc, glibc.malloc.hugetlb=1): keeps "
    "the fork of a validated update flat with the data size (2.7 ms instead of ~1 s at 10M keys).",
)
@click.option(
    "--loglevel",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
)
@replication_cli.replication_options
def serve_command(
    host: str,
    port: int,
    data_dir: str | None,
    appendonly: str | None,
    appendfsync: str,
    save_policy: str | None,
    requirepass: str | None,
    databases: int,
    maxclients: int,
    proto_max_bulk_len: str,
    max_multibulk_len: int,
    max_inline_len: str,
    client_query_buffer_limit: str,
    client_output_buffer_limit: str,
    livepatch_socket: str | None,
    trusted_keys: tuple[str, ...],
    allow_unsigned: bool,
    state_dir: str | None,
    on_stale: str,
    no_livepatch: bool,
    huge_pages: bool,
    loglevel: str,
    **replication: Any,
) -> None:
    """Run kvserver, a Redis-protocol key-value server prepared for live patching."""
    if huge_pages:
        from kvserver import huge_pages as hp

        hp.reexec_if_needed()  # returns only in the process started with the settings
        for problem in hp.problems():
            click.echo(
                f"kvserver: warning: --huge-pages: {problem}; 4 KiB pages are used", err=True
            )
    logging.basicConfig(
        level=getattr(logging, loglevel.upper()),
        format="%(asctime)s kvserver[%(process)d] %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if no_livepatch and livepatch_socket:
        raise click.UsageError("--no-livepatch and --livepatch-socket exclude each other")
    if livepatch_socket and not trusted_keys and not allow_unsigned:
        click.echo(
            "kvserver: warning: --livepatch-socket without --trusted-key or --allow-unsigned: the "
            "agent will refuse every patch (add --trusted-key livepatch.pub, from `livepatch keygen`)",
            err=True,
        )
    try:
        save = parse_save(
            save_policy if save_policy is not None else (DEFAULT_SAVE if data_dir else "")
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--save") from None
    config = Config(
        host=host,
        port=port,
        dir=data_dir,
        appendonly=(appendonly == "yes") if appendonly is not None else data_dir is not None,
        appendfsync=appendfsync,
        save=save,
        requirepass=requirepass,
        databases=databases,
        maxclients=maxclients,
        proto_max_bulk_len=_size(proto_max_bulk_len),
        max_multibulk_len=max_multibulk_len,
        max_inline_len=_size(max_inline_len),
        client_query_buffer_limit=_size(client_query_buffer_limit),
        client_output_buffer_limit=_size(client_output_buffer_limit),
        livepatch=not no_livepatch,
    )
    if config.appendonly and not data_dir:
        raise click.UsageError("--appendonly yes needs --dir")
    repl = replication_cli.parse(replication, data_dir)
    agent_options = {"state_dir": resolve_state_dir(state_dir), "on_stale": on_stale}
    sys.exit(
        run_server(
            config,
            livepatch_socket,
            list(trusted_keys),
            allow_unsigned,
            repl,
            agent_options=agent_options,
        )
    )


def run_server(
    config: Config,
    livepatch_socket: str | None = None,
    trusted_keys: list[str] | None = None,
    allow_unsigned: bool = False,
    replication: replication_cli.ReplicationConfig | None = None,
    agent_options: dict[str, Any] | None = None,
) -> int:
    """Load, listen, announce readiness, serve until SHUTDOWN/SIGTERM. Returns the exit status.
    agent_options: more keyword arguments of livepatch.Agent (state_dir, on_stale)."""
    from kvserver.loop import EventLoop
    from kvserver.server import ServerState

    server = ServerState(config)
    if config.dir is not None:
        from kvserver.persistence import Persistence

        server.persistence = Persistence(server)
        try:
            server.persistence.load()
        except Exception as exc:
            log.critical("cannot load the data in %s: %s", config.dir, exc)
            click.echo(f"kvserver: cannot load the data in {config.dir}: {exc}", err=True)
            return 1
    role = replication_cli.ReplicationRole(replication) if replication is not None else None
    while True:  # more than once only after a switchover (primary -> standby -> ...)
        took_over = False
        if role is not None and role.rc.standby:
            standby_listener = role.wait_as_standby(server)  # until it takes over (or is stopped)
            if standby_listener is None:
                role.stop()
                return 0
            listener = standby_listener
            took_over = True
            config.host = listener.getsockname()[0]
        elif os.environ.get("LIVEPATCH_LISTEN_FD"):
            # livepatch.mve's follow-back: the old version restarts on the listening socket that the
            # crashed new version served (connections queued meanwhile are accepted).
            listener = socket.socket(fileno=int(os.environ.pop("LIVEPATCH_LISTEN_FD")))
            listener.set_inheritable(False)
            config.host = listener.getsockname()[0]
        else:
            listener = socket.socket(
                socket.AF_INET6 if ":" in config.host else socket.AF_INET, socket.SOCK_STREAM
            )
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                listener.bind((config.host, config.port))
            except OSError as exc:
                click.echo(
                    f"kvserver: cannot listen on {config.host}:{config.port}: {exc}", err=True
                )
                return 1
            listener.listen(1024)
        config.port = listener.getsockname()[1]
        loop = EventLoop(server, listener)
        if role is not None:
            role.start_primary(loop)
        agent = (
            _start_agent(livepatch_socket, trusted_keys or [], allow_unsigned, agent_options or {})
            if config.livepatch
            else None
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_, stop=loop.request_stop: stop())
        # Everything that exists now (modules, the loaded data set) lives as long as the server:
        # keep the cyclic collector from rescanning it on every full collection. Not collected
        # first after a takeover: clients wait on the bound address meanwhile (0-260 ms at load 50,
        # docs/performance.md session 7); the garbage frozen with the rest is small.
        if not took_over:
            gc.collect()
        gc.freeze()
        print(f"kvserver ready on {config.host}:{config.port}", flush=True)
        log.info("serving %s:%d", config.host, config.port)  # timestamped: switchover traces
        try:
            loop.run(livepatch_enabled=config.livepatch)
        finally:
            if agent is not None:
                agent.stop()
            if role is not None:
                role.stop()
        if role is None or not role.switching:
            return 0
        role.become_standby(server)  # `livepatch switchover`: follow the new primary from now on


def _start_agent(
    socket_path: str | None, trusted_keys: list[str], allow_unsigned: bool, options: dict[str, Any]
) -> Any:
    if socket_path is None:
        return None
    try:
        from livepatch import Agent
    except ImportError as exc:
        raise click.ClickException(f"the livepatch agent is unavailable: {exc}") from None
    try:
        agent = Agent(
            socket_path=socket_path,
            trusted_keys=trusted_keys,
            allow_unsigned=allow_unsigned,
            **options,
        )
        agent.start()
    except (
        Exception
    ) as exc:  # a bad key or an unusable socket path: say so, do not serve half-configured
        raise click.ClickException(
            f"cannot start the livepatch agent on {socket_path}: {exc}"
        ) from None
    return agent


def main() -> None:
    serve_command(prog_name="python -m kvserver")
