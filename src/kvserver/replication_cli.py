"""`livepatch serve kv`'s hot-standby options and the standby's start-up (docs/standby.md).

    primary:  --replicate-to HOST:PORT [--epoch-ms 50] [--group-commit-ms 0] [--protection commit|full|none]
              [--on-standby-loss degrade|hold] [--standby-timeout-ms 1000]
              [--replication-listen HOST:PORT]   (where it listens once a switchover made it the standby)
    standby:  --standby --replication-listen HOST:PORT [--takeover HOST:PORT] [--failover-after-ms 300]
              [--replicate-to HOST:PORT]   (whom to replicate to once it has taken over)
    either:   --replication-socket PATH    (`livepatch replication status --socket PATH`)
              --etcd URL [--etcd-key KEY] [--etcd-ttl-s 2]   (leader election; livepatch.replication.etcd)

A standby prints "kvserver standby ready on HOST:PORT" once its replication port listens, and the usual
"kvserver ready on HOST:PORT" when it has taken over and serves.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

log = logging.getLogger("kvserver.replication")


def _address(text: str | None, option: str, any_port: bool = False) -> tuple[str, int] | None:
    """HOST:PORT as (host, port); any_port: port 0 (the kernel picks; the readiness line says it)."""
    if text is None:
        return None
    host, sep, port = text.rpartition(":")
    lowest = 0 if any_port else 1
    if not sep or not host or not port.isdigit() or not lowest <= int(port) < 65536:
        raise click.BadParameter(
            f"expected HOST:PORT (e.g. 127.0.0.1:7400), got {text!r}", param_hint=option
        )
    return host.strip("[]"), int(port)


def replication_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--replicate-to",
            metavar="HOST:PORT",
            default=None,
            help="Ship epochs to the standby listening there (a standby: once it took over).",
        ),
        click.option(
            "--epoch-ms",
            type=click.FloatRange(1, 10000),
            default=50.0,
            show_default=True,
            help="Longest time between two epochs (a waiting reply closes an epoch sooner).",
        ),
        click.option(
            "--group-commit-ms",
            type=click.FloatRange(0, 10000),
            default=None,
            help="Shortest time between two epochs closed early because a reply waits "
            "(0: at once; --epoch-ms or more: epochs at the epoch length only). Default: "
            "livepatch.replication.primary.GROUP_COMMIT_MS (docs/standby.md, tuning).",
        ),
        click.option(
            "--protection",
            type=click.Choice(["commit", "full", "none"]),
            default="commit",
            show_default=True,
            help="Which replies wait for the standby: writes and reads of unacknowledged "
            "data / all / none (asynchronous).",
        ),
        click.option(
            "--on-standby-loss",
            type=click.Choice(["degrade", "hold"]),
            default="degrade",
            show_default=True,
            help="When the standby is gone or too slow: release held replies with a loud "
            "warning (degrade) or keep them waiting (hold).",
        ),
        click.option(
            "--standby-timeout-ms",
            type=click.FloatRange(10),
            default=1000.0,
            show_default=True,
            help="How long a reply waits for a silent standby before --on-standby-loss applies.",
        ),
        click.option(
            "--standby",
            is_flag=True,
            help="Run as the standby: receive epochs on --replication-listen, serve nothing "
            "until taking over.",
        ),
        click.option(
            "--replication-listen",
            metavar="HOST:PORT",
            default=None,
            help="Where a standby listens for its primary (a primary: where it listens once "
            "`livepatch switchover` made it the standby).",
        ),
        click.option(
            "--takeover",
            metavar="HOST:PORT",
            default=None,
            help="The primary's service address: bound and served once the primary is gone.",
        ),
        click.option(
            "--failover-after-ms",
            type=click.FloatRange(10),
            default=300.0,
            show_default=True,
            help="Silence after which a standby declares the primary gone.",
        ),
        click.option(
            "--replication-socket",
            type=click.Path(dir_okay=False),
            default=None,
            help="Unix socket answering `livepatch replication status --socket PATH`.",
        ),
        click.option(
            "--replication-secret-file",
            type=click.Path(dir_okay=False),
            default=None,
            help="A file (mode 600, at least 16 bytes) both servers share: the link is refused "
            "to a peer that cannot prove it.",
        ),
        click.option(
            "--etcd",
            "etcd_url",
            metavar="URL",
            default=None,
            help="Elect the primary through an etcd lease (e.g. http://127.0.0.1:2379).",
        ),
        click.option(
            "--etcd-key",
            default="/livepatch/kv/leader",
            show_default=True,
            help="The etcd key the primary holds.",
        ),
        click.option(
            "--etcd-ttl-s",
            type=click.FloatRange(1, 600),
            default=2.0,
            show_default=True,
            help="The lease's TTL: a failover waits for it; a cut-off primary gives up at 0.6 x.",
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@dataclass
class ReplicationConfig:
    replicate_to: tuple[str, int] | None
    epoch_ms: float
    protection: str
    on_standby_loss: str
    standby_timeout_ms: float
    standby: bool
    listen: tuple[str, int] | None
    takeover: tuple[str, int] | None
    failover_after_ms: float
    status_socket: str | None
    etcd_url: str | None = None
    etcd_key: str = "/livepatch/kv/leader"
    etcd_ttl_s: float = 2.0
    secret: bytes | None = None
    group_commit_ms: float | None = None  # None: PrimaryOptions' default


def parse(options: dict[str, Any], data_dir: str | None) -> ReplicationConfig | None:
    """The replication part of the command line, checked; None when it asks for no replication."""
    rc = ReplicationConfig(
        replicate_to=_address(options["replicate_to"], "--replicate-to"),
        epoch_ms=options["epoch_ms"],
        protection=options["protection"],
        on_standby_loss=options["on_standby_loss"],
        standby_timeout_ms=options["standby_timeout_ms"],
        standby=options["standby"],
        listen=_address(options["replication_listen"], "--replication-listen", any_port=True),
        takeover=_address(options["takeover"], "--takeover"),
        failover_after_ms=options["failover_after_ms"],
        status_socket=options["replication_socket"],
        etcd_url=options["etcd_url"],
        etcd_key=options["etcd_key"],
        etcd_ttl_s=options["etcd_ttl_s"],
        group_commit_ms=options["group_commit_ms"],
    )
    if options["replication_secret_file"] is not None:
        from livepatch.replication.auth import SecretError, load_secret

        try:
            rc.secret = load_secret(options["replication_secret_file"])
        except SecretError as exc:
            raise click.BadParameter(str(exc), param_hint="--replication-secret-file") from None
    if rc.etcd_url is not None and not rc.etcd_url.startswith(("http://", "https://")):
        raise click.BadParameter(
            f"expected an http:// URL, got {rc.etcd_url!r}", param_hint="--etcd"
        )
    if rc.standby:
        if rc.listen is None:
            raise click.UsageError(
                "--standby needs --replication-listen HOST:PORT (where the primary's "
                "--replicate-to points)"
            )
        if data_dir is not None:
            raise click.UsageError("--standby does not take --dir yet: run the standby in memory")
        return rc
    if rc.takeover is not None:
        raise click.UsageError("--takeover is for a standby: add --standby")
    if rc.listen is not None and rc.replicate_to is None:
        raise click.UsageError(
            "--replication-listen is for a standby (add --standby) or for a primary that may "
            "become one by a switchover (add --replicate-to)"
        )
    if rc.listen is not None and data_dir is not None:
        raise click.UsageError(
            "--replication-listen on a primary (to become the standby after a switchover) does "
            "not take --dir yet: a standby keeps its data in memory"
        )
    if rc.replicate_to is None:
        if rc.status_socket is not None or rc.etcd_url is not None or rc.secret is not None:
            raise click.UsageError(
                "--replication-socket, --replication-secret-file and --etcd need --replicate-to "
                "or --standby"
            )
        return None
    return rc


def primary_options(rc: ReplicationConfig) -> Any:
    from livepatch.replication import PrimaryOptions

    options = PrimaryOptions(
        epoch_ms=rc.epoch_ms,
        protection=rc.protection,  # type: ignore[arg-type]
        on_standby_loss=rc.on_standby_loss,  # type: ignore[arg-type]
        standby_timeout_ms=rc.standby_timeout_ms,
        secret=rc.secret,
    )
    if rc.group_commit_ms is not None:  # else PrimaryOptions' default (GROUP_COMMIT_MS)
        options.group_commit_ms = rc.group_commit_ms
    return options


class ReplicationRole:
    """The replication side of one kvserver process: status socket, standby phase, primary phase."""

    def __init__(self, rc: ReplicationConfig) -> None:
        self.rc = rc
        self.term = 1
        self.primary: Any = None
        self._status_server: Any = None
        self._lease: Any = None
        self._keeper: Any = None
        self._loop: Any = None
        self.switching = False  # a switchover stopped the loop: become the standby next
        # No full sync after a switchover (PrimaryOptions.resume_after, StandbyOptions.resume):
        self._resume: tuple[int, int] | None = None  # old primary: (its term, its drained epoch)
        self._resume_offer = 0  # the standby that took over: the last epoch it held
        # The standby that took over was told SWITCHOVER (wire.py): its old primary is about to join
        # as its standby, so the new primary holds writes for it (PrimaryOptions.await_standby).
        self._await_old_primary = False
        # A switchover binds --replication-listen before it hands anything over (a port it cannot
        # bind refuses the switchover, nothing changed), so the new primary's first connection
        # attempt finds it and waits in its backlog, not in a reconnection backoff.
        self._standby_listener: socket.socket | None = None

    def _etcd_lease(self, service: tuple[str, int]) -> Any:
        if self._lease is None and self.rc.etcd_url is not None:
            import os

            from livepatch.replication.etcd import EtcdLease

            identity = f"{socket.gethostname()}:{os.getpid()}:{service[0]}:{service[1]}"
            self._lease = EtcdLease(
                self.rc.etcd_url, self.rc.etcd_key, identity, self.rc.etcd_ttl_s
            )
        return self._lease

    def start_status(self, status: Callable[[], dict[str, Any]]) -> None:
        if self.rc.status_socket is None:
            return
        from livepatch.replication import StatusServer

        if self._status_server is None:
            self._status_server = StatusServer(self.rc.status_socket, status)
            self._status_server.start()
        else:
            self._status_server.set_status(status)

    def wait_as_standby(self, server: Any) -> socket.socket | None:
        """Follow the primary until taking over: returns the service listener (None: stopped)."""
        from kvserver.replication_support import StandbyHost
        from livepatch.replication import Standby, StandbyOptions

        assert self.rc.listen is not None
        options = StandbyOptions(
            failover_after_ms=self.rc.failover_after_ms,
            takeover=self.rc.takeover,
            secret=self.rc.secret,
            term=self.term,
            resume=self._resume,
        )
        self._resume = None
        if self.rc.takeover is not None and self.rc.etcd_url is not None:
            options.may_take_over = self._etcd_lease(self.rc.takeover).try_acquire
        listener, self._standby_listener = self._standby_listener, None
        try:
            standby = Standby(StandbyHost(server), self.rc.listen, options, listener)
        except OSError as exc:
            click.echo(
                f"kvserver: cannot listen for the primary on {self.rc.listen[0]}:{self.rc.listen[1]}: "
                f"{exc}",
                err=True,
            )
            return None
        self.start_status(standby.status)
        previous = {
            s: signal.signal(s, lambda *_: standby.request_stop())
            for s in (signal.SIGTERM, signal.SIGINT)
        }
        print(f"kvserver standby ready on {standby.address[0]}:{standby.address[1]}", flush=True)
        try:
            listener = standby.run()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        self.term = standby.term
        if listener is not None:
            self._resume_offer = standby.acked_epoch
            self._await_old_primary = standby.planned_handover
        return listener

    def start_primary(self, loop: Any) -> None:
        if self.rc.etcd_url is not None:
            self._lead(loop)
        if self.rc.replicate_to is None:
            return
        from kvserver.replication_support import install_primary

        self._loop = loop
        options = primary_options(self.rc)
        options.resume_after, self._resume_offer = self._resume_offer, 0
        options.await_standby, self._await_old_primary = self._await_old_primary, False
        self.primary = install_primary(loop, self.rc.replicate_to, options, self.term)
        loop.after_drain = self._hand_over
        self.start_status(self.primary.status)
        if self._status_server is not None:
            self._status_server.actions["switchover"] = self._request_switchover

    # ------------------------------------------------------------------------------ switchover
    def _request_switchover(self) -> dict[str, Any]:
        """`livepatch switchover` (the status thread): hand the service to the standby."""
        loop = self._loop
        if self.primary is None or loop is None:
            return {"ok": False, "error": "this server is not a primary"}
        if self.rc.listen is None:
            return {
                "ok": False,
                "error": "this primary was started without --replication-listen HOST:PORT, so it "
                "could not become the standby: restart it with one (where the standby's "
                "--replicate-to points)",
            }
        done = threading.Event()
        answer: dict[str, Any] = {}

        def begin() -> None:
            answer.update(self._begin_switchover(loop))
            done.set()

        loop.call_soon_threadsafe(begin)
        if not done.wait(10.0):
            return {"ok": False, "error": "the server did not answer in 10 s: it is too busy"}
        return answer

    def _begin_switchover(self, loop: Any) -> dict[str, Any]:
        """Loop thread: stop executing requests; the loop then drains (Primary.drain) and stops."""
        primary = self.primary
        status = primary.status()
        if self.switching or not loop.serving:
            return {"ok": False, "error": "this server is already stopping"}
        if primary.fenced or status["state"] != "streaming" or not status["protected"]:
            return {
                "ok": False,
                "error": f"the standby at {status['standby']} is not caught up (state "
                f"{status['state']}, protected {status['protected']}): nothing was changed; "
                "wait until `livepatch replication status` says streaming and protected",
            }
        if primary.standby_version < 2:
            return {
                "ok": False,
                "error": f"the standby at {status['standby']} speaks replication protocol version "
                f"{primary.standby_version} (an older livepatch): it does not know the SWITCHOVER "
                "frame, so it would take over as after a failover and acknowledge writes before "
                "this server has joined it: nothing was changed; upgrade (restart) the standby "
                "first",
            }
        assert self.rc.listen is not None
        from livepatch.replication.standby import listen

        try:
            self._standby_listener = listen(self.rc.listen, 8)
        except OSError as exc:
            return {
                "ok": False,
                "error": f"cannot listen on --replication-listen {self.rc.listen[0]}:"
                f"{self.rc.listen[1]} to become the standby ({exc}): nothing was changed",
            }
        # Drain now, while this loop thread executes nothing (this call runs between iterations):
        # if the standby has meanwhile dropped the link (on a busy machine it may suspect a silent
        # primary just before the request) or does not answer, refuse with nothing changed and keep
        # serving, instead of handing over to a standby that then takes over as after a failover
        # (a full sync; held replies closed unanswered). The loop's own drain after it stops then
        # has at most the writes of this iteration left.
        why = primary.drain(primary.options.standby_timeout_ms / 1000.0)
        if why:
            self._standby_listener.close()
            self._standby_listener = None
            log.warning("replication: switchover refused: %s; still serving", why)
            return {
                "ok": False,
                "error": f"the standby at {status['standby']} did not confirm the last writes "
                f"({why}): nothing was changed, this server still serves; retry once "
                "`livepatch replication status` says streaming and protected",
            }
        self.switching = True
        log.warning(
            "replication: SWITCHOVER: handing %s:%d to the standby at %s; this server becomes "
            "its standby on %s:%d",
            loop.server.config.host,
            loop.server.config.port,
            status["standby"],
            *self.rc.listen,
        )
        loop.shutdown(None)  # executes nothing more; the loop drains and closes its clients
        return {"ok": True, "standby": status["standby"], "term": status["term"]}

    def _hand_over(self) -> None:
        """The stopped loop drained its standby and closed its clients and address (loop thread):
        give up the etcd lease, then drop the link: the standby, seeing the link close, takes the
        key and binds the address at once (SIGTERM and SHUTDOWN too), without waiting for the rest
        of this process's stop."""
        self._release_lead()
        if self.primary is not None:
            if self.switching:
                self.primary.announce_switchover()  # after the drain: we will follow it
            self.primary.hand_off()  # stop() joins its thread later
        log.info("replication: clients closed, address and link handed over")

    def _release_lead(self) -> None:
        if self._keeper is not None:
            self._keeper.stop(release=not (self.primary is not None and self.primary.fenced))
            self._keeper = None

    def become_standby(self, server: Any) -> None:
        """After a switchover's loop has stopped: follow the new primary from now on."""
        from kvserver.dirty import untrack

        config = server.config
        drained = self.primary.drained_epoch if self.primary is not None else 0
        self._resume = (self.term, drained) if drained else None
        untrack(server.databases)
        self.rc.standby = True
        self.rc.takeover = (config.host, config.port)
        self.primary = None
        self._loop = None
        self.switching = False
        if self._status_server is not None:
            self._status_server.actions.pop("switchover", None)

    def _lead(self, loop: Any) -> None:
        """Hold the etcd leader key while serving; give up serving when it cannot be renewed."""
        from livepatch.replication.etcd import EtcdUnavailable, LeaderKeeper

        config = loop.server.config
        lease = self._etcd_lease((config.host, config.port))
        try:
            held = lease.try_acquire()
        except EtcdUnavailable as exc:
            raise click.ClickException(f"{exc}: cannot become the primary without it") from None
        if not held:
            raise click.ClickException(
                f"another server leads ({self.rc.etcd_key} = {lease.holder()}): start this one "
                "with --standby, or stop the other first"
            )

        def lost(why: str) -> None:
            def demote() -> None:
                if self.primary is not None:
                    self.primary.fence()
                loop.request_stop()  # frees the address; held replies are never sent

            loop.call_soon_threadsafe(demote)

        self._keeper = LeaderKeeper(lease, lost)
        self._keeper.start()

    def stop(self) -> None:
        """Stop the primary (or standby) phase; the status socket too unless a switchover goes on."""
        self._release_lead()
        if self._standby_listener is not None and not self.switching:
            self._standby_listener.close()  # bound for a switchover that did not happen
            self._standby_listener = None
        if self.primary is not None:
            self.primary.stop()
        if self._status_server is not None and not self.switching:
            self._status_server.stop()
