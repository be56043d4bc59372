"""Leadership through an etcd lease (Patroni's model), for a primary and standby on separate machines.

Theory of operation
-------------------
The leader holds one key (`key`, value: its identity) attached to a lease of `ttl_s` seconds. It takes
the key only if nobody holds it (a transaction comparing the key's create revision with 0), and renews
the lease every ttl/5 from a `LeaderKeeper` thread. A leader that cannot renew for 0.6 TTL (etcd
unreachable, partitioned, or the lease gone) calls `on_lost` once: the server then stops acknowledging
writes and exits (fencing by lease: by the time anyone else can hold the key, the old leader's lease
has expired, and it has given up on its own). A standby that declared its primary gone takes over only
after it took the key (`try_acquire` as `StandbyOptions.may_take_over`): while the primary's lease lives,
a standby cut off from the primary does not take over.

etcd's v3 JSON gateway (`/v3/lease/grant`, `/v3/lease/keepalive`, `/v3/kv/txn`, `/v3/kv/range`,
`/v3/lease/revoke`; Debian's etcd 3.4) through urllib: no client library.

Concurrency: an `EtcdLease` is used by one thread at a time (the keeper thread once started).
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

log = logging.getLogger("livepatch.replication")

REQUEST_TIMEOUT_S = 1.0


class EtcdUnavailable(Exception):
    """etcd did not answer (or answered something unexpected)."""


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdLease:
    def __init__(self, url: str, key: str, identity: str, ttl_s: float = 2.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.identity = identity
        self.ttl_s = ttl_s
        self.lease_id: str | None = None

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                text = response.read().decode()
        except (OSError, urllib.error.URLError) as exc:
            raise EtcdUnavailable(f"etcd at {self.url} did not answer {path}: {exc}") from None
        # The gateway streams keepalive answers: take the first JSON object.
        first = text.strip().split("\n", 1)[0]
        try:
            answer = json.loads(first)
        except ValueError:
            raise EtcdUnavailable(
                f"etcd at {self.url} answered {path} with {first[:200]!r}"
            ) from None
        if not isinstance(answer, dict):
            raise EtcdUnavailable(f"etcd at {self.url} answered {path} with {first[:200]!r}")
        return answer.get("result", answer) if "result" in answer else answer

    def holder(self) -> str | None:
        """The identity holding the key now, or None."""
        return self._holder()[0]

    def _holder(self) -> tuple[str | None, str | None]:
        answer = self._post("/v3/kv/range", {"key": _b64(self.key)})
        kvs = answer.get("kvs") or []
        if not kvs:
            return None, None
        return base64.b64decode(kvs[0]["value"]).decode(), kvs[0].get("lease")

    def try_acquire(self) -> bool:
        """Take the key if nobody holds it; if we hold it already, renew it. Raises EtcdUnavailable."""
        for _ in range(3):
            try:
                holder = self._acquire()
            except EtcdUnavailable:
                if self.lease_id is None:
                    raise
                self.lease_id = None  # our lease may have expired meanwhile: again with a new one
                continue
            if holder is True:
                return True
            if holder is not None:
                return False  # someone else's
            # The key vanished between our transaction and our look (its lease just expired): again.
        return False

    def _acquire(self) -> bool | str | None:
        """True: ours; a str: that identity holds it; None: nobody (it vanished meanwhile)."""
        if self.lease_id is None:
            grant = self._post("/v3/lease/grant", {"TTL": max(1, round(self.ttl_s))})
            self.lease_id = str(grant["ID"])
            self.ttl_s = float(grant.get("TTL", self.ttl_s))  # etcd may raise it to its minimum
        txn = {
            "compare": [{"target": "CREATE", "key": _b64(self.key), "create_revision": "0"}],
            "success": [
                {
                    "request_put": {
                        "key": _b64(self.key),
                        "value": _b64(self.identity),
                        "lease": self.lease_id,
                    }
                }
            ],
        }
        if self._post("/v3/kv/txn", txn).get("succeeded"):
            return True
        holder, lease = self._holder()
        if holder is None:
            return None
        if holder != self.identity or lease is None:
            # Someone else's: keep our spare lease alive, so that the moment the key is free we put
            # it under a lease with a whole TTL ahead (an unrenewed one could expire right after).
            if not self.renew():
                self.lease_id = None
            return holder
        # Ours already, perhaps under an earlier lease (a put whose answer timed out): keep that one.
        self.lease_id = str(lease)
        return True if self.renew() else None

    def renew(self) -> bool:
        """Renew the lease once; False if it has expired (the key is gone with it)."""
        if self.lease_id is None:
            return False
        answer = self._post("/v3/lease/keepalive", {"ID": self.lease_id})
        return int(answer.get("TTL", 0)) > 0

    def release(self) -> None:
        """Give the key up now (a clean stop): the other side need not wait for the TTL."""
        if self.lease_id is not None:
            try:
                self._post("/v3/lease/revoke", {"ID": self.lease_id})
            except EtcdUnavailable as exc:
                log.info("could not revoke the etcd lease (it expires by itself): %s", exc)
            self.lease_id = None


GIVE_UP_FRACTION = 0.6


class LeaderKeeper:
    """Renews a held lease every ttl/3; calls on_lost once when 0.6 x TTL passed since the last renewal
    that etcd confirmed, counted from when it was *sent*: etcd expires the lease no sooner than a TTL
    after it received that renewal, so the leader gives up before anyone else can take the key."""

    def __init__(self, lease: EtcdLease, on_lost: Callable[[str], None]) -> None:
        self.lease = lease
        self.on_lost = on_lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="livepatch-etcd-leader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, release: bool = True) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        if release:
            self.lease.release()

    def _run(self) -> None:
        ttl = self.lease.ttl_s
        last_renewed = time.monotonic()
        while not self._stop.wait(ttl / 5):
            sent = time.monotonic()
            try:
                if self.lease.renew():
                    last_renewed = sent
                    continue
                why = "the lease expired"
            except EtcdUnavailable as exc:
                why = str(exc)
            given_up = time.monotonic() - last_renewed >= GIVE_UP_FRACTION * ttl
            if given_up or why == "the lease expired":
                log.critical(
                    "LEADERSHIP LOST: cannot renew the etcd lease on %s for %.1f s (%s): "
                    "acknowledging no write from now on",
                    self.lease.key,
                    ttl,
                    why,
                )
                self.on_lost(why)
                return
