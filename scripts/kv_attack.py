"""Attacks on kvserver (issue 10): measure the hardening goals, or fuzz for longer than CI does.

    .venv/bin/python scripts/kv_attack.py measure [--servers kv redis] [--args 500000]
                                          [--clients 200] [--client-args 5000] [--seconds 5]
                                          [--rounds 5] [--keys 2000000]
    .venv/bin/python scripts/kv_attack.py fuzz [--seconds 300] [--seed 1]

`measure` starts each server (kvserver as deployed for live patching: runtime on, agent listening;
redis-server 7 without persistence, the reference) and prints a Markdown table of:
- a bystander's PING latency (p50, p99, max over --seconds of back-to-back PINGs from a separate
  process) with no attack, while one client trickles arguments into a request with --args arguments
  pending (`*1048576`, then `$1 x` elements, a few bytes per send, one send per millisecond), and while
  --clients clients do the same with --client-args pending each (each sends a piece every 10 ms).
  Goal: p99 <= 2 ms under both attacks;
- KEYS with `a*a*...*b` (20 stars) against a 40-byte key: the round trip (median of 50) and the
  matcher alone in-process (median of 1000). Goal: < 1 ms;
- RSS before, at the peak and after 5 rounds of 100 clients each sending half of a 1 MB value and
  closing, and after the trickle attack's clients leave. Goal: after within 25% of before;
- with --keys (2,000,000) keys: KEYS *1*2* alone, and the time from a SIGTERM sent while the next KEYS
  runs to the server's exit (a fresh server; it does not wait for KEYS to finish).
`fuzz` runs tests/kvserver/test_attacks.py's kinds of input for --seconds against one kvserver:
near-miss requests cut into random pieces, random glob patterns (KEYS/SCAN MATCH, bounded per
command), trickled requests abandoned half way; it checks every reply parses, at most one protocol
error per connection, a bystander is served, and no traceback reaches the server's log.

The attackers and the prober run in processes of their own (a Python thread's GIL would add its own
waits to the latencies). Figures from a shared machine: note its load (printed first).
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing as mp
import os
import random
import select
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from kv_common import Running, kvserver_with_agent, machine_note, redis_server  # noqa: E402
from kvserver.resp import ReplyParser, encode_command  # noqa: E402
from kvserver.types.glob import compile_glob  # noqa: E402

ELEMENT = b"$1\r\nx\r\n"
PIECES = [ELEMENT[:2], ELEMENT[2:5], ELEMENT[5:]]
PING = b"*1\r\n$4\r\nPING\r\n"
PATHOLOGICAL = b"a*" * 20 + b"b"


def connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def command(s: socket.socket, *args: bytes | str | int) -> object:
    """One request, one decoded reply (blocking)."""
    s.sendall(encode_command(*args))
    parser = ReplyParser(use_hiredis=True)  # fast: KEYS replies hold 100,000s of keys
    while True:
        chunk = s.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        parser.feed(chunk)
        replies = parser.replies()
        if replies:
            return replies[0]


def tcp_state(port: int) -> tuple[int, int]:
    """(bytes sent to the server on 127.0.0.1:port that it has not read yet, its established
    connections), from /proc/net/tcp: the same account for kvserver and redis-server."""
    unread = established = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = (
            int(fields[1].split(":")[1], 16),
            int(fields[2].split(":")[1], 16),
            fields[3],
        )
        tx, rx = (int(x, 16) for x in fields[4].split(":"))
        if local == port and state == "01":
            unread += rx
            established += 1
        elif remote == port:
            unread += tx  # still in the client's send queue
    return unread, established


def wait_read(port: int) -> None:
    """Until the server has read everything sent to it (polling the kernel's account)."""
    while tcp_state(port)[0]:
        time.sleep(0.01)


def wait_connections(port: int, count: int) -> None:
    while tcp_state(port)[1] > count:
        time.sleep(0.01)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


# ----------------------------------------------------------------------------------- the attacks
def trickle(port: int, clients: int, pending: int, interval_s: float, ready: mp.Event,
            stop: mp.Event) -> None:  # fmt: skip
    """Attacker process: `clients` connections, each with a request of `pending` arguments pending,
    then one piece of one more argument per connection every interval_s until stop is set."""
    socks = [connect(port) for _ in range(clients)]
    preamble = b"*1048576\r\n" + ELEMENT * pending
    for s in socks:
        s.sendall(preamble)
    wait_read(port)
    for s in socks:
        s.setblocking(False)
    ready.set()
    i = 0
    while not stop.is_set():
        piece = PIECES[i % 3]
        for s in socks:
            try:
                s.send(piece)
            except BlockingIOError:
                pass  # the server is not reading: that is what is being measured
        i += 1
        time.sleep(interval_s)
    for s in socks:
        s.close()


def probe(port: int, seconds: float, out: mp.Queue) -> None:
    """Prober process: back-to-back PINGs for `seconds`; puts the latencies (ms) on out."""
    s = connect(port)
    latencies = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.perf_counter()
        s.sendall(PING)
        got = b""
        while not got.endswith(b"\r\n"):
            got += s.recv(64)
        latencies.append((time.perf_counter() - t0) * 1000)
    s.close()
    out.put(latencies)


def ping_under(port: int, seconds: float, attack: tuple[int, int, float] | None) -> list[float]:
    """PING latencies while an attack (clients, pending arguments, interval) runs, or none."""
    ctx = mp.get_context("fork")
    ready, stop = ctx.Event(), ctx.Event()
    attacker = None
    if attack is not None:
        attacker = ctx.Process(target=trickle, args=(port, *attack, ready, stop))
        attacker.start()
        if not ready.wait(600):
            attacker.kill()
            raise RuntimeError("the attack did not get going in 600 s")
    results: mp.Queue = ctx.Queue()
    prober = ctx.Process(target=probe, args=(port, seconds, results))
    prober.start()
    latencies: list[float] = results.get(timeout=seconds + 600)
    prober.join()
    stop.set()
    if attacker is not None:
        attacker.join(60)
    return latencies


def summary(latencies: list[float]) -> str:
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return f"{q[49]:.2f} / {q[98]:.2f} / {max(latencies):.1f} ({len(latencies)} PINGs)"


def half_values(port: int, rounds: int, pid: int) -> tuple[float, float, float]:
    """Rounds of 100 clients each sending half of a 1 MB value, then closing. RSS before, peak, after."""
    half = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048576\r\n" + b"x" * 524_288
    before = rss_mb(pid)
    peak = before
    for _ in range(rounds):
        socks = [connect(port) for _ in range(100)]
        for s in socks:
            s.sendall(half)
        wait_read(port)
        peak = max(peak, rss_mb(pid))
        for s in socks:
            s.close()
        wait_connections(port, 0)
    time.sleep(0.5)  # a few cron ticks: where kvserver returns freed memory (kvserver.memory)
    return before, peak, rss_mb(pid)


def glob_times(port: int) -> tuple[float, float]:
    """(KEYS round trip ms, matcher alone µs) for the 20-star pattern against a 40-byte key."""
    with connect(port) as s:
        command(s, "FLUSHALL")
        command(s, "SET", b"a" * 40, "1")
        trips = []
        for _ in range(50):
            t0 = time.perf_counter()
            assert command(s, "KEYS", PATHOLOGICAL) == []
            trips.append((time.perf_counter() - t0) * 1000)
    match = compile_glob(PATHOLOGICAL).fullmatch
    alone = []
    for _ in range(1000):
        t0 = time.perf_counter()
        match(b"a" * 40)
        alone.append((time.perf_counter() - t0) * 1e6)
    return statistics.median(trips), statistics.median(alone)


def sigterm_during_keys(srv: Running, keys: int) -> tuple[float, float | None]:
    """(KEYS over `keys` keys alone, s; time from a SIGTERM sent during the next KEYS to the exit, s,
    or None if KEYS ended before the server had spent 0.2 s of CPU on it)."""
    proc = srv.process.proc
    assert proc is not None
    with connect(srv.port) as s:
        s.settimeout(900)
        for start in range(0, keys, 1000):  # MSET: redis-server refuses DEBUG POPULATE by default
            pairs = [b"key:%d" % i for i in range(start, min(start + 1000, keys)) for _ in (0, 1)]
            s.sendall(encode_command("MSET", *pairs))
        parser, replies = ReplyParser(), 0
        while replies < len(range(0, keys, 1000)):
            parser.feed(s.recv(65536))
            replies += len(parser.replies())
        t0 = time.monotonic()
        command(s, "KEYS", "*1*2*")
        keys_s = time.monotonic() - t0
        s.sendall(encode_command("KEYS", "*1*2*"))
        before = cpu_s(proc.pid)
        while cpu_s(proc.pid) - before < 0.2:  # it is busy with KEYS (nothing else runs there)
            if select.select([s], [], [], 0.001)[0]:
                return keys_s, None  # the reply came first: KEYS was too short to interrupt
        t1 = time.monotonic()
        proc.terminate()
        proc.wait(900)
        return keys_s, time.monotonic() - t1


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------------------------- commands
@contextmanager
def server(name: str) -> Iterator[Running]:
    with kvserver_with_agent() if name == "kv" else redis_server() as running:
        yield running


def measure(args: argparse.Namespace) -> None:
    print(f"# kvserver under attack ({machine_note()})\n")
    print("| server | what | figure | goal |")
    print("|---|---|---|---|")
    for name in args.servers:
        with server(name) as srv:
            port = srv.port
            pid = srv.process.proc.pid  # type: ignore[union-attr]
            label = "kvserver" if name == "kv" else "redis-server"
            lat = ping_under(port, args.seconds, None)
            print(f"| {label} | PING p50 / p99 / max ms, no attack | {summary(lat)} | |")
            rss0 = rss_mb(pid)
            lat = ping_under(port, args.seconds, (1, args.args, 0.001))
            print(f"| {label} | PING ms, 1 client trickling, {args.args:,} arguments pending "
                  f"| {summary(lat)} | p99 <= 2 |")  # fmt: skip
            lat = ping_under(port, args.seconds, (args.clients, args.client_args, 0.01))
            print(f"| {label} | PING ms, {args.clients} clients trickling, {args.client_args:,} "
                  f"arguments pending each | {summary(lat)} | p99 <= 2 |")  # fmt: skip
            wait_connections(port, 0)
            time.sleep(0.5)  # a few cron ticks, as above
            print(f"| {label} | RSS MB before the trickle attacks / after their clients left "
                  f"| {rss0:.0f} / {rss_mb(pid):.0f} | within 25% |")  # fmt: skip
            trip, alone = glob_times(port)
            print(f"| {label} | KEYS (a*)x20 b vs a 40-byte key: round trip ms | {trip:.3f} "
                  f"| < 1 ms |")  # fmt: skip
            if name == "kv":
                print(f"| {label} | the same pattern, kvserver's matcher alone (in-process), µs "
                      f"| {alone:.1f} | |")  # fmt: skip
            before, peak, after = half_values(port, args.rounds, pid)
            print(f"| {label} | RSS MB before / peak / after {args.rounds} rounds of 100 half-sent "
                  f"1 MB values | {before:.0f} / {peak:.0f} / {after:.0f} | within 25% |")  # fmt: skip
        if args.keys:
            with server(name) as srv:
                keys_s, exit_s = sigterm_during_keys(srv, args.keys)
            shown = f"{exit_s:.2f}" if exit_s is not None else "(KEYS ended first)"
            print(f"| {label} | KEYS *1*2* over {args.keys:,} keys, s / exit after a SIGTERM sent "
                  f"during it, s | {keys_s:.2f} / {shown} | exit not waiting for KEYS |")  # fmt: skip


def fuzz(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    safe = [[b"PING"], [b"ECHO", b"hi"], [b"SET", b"k", b"v"], [b"GET", b"k"], [b"DEL", b"k"],
            [b"HSET", b"h", b"f", b"v"], [b"RPUSH", b"l", b"a"], [b"MGET", b"k", b"l"],
            [b"SCAN", b"0", b"MATCH", b"*k*"], [b"KEYS", b"[a-k]*"]]  # fmt: skip
    near_miss = [b"*", b"$", b"0", b"1", b"9", b"-", b"+", b" ", b"\r", b"\n", b'"', b"\x00", b"x"]
    glob_alphabet = b"ab*?[]^-\\"
    counts = {"requests": 0, "globs": 0, "trickles": 0, "protocol errors": 0}
    with kvserver_with_agent() as srv:
        port = srv.port
        bystander = connect(port)
        for i in range(1000):
            command(bystander, "SET", b"key:%d" % i, "v")
        command(bystander, "SET", b"a" * 40, "v")
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            kind = rng.random()
            if kind < 0.6:
                data = bytearray(b"".join(encode_command(*rng.choice(safe))
                                          for _ in range(rng.randint(1, 8))))  # fmt: skip
                for _ in range(rng.choice([0, 1, 2, 3])):
                    at = rng.randrange(len(data) + 1)
                    data[at : at + rng.randint(0, 2)] = rng.choice(near_miss)
                counts["protocol errors"] += exchange(port, bytes(data), rng)
                counts["requests"] += 1
            elif kind < 0.9:
                pattern = bytes(rng.choice(glob_alphabet) for _ in range(rng.randint(1, 300)))
                with connect(port) as s:
                    s.settimeout(5)  # a pattern that takes longer is a failure (socket.timeout)
                    command(s, rng.choice(["KEYS", "SCAN"]), *(
                        [pattern] if rng.random() < 0.5 else ["0", "MATCH", pattern, "COUNT", "2000"]
                    ))  # fmt: skip
                counts["globs"] += 1
            else:
                s = connect(port)
                head = b"*%d\r\n" % rng.randint(2, 1 << 20) + ELEMENT * rng.randint(0, 20_000)
                pieces = [PIECES[i % 3] for i in range(rng.randint(0, 50))]  # in order: valid
                try:
                    s.sendall(head)
                    for piece in pieces:
                        s.sendall(piece)
                except OSError as exc:  # a valid partial request must not be refused
                    sys.exit(f"the server closed a trickling client ({exc}): {head[:30]!r}")
                s.close()
                counts["trickles"] += 1
            assert command(bystander, "PING") == b"PONG"  # hiredis: status replies as bytes
        log = srv.process.log_path.read_text(errors="replace")
    if "Traceback" in log:
        sys.exit("a traceback reached the server's log:\n" + log[-5000:])
    print("ok: " + ", ".join(f"{n} {k}" for k, n in counts.items()) + "; no traceback logged")


def exchange(port: int, data: bytes, rng: random.Random) -> int:
    """Send data in random pieces, half-close, read every reply; returns the protocol errors seen."""
    s = connect(port)
    s.settimeout(10)
    cuts = sorted({0, len(data), *(rng.randrange(len(data) + 1) for _ in range(rng.randint(0, 6)))})
    try:
        for a, b in itertools.pairwise(cuts):
            s.sendall(data[a:b])
        s.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # closed first: a protocol error, whose reply is still there to read
    parser = ReplyParser()
    replies: list[object] = []
    while True:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        parser.feed(chunk)
        replies.extend(parser.replies())
    s.close()
    errors = [str(r) for r in replies if type(r).__name__ == "ErrorReply"]
    if any("internal error" in e for e in errors):
        sys.exit(f"internal error for {data!r}: {errors}")
    protocol = sum("Protocol error" in e for e in errors)
    if protocol > 1:
        sys.exit(f"{protocol} protocol errors on one connection for {data!r}")
    return protocol


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="what", required=True)
    m = sub.add_parser("measure", help="measure the goals (PING under attack, glob, RSS)")
    m.add_argument("--servers", nargs="+", choices=["kv", "redis"], default=["kv", "redis"])
    m.add_argument("--args", type=int, default=500_000, help="pending arguments, one attacker")
    m.add_argument("--clients", type=int, default=200, help="attackers in the second attack")
    m.add_argument("--client-args", type=int, default=5_000, help="pending arguments each")
    m.add_argument("--seconds", type=float, default=5.0, help="PING probing per attack")
    m.add_argument("--rounds", type=int, default=5, help="rounds of 100 half-sent 1 MB values")
    m.add_argument(
        "--keys", type=int, default=2_000_000, help="keys for SIGTERM during KEYS; 0: skip"
    )
    f = sub.add_parser("fuzz", help="fuzz a kvserver for a while")
    f.add_argument("--seconds", type=float, default=300.0)
    f.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if args.what == "measure":
        measure(args)
    else:
        fuzz(args)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
