"""sqlserver against the real PostgreSQL 15 on this machine, under the same pgbench commands, in one run.

    .venv/bin/python bench/sql_vs_postgres.py [--duration 10] [--clients 10] [--threads 2]
        [--policies thread-per-connection,pool] [--workloads select-only,tpcb-like] [--rounds 1] [--cpu]

PostgreSQL: /usr/lib/postgresql/15/bin, a fresh cluster (initdb, trust auth) run as user postgres via
runuser, fsync on, default synchronous_commit, on a free port, in a temporary directory. sqlserver: as
deployed for live patching (agent listening, quiescence points), --synchronous full, each policy. Both
are initialised with `pgbench -i -s 1`; then each workload runs on each server in turn with the same
command (`pgbench -M prepared -c 10 -j 2 -T 10`, plus `-S` for select-only), `-l` logging every
transaction so that p50/p99 latency come from the full distribution. Prints a markdown table: TPS,
latency percentiles, and sqlserver's TPS as a fraction of PostgreSQL's (goal >= 0.5).

--cpu adds what a busy machine does not blur much: CPU time per transaction, in µs, of each server (sqlserver:
its one process, all threads; PostgreSQL: the postmaster, its live children and the children it reaped --
backends, checkpointer, WAL writer) and of the pgbench client, read from /proc around each run; and
sqlserver's context switches per transaction (all its threads, voluntary + involuntary).

--base REF: A/B against another version of sqlserver: `git archive REF src` is run from it (PYTHONPATH)
beside this tree's, same data, and within each round the three servers (PostgreSQL, REF, this tree)
take turns, the order reversed every other round, so that all see the same background load.

Needs root (runuser) and the postgresql-15 package. Figures from a shared machine vary by 10-20%; the
servers alternate within a round so that both see the same background load.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from lpbench.servers import ManagedProcess, free_port

PGBIN = Path("/usr/lib/postgresql/15/bin")
SQL_READY = re.compile(r"sqlserver ready on \S+:\d+")
PG_READY = re.compile(r"database system is ready to accept connections")
WORKLOADS = {"select-only": ["-S"], "tpcb-like": []}


@dataclass
class Target:
    name: str  # "postgres" or "sqlserver/<policy>"
    port: int
    pid: int


@dataclass
class Result:
    tps: float
    p50_ms: float
    p99_ms: float
    failed: int
    command: str
    server_us: float = 0.0  # server CPU per transaction (µs)
    client_us: float = 0.0  # pgbench CPU per transaction (µs)
    switches: float = 0.0  # sqlserver's context switches per transaction (0 for PostgreSQL)


_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()  # fields from 3 (state) on


def tree_cpu_s(root: int) -> float:
    """CPU seconds of `root`, its live descendants, and the children it has reaped (cutime/cstime)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parents.setdefault(int(_stat_fields(int(entry))[1]), []).append(int(entry))
            except (OSError, IndexError):
                pass  # exited meanwhile
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        try:
            f = _stat_fields(pid)
        except OSError:
            continue
        # utime, stime, cutime, cstime are fields 14-17 (index 11-14 here)
        total += sum(int(x) for x in f[11:15]) / _TICK
        todo.extend(parents.get(pid, []))
    return total


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def pgbench_path() -> str:
    found = shutil.which("pgbench") or str(PGBIN / "pgbench")
    if not Path(found).exists():
        sys.exit("pgbench is not installed (Debian 12: apt-get install postgresql-15)")
    return found


@contextmanager
def postgres(work: Path) -> Iterator[Target]:
    """A fresh PostgreSQL 15 cluster as user postgres (fsync on, trust auth) on a free port."""
    if os.geteuid() != 0:
        sys.exit("running PostgreSQL as user postgres needs root (runuser)")
    data, port = work / "pgdata", free_port()
    os.chmod(work, 0o777)
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(PGBIN / "initdb"), "-D", str(data), "-A", "trust",
         "-U", "postgres"],
        check=True, capture_output=True,
    )  # fmt: skip
    proc = ManagedProcess(
        ["runuser", "-u", "postgres", "--", str(PGBIN / "postgres"), "-D", str(data), "-p", str(port),
         "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={work}"],
        PG_READY, work / "postgres.log",
    )  # fmt: skip
    proc.start()
    try:
        assert proc.proc is not None
        yield Target("postgres", port, proc.proc.pid)
    finally:
        proc.stop()


def switches(pid: int) -> int:
    """Context switches so far of every thread of `pid` (voluntary and involuntary)."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/status") as f:
                total += sum(int(line.split()[1]) for line in f if "ctxt_switches" in line)
        except OSError:
            pass  # the thread exited meanwhile
    return total


def export_source(ref: str, dest: Path) -> Path:
    """`git archive REF src` of this repository into dest; returns the src directory."""
    root = Path(__file__).resolve().parents[1]
    dest.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", ref, "src"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest / "src"


@contextmanager
def sqlserver(
    work: Path,
    *args: str,
    wrapper: list[str] | None = None,
    livepatch: bool = True,
    src: Path | None = None,
) -> Iterator[Target]:
    """`python -m sqlserver.cli` on a free port; with the agent listening unless livepatch=False
    (then --no-livepatch). wrapper: a command the server runs under (valgrind). src: run the
    sqlserver (and livepatch) found there instead of this tree's (PYTHONPATH)."""
    port = free_port()
    lp = (
        ["--livepatch-socket", str(work / f"agent-{port}.sock"), "--allow-unsigned"]
        if livepatch
        else ["--no-livepatch"]
    )
    argv = [*(wrapper or []), sys.executable, "-m", "sqlserver.cli", "--port", str(port),
            "--dir", str(work / f"sql-{port}"), *lp, *args]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(src)) if src is not None else None
    proc = ManagedProcess(
        argv, SQL_READY, work / f"sqlserver-{port}.log", ready_timeout_s=300, env=env
    )
    proc.start()
    try:
        assert proc.proc is not None
        yield Target(f"sqlserver/{'+'.join(args) or 'default'}", port, proc.proc.pid)
    finally:
        proc.stop()


def pgbench(
    port: int, *args: str, cwd: Path | None = None, timeout: float = 900, connect_timeout: int = 10
) -> str:
    cmd = [pgbench_path(), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", *args, "postgres"]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
        env=dict(os.environ, PGCONNECT_TIMEOUT=str(connect_timeout)),
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout}{done.stderr}")
    return done.stdout + done.stderr


def run_workload(target: Target, extra: list[str], args: argparse.Namespace, work: Path) -> Result:
    logdir = Path(tempfile.mkdtemp(prefix="pgb-", dir=work))
    os.chmod(logdir, 0o777)
    opts = [*extra, "-M", "prepared", "-c", str(args.clients), "-j", str(args.threads),
            "-T", str(args.duration)]  # fmt: skip
    ours = target.name != "postgres"
    server0, client0 = tree_cpu_s(target.pid), children_cpu_s()
    cs0 = switches(target.pid) if ours else 0
    out = pgbench(target.port, *opts, "-l", "--log-prefix", str(logdir / "tx"), cwd=logdir)
    client_s = children_cpu_s() - client0
    cs = switches(target.pid) - cs0 if ours else 0
    time.sleep(
        0.5
    )  # let PostgreSQL's backends exit and be reaped (their CPU moves to the postmaster)
    server_s = tree_cpu_s(target.pid) - server0
    tps = float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
    ntx = int(re.search(r"actually processed: (\d+)", out).group(1))  # type: ignore[union-attr]
    failed_m = re.search(r"number of failed transactions: (\d+)", out)
    latencies = sorted(
        int(line.split()[2]) for f in logdir.glob("tx*") for line in f.read_text().splitlines()
    )
    shutil.rmtree(logdir, ignore_errors=True)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] / 1000.0

    command = "pgbench " + " ".join(opts) + " -l postgres"
    failed = int(failed_m.group(1)) if failed_m else 0
    per_tx = 1e6 / max(1, ntx)
    return Result(
        tps,
        pct(0.50),
        pct(0.99),
        failed,
        command,
        server_s * per_tx,
        client_s * per_tx,
        cs * per_tx / 1e6,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per pgbench run")
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--policies", default="thread-per-connection,pool")
    ap.add_argument("--workloads", default="select-only,tpcb-like")
    ap.add_argument("--rounds", type=int, default=1, help="repeat and take medians")
    ap.add_argument(
        "--cpu",
        action="store_true",
        help="add server and pgbench CPU µs and sqlserver's context switches per transaction",
    )
    ap.add_argument("--base", help="a git ref: run its sqlserver too, taking turns (A/B)")
    ap.add_argument(
        "--server-args", default="", help="extra sqlserver options, e.g. '--pool-groups 1'"
    )
    args = ap.parse_args()
    workloads = [w for w in args.workloads.split(",") if w]
    unknown = [w for w in workloads if w not in WORKLOADS]
    if unknown:  # before minutes of runs, not after them
        ap.error(f"unknown workload {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    load = os.getloadavg()
    print(
        f"# sqlserver vs PostgreSQL 15 ({os.cpu_count()} CPUs, load average {load[0]:.1f} "
        f"{load[1]:.1f} {load[2]:.1f} at start; a shared machine)\n"
    )
    cpu_head, cpu_rule = (
        (" server CPU µs/tx | pgbench CPU µs/tx | sqlserver switches/tx |", "---|---|---|")
        if args.cpu
        else ("", "")
    )
    print(f"| server | workload | TPS | p50 ms | p99 ms | failed | TPS / PostgreSQL |{cpu_head}")
    print(f"|---|---|---|---|---|---|---|{cpu_rule}")
    commands: list[str] = []
    extra = args.server_args.split()
    with tempfile.TemporaryDirectory(prefix="sqlbench-") as tmp, ExitStack() as stack:
        work = Path(tmp)
        base_src = export_source(args.base, work / "base") if args.base else None
        pg = stack.enter_context(postgres(work))
        pgbench(pg.port, "-i", "-s", "1", "-q")
        for policy in [p for p in args.policies.split(",") if p]:
            with ExitStack() as servers:
                targets = [("pg", "PostgreSQL 15", pg)]
                if base_src is not None:
                    theirs = servers.enter_context(
                        sqlserver(work, "--policy", policy, *extra, src=base_src)
                    )
                    targets.append(("base", f"sqlserver {policy} at {args.base}", theirs))
                ours = servers.enter_context(sqlserver(work, "--policy", policy, *extra))
                targets.append(("ours", f"sqlserver {policy}", ours))
                for _key, _label, target in targets[1:]:
                    pgbench(target.port, "-i", "-s", "1", "-q")
                for workload in workloads:
                    got: dict[str, list[Result]] = {key: [] for key, _, _ in targets}
                    for rnd in range(args.rounds):
                        for key, _label, target in targets if rnd % 2 == 0 else targets[::-1]:
                            got[key].append(run_workload(target, WORKLOADS[workload], args, work))
                    commands.append(got["ours"][0].command)
                    pg_tps = statistics.median(r.tps for r in got["pg"])
                    for key, label, _target in targets:
                        rs = got[key]
                        tps = statistics.median(r.tps for r in rs)
                        cpu = (
                            f" {statistics.median(r.server_us for r in rs):.1f} "
                            f"| {statistics.median(r.client_us for r in rs):.1f} "
                            f"| {statistics.median(r.switches for r in rs):.2f} |"
                            if args.cpu
                            else ""
                        )
                        print(
                            f"| {label} | {workload} | {tps:,.0f} "
                            f"| {statistics.median(r.p50_ms for r in rs):.2f} "
                            f"| {statistics.median(r.p99_ms for r in rs):.2f} "
                            f"| {sum(r.failed for r in rs)} | {tps / pg_tps:.2f} |{cpu}",
                            flush=True,
                        )
    print("\ncommands (both servers, after pgbench -i -s 1 -q):")
    for cmd in dict.fromkeys(commands):
        print(f"    {cmd}")


if __name__ == "__main__":
    main()
