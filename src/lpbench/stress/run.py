"""One stress run: a fresh server, N client threads checking every reply, the patch applied and reverted
`cycles` times, then the write log checked against the server's data.

Theory of operation
- The server is a real process (lpbench.servers) with its livepatch agent; its data lives in a short
  temporary directory (Unix socket paths are limited to 108 bytes) removed at the end.
- Each client thread owns one connection and loops: write one of its own keys, read it back (it must be
  the value just written), probe the version (check.py judges it). A request that takes longer than the
  request deadline is a hang: the connection is dropped and reopened. A broken connection is a failed
  request; the thread reconnects every RECONNECT_S.
- The patch loop (the caller's thread) alternates apply and revert through the agent, with the agent's
  quiescence deadline set to the patch deadline (the runtime aborts cleanly at it: an *aborted* patch);
  a call that does not return within twice the deadline plus PATCH_GRACE_S is a *patch hang*. After each
  transition it waits until every connection has done a whole round after it ended (at most the request
  deadline), so every connection writes, reads and probes under every version.
- An apply that did not succeed is not reverted (nothing to revert); a revert that did not succeed is
  tried again at the start of the next cycle, before its apply. If the server process exits, the loop
  stops: that is a failure by itself.
- At the end the clients stop, their pending replies are judged, and a fresh connection reads every key
  of every write log (lost writes).

Concurrency: one Timeline and one Condition shared by the patch loop and the clients; everything else is
per thread until the threads are joined.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from livepatch.agent import client as agent_client
from livepatch.runtime.lifecycle import Outcome
from lpbench.servers import ProcessServer, Server, free_port, make_server
from lpbench.sql.pg import SqlError
from lpbench.stress.check import ConnectionChecker, Timeline, WriteLog
from lpbench.stress.common import RequestFailed, StressClient, StressConfig, StressTarget
from lpbench.stress.load import KV_KEYS, LoadThread, consistency
from lpbench.stress.sched import SchedMonitor

RECONNECT_S = 0.01
HANG_RECORDS = 200  # hangs recorded in full (every one is counted)
NEAR_S = 1.0  # a hang's record lists the transitions that ended at most this long before it began
PATCH_GRACE_S = 10.0
MAX_EXAMPLES = 20
READ_BATCH = 200
RSS_EVERY = 1000  # cycles between two samples of the server's memory (the report's rss_mb trace)

Progress = Callable[[int, dict[str, Any]], None]  # (cycles done, running totals)


@dataclass
class ClientTally:
    requests: int = 0
    failed: int = 0
    hangs: int = 0
    examples: list[str] = field(default_factory=list)

    def fail(self, what: str, hang: bool = False) -> None:
        if hang:
            self.hangs += 1
        else:
            self.failed += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(what)


class _Client(threading.Thread):
    def __init__(self, run: StressRun, conn: int) -> None:
        super().__init__(name=f"stress-client-{conn}", daemon=True)
        self.run_ = run
        self.conn = conn
        self.tally = ClientTally()
        self.checker = ConnectionChecker(conn, run.timeline)
        self.log = WriteLog()
        self.probes = 0

    def run(self) -> None:
        r = self.run_
        cfg = r.cfg
        c: StressClient | None = None
        seq = 0
        down = False
        while not r.stop.is_set():
            if c is None:
                try:
                    c = r.target.connect(r.host, r.port, cfg.request_deadline_s)
                except OSError as exc:
                    if not down:  # one failure per outage, not one per retry
                        self.tally.fail(f"connection {self.conn}: cannot connect: {exc}")
                        down = True
                    r.stop.wait(RECONNECT_S)
                    continue
                down = False
            key = f"stress:w:{self.conn}:{seq % cfg.keys_per_connection}"
            value = f"{self.conn}:{seq}".encode()
            step = "write"
            sent = time.monotonic_ns()
            try:
                self.tally.requests += 1
                c.write(key, value)
                self.log.acknowledged(key, value)
                step = "read"
                self.tally.requests += 1
                sent = time.monotonic_ns()
                got = c.read(key)
                if got != value:
                    self.tally.fail(
                        f"connection {self.conn}: read {key} = {got!r} right after its write of "
                        f"{value!r} was acknowledged"
                    )
                step = "probe"
                self.tally.requests += 1
                sent = time.monotonic_ns()
                version = c.probe()
                self.checker.observe(sent, time.monotonic_ns(), version)
                with r.probed:
                    self.probes += 1
                    r.probed.notify_all()
            except TimeoutError:
                self.tally.fail(
                    f"connection {self.conn}: {step} took over {cfg.request_deadline_s:g} s",
                    hang=True,
                )
                r.hang(self.conn, step, key, sent, time.monotonic_ns())
                self._drop(c, step, key, value)
                c = None
            except RequestFailed as exc:
                self.tally.fail(f"connection {self.conn}: {exc}")
                if step == "write":  # an error reply: the write may not have happened
                    self.log.unanswered(key, value)
            except OSError as exc:
                self.tally.fail(f"connection {self.conn}: {step}: connection lost ({exc})")
                self._drop(c, step, key, value)
                c = None
            seq += 1
        if c is not None:
            c.close()

    def _drop(self, c: StressClient, step: str, key: str, value: bytes) -> None:
        if step == "write":
            self.log.unanswered(key, value)
        c.close()
        return None


class StressRun:
    def __init__(
        self,
        cfg: StressConfig,
        target: StressTarget,
        server: Server,
        patch: Path,
        interrupt: threading.Event | None = None,
    ) -> None:
        self.cfg, self.target, self.server, self.patch = cfg, target, server, patch
        # Set (e.g. by the CLI's SIGINT handler): stop after the current cycle, check and report.
        self.interrupt = interrupt or threading.Event()
        self.host, self.port = server.host, server.port
        self.timeline = Timeline()
        self.stop = threading.Event()
        self.probed = threading.Condition()
        self.clients = [_Client(self, i) for i in range(cfg.connections)]
        n_load = cfg.load_connections if cfg.workload else 0
        self.load = [LoadThread(cfg, self.host, self.port, i, self.stop) for i in range(n_load)]
        self.inconsistent: list[str] = []
        self.transitions: list[dict[str, Any]] = []
        self.patch_failures: list[str] = []
        self.patch_hangs = 0
        self.server_exit: int | None = None
        self.rounds_ms: list[
            float
        ] = []  # each wait for every connection's round after a transition
        # the first HANG_RECORDS hangs in full (all are counted in the tallies)
        self.hangs: list[dict[str, Any]] = []
        self._hangs_lock = threading.Lock()
        self.monitor = SchedMonitor(_pid(server))
        # (cycles done, server RSS in MB, 1-minute load average): at the start, every RSS_EVERY cycles,
        # at the end. A server whose memory grows with the run (an unbounded history) shows here.
        self.rss_trace: list[tuple[int, float | None, float | None]] = []
        # monotonic ns -> wall clock, for the hang records' timestamps
        self._wall_offset_ns = time.time_ns() - time.monotonic_ns()

    def hang(self, conn: int, step: str, key: str, s: int, e: int) -> None:
        """A request on `conn` sent at s had no reply by e (monotonic ns): record when, what, and who was
        not running meanwhile (sched.py). Called by the client thread, right after its read timed out."""
        window = self.monitor.window(s, e)
        with self._hangs_lock:
            if len(self.hangs) < HANG_RECORDS:
                self.hangs.append({"conn": conn, "step": step, "key": key, "s": s, "e": e,
                                   "sched": window.to_dict()})  # fmt: skip

    def _hang_records(self) -> list[dict[str, Any]]:
        """The hangs with their timestamps and the transitions around them (settled: after the run)."""
        out = []
        for h in self.hangs:
            s, e = h["s"], h["e"]
            near = [t for t in self.transitions
                    if t["start_ns"] <= e and t["end_ns"] >= s - int(NEAR_S * 1e9)]  # fmt: skip
            overlapped = any(t["start_ns"] <= e and t["end_ns"] >= s for t in near)
            wall = datetime.fromtimestamp((s + self._wall_offset_ns) / 1e9, UTC)
            out.append({
                "at_utc": wall.isoformat(timespec="milliseconds"),
                "connection": h["conn"],
                "request": f"{h['step']} {h['key']}" if h["step"] == "write" or h["step"] == "read"
                else f"{h['step']} (version)",
                "waited_s": round((e - s) / 1e9, 3),
                "overlapped_transition": overlapped,
                "transitions": [
                    {"index": t["index"], "cycle": t["cycle"], "action": t["action"],
                     "method": t["method"], "outcome": Outcome(t["outcome"]).value, "sync_ms": t["sync_ms"],
                     "start_s": round((t["start_ns"] - s) / 1e9, 3),
                     "end_s": round((t["end_ns"] - s) / 1e9, 3)}
                    for t in near
                ],
                "sched": h["sched"],
            })  # fmt: skip
        return out

    # -- the patch loop -------------------------------------------------------------------------
    def _agent(self, req: dict[str, Any]) -> dict[str, Any]:
        sock = self.server.control_socket
        assert sock is not None
        limit = 2 * self.cfg.patch_deadline_s + PATCH_GRACE_S
        t = time.monotonic()
        try:
            reply = agent_client.request(str(sock), req, timeout=limit)
        except Exception as exc:  # AgentUnreachable, ProtocolError: no result
            if time.monotonic() - t >= limit:
                self.patch_hangs += 1
                return {"outcome": "hung", "reason": f"no answer in {limit:g} s"}
            return {"outcome": "failed", "reason": f"{type(exc).__name__}: {exc}"}
        result = reply.get("result")
        if isinstance(result, dict):
            return result
        return {"outcome": "failed", "reason": reply.get("error") or "no result"}

    def _transition(self, action: str, method: str, cycle: int, document: dict[str, Any]) -> bool:
        deadline = self.cfg.patch_deadline_s
        k = self.timeline.begin(
            2 if action == "apply" else 1, monotonic=self.target.monotonic(method)
        )
        if action == "apply":
            req = {
                "op": "apply",
                "patch": document,
                "method": method,
                "timeout": deadline,
                "watch": None,
            }
        else:
            req = {"op": "revert", "patch_id": None, "method": method, "timeout": deadline}
        t_agent = time.monotonic_ns()
        result = self._agent(req)
        agent_ms = (time.monotonic_ns() - t_agent) / 1e6
        try:
            outcome = Outcome(str(result.get("outcome", Outcome.FAILED)))
        except ValueError:  # not a reply the agent would give: count it as a failed transition
            outcome = Outcome.FAILED
        ok = outcome is (Outcome.APPLIED if action == "apply" else Outcome.REVERTED)
        self.timeline.end(k, ok)
        timings = result.get("timings") or {}
        sync = timings.get("sync")
        self.transitions.append({"index": k, "cycle": cycle, "action": action, "method": method,
                                 "outcome": outcome, "sync_ms": sync, "agent_ms": agent_ms, "runtime_ms": timings.get("total"),
                                 "start_ns": self.timeline.starts[k],
                                 "end_ns": self.timeline.ends[k]})  # fmt: skip
        if not ok:
            self.patch_failures.append(
                f"cycle {cycle}: {action} ({method}) {outcome}: {result.get('reason', '')}".strip()
            )
        return ok

    def _wait_probes(self) -> None:
        """Until every connection has done a whole write/read/probe round after now (two probes answered),
        bounded by the request deadline: every connection's writes meet every version."""
        t = time.monotonic_ns()
        with self.probed:
            before = [c.probes for c in self.clients]
            self.probed.wait_for(
                lambda: all(c.probes >= b + 2 for c, b in zip(self.clients, before, strict=True)),
                timeout=self.cfg.request_deadline_s,
            )
        self.rounds_ms.append((time.monotonic_ns() - t) / 1e6)

    def _server_exit(self) -> int | None:
        proc = getattr(getattr(self.server, "process", None), "proc", None)
        return None if proc is None else proc.poll()

    def run(self, progress: Progress | None = None) -> dict[str, Any]:
        document = json.loads(self.patch.read_bytes())
        self.target.prepare(self.host, self.port, self.cfg.request_deadline_s)
        self.monitor.start()
        for c in self.clients:
            c.start()
        for t in self.load:
            t.start()
        t0 = time.monotonic()
        done = 0
        still_applied = False
        try:
            self._wait_probes()
            self._sample_rss(0)
            for cycle in range(self.cfg.cycles):
                if self.cfg.plant == "kill-server" and cycle == self.cfg.cycles // 2:
                    os.kill(self.server.pid(), signal.SIGKILL)
                method = self.cfg.methods[cycle % len(self.cfg.methods)]
                if still_applied:  # the last revert failed: the patch is still in; revert first
                    still_applied = not self._transition("revert", method, cycle, document)
                    self._wait_probes()
                if not still_applied and self._transition("apply", method, cycle, document):
                    self._wait_probes()
                    still_applied = not self._transition("revert", method, cycle, document)
                self._wait_probes()
                done = cycle + 1
                self.server_exit = self._server_exit()
                if done % RSS_EVERY == 0:
                    self._sample_rss(done)
                if progress is not None:
                    progress(done, self.totals())
                if self.server_exit is not None or self.interrupt.is_set():
                    break
        finally:
            if not self.rss_trace or self.rss_trace[-1][0] != done:
                self._sample_rss(done)
            self.stop.set()
            for c in self.clients:
                c.join(self.cfg.request_deadline_s + 5)
            for t in self.load:
                t.join(self.cfg.request_deadline_s + 5)
            self.monitor.stop()
        for c in self.clients:
            c.checker.flush()
        if self.server_exit is None:
            try:
                self.inconsistent = consistency(self.cfg, self.host, self.port)
            except (OSError, SqlError) as exc:
                self.inconsistent = [f"the consistency check could not run: {exc}"]
        lost, lost_examples, unread = self._check_writes()
        return self._report(done, time.monotonic() - t0, lost, lost_examples, unread)

    def _sample_rss(self, done: int) -> None:
        self.rss_trace.append((done, _rss_mb(_pid(self.server)), _load1()))

    # -- the end ---------------------------------------------------------------------------------
    def _check_writes(self) -> tuple[int, list[str], int]:
        """(lost writes, examples, keys that could not be read: the server is gone)."""
        keys = [(c.log, k) for c in self.clients for k in c.log.written()]
        lost, examples = 0, list[str]()
        try:
            reader = self.target.connect(self.host, self.port, self.cfg.request_deadline_s)
        except OSError:
            return 0, [], len(keys)
        try:
            for i in range(0, len(keys), READ_BATCH):
                batch = keys[i : i + READ_BATCH]
                values = reader.read_many([k for _, k in batch])
                for (log, key), value in zip(batch, values, strict=True):
                    want = log.expected(key)
                    if value not in want:
                        lost += 1
                        if len(examples) < MAX_EXAMPLES:
                            examples.append(
                                f"{key} = {value!r}, acknowledged {sorted(map(repr, want))}"
                            )
        except (OSError, RequestFailed):
            return lost, examples, len(keys) - i
        finally:
            reader.close()
        return lost, examples, 0

    def totals(self) -> dict[str, int]:
        return {
            "requests": sum(c.tally.requests for c in self.clients)
            + sum(t.requests for t in self.load),
            "failed": sum(c.tally.failed for c in self.clients) + sum(t.failed for t in self.load),
            "hangs": sum(c.tally.hangs for c in self.clients),
            "wrong_version": sum(c.checker.violations for c in self.clients),
            "patch_failures": len(self.patch_failures),
        }

    def _cycle_costs(self, done: int, elapsed: float) -> dict[str, Any]:
        """Where a cycle's time goes: medians (ms) of the agent round trip per action (request sent to
        reply read: the agent's decoding and checks, staging, sync, swap), the runtime's own part of it
        (its `total` timing), and the wait for every connection's round after a transition (two per
        cycle); `mean` is the run's milliseconds per cycle."""

        def p50(values: list[float | None]) -> float | None:
            vals = sorted(v for v in values if v is not None)
            return round(vals[len(vals) // 2], 3) if vals else None

        out: dict[str, Any] = {"mean": round(elapsed * 1000 / done, 3) if done else None}
        for action in ("apply", "revert"):
            mine = [t for t in self.transitions if t["action"] == action]
            out[f"agent_{action}_p50"] = p50([t["agent_ms"] for t in mine])
            out[f"runtime_{action}_p50"] = p50([t["runtime_ms"] for t in mine])
        out["rounds_wait_p50"] = p50(list(self.rounds_ms))
        return out

    def _report(
        self, done: int, elapsed: float, lost: int, lost_examples: list[str], unread: int
    ) -> dict[str, Any]:
        totals = self.totals()
        by_version: dict[int, int] = {}
        for c in self.clients:
            for v, n in c.checker.by_version.items():
                by_version[v] = by_version.get(v, 0) + n
        sync = {m: sync_percentiles([t["sync_ms"] for t in self.transitions if t["method"] == m])
                for m in self.cfg.methods}  # fmt: skip
        failures = []
        if done < self.cfg.cycles:
            why = " (interrupted)" if self.interrupt.is_set() else ""
            failures.append(f"stopped after {done} of {self.cfg.cycles} cycles{why}")
        if self.server_exit is not None:
            failures.append(f"the server exited (code {self.server_exit})")
        hangs = self._hang_records()
        verdicts = Counter(h["sched"]["verdict"] for h in hangs)
        hung = "hung requests"
        if hangs:
            during = sum(1 for h in hangs if h["overlapped_transition"])
            why = "; ".join(f"{n}x {v}" for v, n in verdicts.most_common())
            hung += f" ({during} of {len(hangs)} recorded overlapped a transition; {why})"
        for name, n in (("failed requests", totals["failed"]), (hung, totals["hangs"]),
                        ("wrong-version replies", totals["wrong_version"]), ("lost writes", lost),
                        ("failed or aborted patches", len(self.patch_failures)),
                        ("hung patches", self.patch_hangs), ("unchecked writes (server gone)", unread),
                        ("consistency problems", len(self.inconsistent))):  # fmt: skip
            if n:
                failures.append(f"{n} {name}")
        if by_version.get(2, 0) == 0 and not failures:
            failures.append("no reply came from the patched version: the check checked nothing")
        return {
            "config": asdict(self.cfg),
            "ok": not failures,
            "failures": failures,
            "cycles": done,
            "seconds": round(elapsed, 2),
            "transitions": len(self.transitions),
            "requests": totals["requests"],
            "probes_by_version": {str(k): v for k, v in sorted(by_version.items())},
            "failed_requests": totals["failed"],
            "hung_requests": totals["hangs"],
            "hangs": hangs,
            "hang_verdicts": dict(verdicts),
            "client_max_lag_s": round(self.monitor.max_lag_s, 3),
            "client_lags_over_1s": self.monitor.lags_over_1s,
            "wrong_version_replies": totals["wrong_version"],
            "lost_writes": lost,
            "unchecked_writes": unread,
            "load_requests": sum(t.requests for t in self.load),
            "consistency_problems": len(self.inconsistent),
            "aborted_patches": sum(1 for t in self.transitions if t["outcome"] is Outcome.ABORTED),
            "failed_patches": len(self.patch_failures),
            "hung_patches": self.patch_hangs,
            "sync_ms": sync,
            "cycle_ms": self._cycle_costs(done, elapsed),
            "server_rss_mb": {
                "start": self.rss_trace[0][1] if self.rss_trace else None,
                "end": self.rss_trace[-1][1] if self.rss_trace else None,
                "trace": [list(t) for t in self.rss_trace],  # [cycles, rss MB, load average]
            },
            "examples": {
                "requests": [e for c in self.clients for e in c.tally.examples][:MAX_EXAMPLES]
                + [e for t in self.load for e in t.examples][:MAX_EXAMPLES],
                "consistency": self.inconsistent[:MAX_EXAMPLES],
                "versions": [e for c in self.clients for e in c.checker.examples][:MAX_EXAMPLES],
                "writes": lost_examples,
                "patches": self.patch_failures[:MAX_EXAMPLES],
            },
            "server_exit": self.server_exit,
        }


def _pid(server: Server) -> int | None:
    try:
        return server.pid()
    except Exception:  # not started, or a server without a process of ours: no schedstat then
        return None


def _rss_mb(pid: int | None) -> float | None:
    """The resident set of process `pid` in MB (Linux /proc), None when it cannot be read."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _load1() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def sync_percentiles(values: list[float | None]) -> dict[str, float | int | None]:
    """Nearest-rank p50/p90/p99 and max of the agent's sync times (ms) of successful transitions."""
    vals = sorted(float(v) for v in values if v is not None)
    if not vals:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None, "mean": None}

    def rank(p: float) -> float:
        return vals[max(0, int(-(-len(vals) * p // 100)) - 1)]

    return {"n": len(vals), "p50": rank(50), "p90": rank(90), "p99": rank(99), "max": vals[-1],
            "mean": statistics.fmean(vals)}  # fmt: skip


def run_stress(
    cfg: StressConfig,
    target: StressTarget,
    progress: Progress | None = None,
    keep: Path | None = None,
    interrupt: threading.Event | None = None,
) -> dict[str, Any]:
    """Build the patch, start the server, stress it, stop it (always). `keep`: copy the patch and the
    server's log there. `interrupt` set: stop after the current cycle, check and report what was done."""
    cfg.check()
    if cfg.plant is not None and cfg.plant not in (*target.plants, "kill-server"):
        raise ValueError(
            f"unknown --plant {cfg.plant!r}; known: {', '.join((*target.plants, 'kill-server'))}"
        )
    work = Path(tempfile.mkdtemp(prefix="lps-"))
    try:
        plant = cfg.plant if cfg.plant != "kill-server" else None
        patch = target.build_patch(work / "patch", plant)
        server = make_server(cfg.server, free_port(), work / "data")
        if not cfg.agent_state and isinstance(server, ProcessServer):
            server.extra_args = ("--state-dir", "none")
        configure = getattr(server, "configure", None)  # sql: the policy, the workload to load
        if configure is not None:
            configure(cfg)
        try:
            server.start()
            if cfg.workload is not None:
                server.populate(KV_KEYS)  # kv: DEBUG POPULATE; sql: the workload's schema and data
            report = StressRun(cfg, target, server, patch, interrupt).run(progress)
        finally:
            server.stop()
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(patch, keep / patch.name)
                log = work / "data" / "server.log"
                if log.exists():
                    shutil.copy(log, keep / "server.log")
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)
