"""Persistence coordination: load at start, SAVE, BGSAVE, the save policy, shutdown.

Theory of operation
-------------------
State on disk = the newest snapshot + the append-only generations from the one it names onwards.
Every snapshot starts a new generation G+1 (even with the AOF off, so a later restart with the AOF on
never replays writes the snapshot already holds):
  SAVE    flush+fsync the AOF, write the snapshot naming G+1, rotate the AOF to G+1, delete files < G+1.
  BGSAVE  flush+fsync, rotate the AOF to G+1 *before* fork (the parent's new writes go to G+1), the
          child writes the snapshot naming G+1 and exits; when the loop reaps a successful child it
          deletes files < G+1. A crash before that leaves the old snapshot and G, G+1: both replayed.
  start   load the snapshot (if any), replay generations >= its G in order (a torn tail is truncated),
          then append to the newest one.
Under appendfsync always no acknowledged write is lost by kill -9; SHUTDOWN (and SIGTERM) flushes and
fsyncs under every policy.

Concurrency: event-loop thread only, except the forked BGSAVE child, which only writes the snapshot.
The snapshot files are pickles: the data directory must be trusted (it is the server's own).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from pathlib import Path
from typing import Any

from kvserver import aof as aof_mod
from kvserver.aof import AppendOnlyFile
from kvserver.replies import ErrorReply
from kvserver.snapshot import load_snapshot, write_snapshot

log = logging.getLogger("kvserver.persistence")

BGSAVE_RETRY_SECONDS = 5  # Redis's CONFIG_BGSAVE_RETRY_DELAY


class PersistenceError(Exception):
    pass


class Persistence:
    def __init__(self, server: Any) -> None:
        config = server.config
        assert config.dir is not None
        self.server = server
        self.dir = config.dir
        self.snapshot_path = Path(config.dir) / config.dbfilename
        self.generation = 1
        self.aof: AppendOnlyFile | None = None
        self.child_pid: int | None = None
        self.child_generation = 0
        self.child_dirty = 0
        self.child_started = 0.0
        self.last_bgsave_ok = True
        self.last_bgsave_failed_at = 0.0
        self.last_save_duration = 0.0
        self.loaded_keys = 0
        self.replayed_commands = 0
        self.load_seconds = 0.0

    # --------------------------------------------------------------------------------------- start
    def load(self) -> None:
        """Load the snapshot and replay the AOF (before the loop starts); then open the AOF."""
        started = time.monotonic()
        config = self.server.config
        os.makedirs(self.dir, exist_ok=True)
        now_ms = int(time.time() * 1000)
        if self.snapshot_path.exists():
            header = load_snapshot(self.snapshot_path, self.server.databases, now_ms)
            self.generation = int(header["aof_generation"])
            self.server.last_save = int(header["created_ms"] // 1000)
        self.loaded_keys = sum(len(db) for db in self.server.databases)
        gens = aof_mod.existing_generations(self.dir, config.appendfilename)
        if config.appendonly:
            current = [g for g in gens if g >= self.generation]
            replay_client = self.server.new_client(None, "aof-replay")
            self.server.loading = True
            try:
                for g in current:
                    path = aof_mod.generation_path(self.dir, config.appendfilename, g)
                    self.replayed_commands += aof_mod.replay(
                        path, lambda argv: self._replay_one(replay_client, argv), config.limits()
                    )
            finally:
                self.server.loading = False
                self.server.forget_client(replay_client)
            if current:
                self.generation = current[-1]
            self._delete_generations_below(self.generation)
            self.aof = AppendOnlyFile(
                self.dir, config.appendfilename, config.appendfsync, self.generation
            )
            self.server.aof = self.aof
        self.server.dirty = 0
        self.load_seconds = time.monotonic() - started

    def _replay_one(self, client: Any, argv: list[bytes]) -> None:
        reply = self.server.run_replay_command(client, argv)
        if isinstance(reply, ErrorReply):
            # Redis stops on a failing command in the AOF; a command that failed when it ran was never
            # logged, so this means the data changed meaning: report it, keep going.
            log.warning("replaying %r from the append-only file failed: %s", argv[0], reply.message)

    def _delete_generations_below(self, generation: int) -> None:
        config = self.server.config
        for g in aof_mod.existing_generations(self.dir, config.appendfilename):
            if g < generation:
                try:
                    os.unlink(aof_mod.generation_path(self.dir, config.appendfilename, g))
                except OSError as exc:
                    log.warning("cannot delete old append-only generation %d: %s", g, exc)

    # --------------------------------------------------------------------------------- snapshots
    def save(self) -> None:
        """SAVE: a synchronous snapshot (blocks the loop, like Redis)."""
        if self.child_pid is not None:
            raise PersistenceError("ERR Background save already in progress")
        started = time.monotonic()
        new_gen = self.generation + 1
        if self.aof is not None:
            self.aof.fsync_now()
        write_snapshot(self.snapshot_path, self.server.databases, new_gen)
        if self.aof is not None:
            self.aof.rotate(new_gen)
        self.generation = new_gen
        self._delete_generations_below(new_gen)
        self.server.dirty = 0
        self.server.last_save = int(time.time())
        self.last_bgsave_ok = True
        self.last_save_duration = time.monotonic() - started

    def bgsave(self) -> None:
        """BGSAVE: fork; the child writes the snapshot; `cron` reaps it."""
        if self.child_pid is not None:
            raise PersistenceError("ERR Background save already in progress")
        new_gen = self.generation + 1
        if self.aof is not None:
            self.aof.rotate(new_gen)
        self.generation = new_gen
        self.child_generation = new_gen
        self.child_dirty = self.server.dirty
        self.child_started = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: write and leave, running nothing else of the server
            gc.disable()  # first: a collection would write to (and copy) every page of the parent's heap
            code = 1
            try:
                write_snapshot(self.snapshot_path, self.server.databases, new_gen)
                code = 0
            finally:
                os._exit(code)
        self.child_pid = pid

    def _reap_child(self, block: bool = False) -> None:
        if self.child_pid is None:
            return
        pid, status = os.waitpid(self.child_pid, 0 if block else os.WNOHANG)
        if pid == 0:
            return
        self.child_pid = None
        self.last_save_duration = time.monotonic() - self.child_started
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            self.last_bgsave_ok = True
            self.server.dirty = max(0, self.server.dirty - self.child_dirty)
            self.server.last_save = int(time.time())
            self._delete_generations_below(self.child_generation)
            log.info("background save done in %.3f s", self.last_save_duration)
        else:
            self.last_bgsave_ok = False
            self.last_bgsave_failed_at = time.monotonic()
            log.error("background save failed (status %d)", status)

    def cron(self, now_ms: int) -> None:
        self._reap_child()
        policy = self.server.config.save
        if self.child_pid is not None or not policy:
            return
        if (
            not self.last_bgsave_ok
            and time.monotonic() - self.last_bgsave_failed_at < BGSAVE_RETRY_SECONDS
        ):
            return
        elapsed = now_ms // 1000 - self.server.last_save
        for seconds, changes in policy:
            if self.server.dirty >= changes and elapsed >= seconds:
                log.info("%d changes in %d seconds: background save", changes, seconds)
                try:
                    self.bgsave()
                except OSError as exc:
                    self.last_bgsave_ok = False
                    self.last_bgsave_failed_at = time.monotonic()
                    log.error("cannot start a background save: %s", exc)
                return

    # ------------------------------------------------------------------------------------ shutdown
    def shutdown(self, save: bool) -> None:
        """Flush and fsync the AOF; wait for a running BGSAVE; snapshot if asked. Loop thread."""
        if self.child_pid is not None:
            self._reap_child(block=True)
        if save:
            self.save()
        if self.aof is not None:
            self.aof.close()
            self.aof = None
            self.server.aof = None
