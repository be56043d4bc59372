"""Snapshot files: every database's keys, values and expiry times, written atomically.

Format: the magic line b"KVSNAP1\\n", then a sequence of pickles: a header dict
{"aof_generation": int, "databases": int, "created_ms": int}, then batches (db_index, [(key, value,
expire_at_ms | None), ...]) of at most BATCH keys, then None. Batches keep memory flat for 10M keys
(no pickle memo over the whole data set) and the end marker tells a complete file from a cut one.
Writing goes to a temporary file in the same directory, fsynced, renamed over the old snapshot, and the
directory fsynced: a crash leaves the old snapshot or the new one, never a mix.

Concurrency: `write_snapshot` reads the databases it is given and nothing else; the server calls it on
the loop thread (SAVE, SHUTDOWN) or in a forked child (BGSAVE). `load_snapshot` runs before the loop
starts.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

MAGIC = b"KVSNAP1\n"
BATCH = 65536


class SnapshotCorrupt(Exception):
    """The snapshot cannot be read: refuse to start rather than serve a partial data set."""


def write_snapshot(path: Path, databases: Iterable[Any], aof_generation: int) -> int:
    """Write every database to `path` atomically. Returns the number of keys written."""
    dbs = list(databases)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    keys = 0
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC)
            header = {
                "aof_generation": aof_generation,
                "databases": len(dbs),
                "created_ms": int(time.time() * 1000),
            }
            pickle.dump(header, f, protocol=pickle.HIGHEST_PROTOCOL)
            for index, db in enumerate(dbs):
                batch: list[tuple[bytes, Any, int | None]] = []
                for item in db.items():
                    batch.append(item)
                    if len(batch) >= BATCH:
                        pickle.dump((index, batch), f, protocol=pickle.HIGHEST_PROTOCOL)
                        keys += len(batch)
                        batch = []
                if batch:
                    pickle.dump((index, batch), f, protocol=pickle.HIGHEST_PROTOCOL)
                    keys += len(batch)
            pickle.dump(None, f, protocol=pickle.HIGHEST_PROTOCOL)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return keys


def load_snapshot(path: Path, databases: list[Any], now_ms: int) -> dict[str, Any]:
    """Fill `databases` from `path` (keys already expired are skipped). Returns the header."""
    try:
        with open(path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise SnapshotCorrupt(f"{path} is not a kvserver snapshot")
            header = pickle.load(f)
            if not isinstance(header, dict) or "aof_generation" not in header:
                raise SnapshotCorrupt(f"{path}: bad header")
            while True:
                record = pickle.load(f)
                if record is None:
                    return header
                index, batch = record
                if index >= len(databases):
                    raise SnapshotCorrupt(
                        f"{path} holds database {index}, but only {len(databases)} are configured"
                    )
                db = databases[index]
                for key, value, expire_at in batch:
                    if expire_at is None or expire_at > now_ms:
                        db.store(key, value, expire_at)
    except (EOFError, pickle.UnpicklingError, ValueError, TypeError) as exc:
        raise SnapshotCorrupt(f"{path} is truncated or damaged: {exc}") from exc
