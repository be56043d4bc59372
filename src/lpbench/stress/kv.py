"""kvserver under `livepatch stress`: the stress patch, and a blocking RESP client that tells versions apart.

The patch (built from the INSTALLED kvserver, like lpbench's built-in patch, by inserting lines with
lpbench.patches.insert_into, then `livepatch diff`, category thread-local so both methods may apply it):
    GET's handler:  GET stress:version answers "v2" (version 1 answers the stored value, "v1")
    SET's handler:  a harmless statement, so every write of the load runs patched code while patched
Planted failures (`--plant`, the checker's self-test; each must make stress fail, naming it):
    wrong-write     SET of a stress key stores the value with "!" appended (read-back and lost writes)
    stale-version   GET stress:version answers "v1" or "v2" by the clock's parity (wrong-version replies)
    stall-server    the first patched GET stress:version sleeps STALL_S in the event loop, once per server
                    process (hung requests, each recorded with its time and the verdict "blocked")

Concurrency: one KvClient per client thread.
"""

from __future__ import annotations

import socket
from pathlib import Path

from lpbench.codec import ReplyParser, encode_command, is_error
from lpbench.patches import Insertion, copy_package, diff, insert_into, installed_package
from lpbench.stress.common import RequestFailed

PROBE_KEY = b"stress:version"
MARK = "# lpbench stress patch"
STRINGS = "kvserver/commands/strings.py"
PLANTS: tuple[str, ...] = ("wrong-write", "stale-version", "stall-server")
STALL_S = 4.0  # stall-server: the event loop sleeps this long (the self-test waits 1 s)


def _get_lines(plant: str | None) -> list[str]:
    answer = 'b"v2" if ctx.now_ms % 2 else b"v1"' if plant == "stale-version" else 'b"v2"'
    stall = []
    if plant == "stall-server":  # once per server process: the module's globals outlive the patch
        stall = [
            '    if not globals().get("_lpbench_stalled"):',
            '        globals()["_lpbench_stalled"] = True',
            f'        __import__("time").sleep({STALL_S})',
        ]
    return [f"if argv[1] == {PROBE_KEY!r}:  {MARK}", *stall, f"    return {answer}"]


def _set_lines(plant: str | None) -> list[str]:
    if plant == "wrong-write":
        return [
            f'if len(argv) == 3 and argv[1].startswith(b"stress:w:"):  {MARK}: planted bug',
            '    ctx.db.store(argv[1], argv[2] + b"!")',
            "    return OK",
        ]
    return [f"_lpbench_stress = 2  {MARK}"]


def _indented(lines: list[str]) -> Insertion:
    def lines_for(indent: str, params: list[str]) -> list[str]:
        if params[:2] != ["ctx", "argv"]:
            raise RuntimeError(f"unexpected handler parameters {params}: update lpbench.stress.kv")
        return [indent + line for line in lines]

    return lines_for


class KvTarget:
    name = "kv"
    plants = PLANTS

    def monotonic(self, method: str) -> bool:
        return True  # one event-loop thread serves every connection

    def build_patch(self, workdir: Path, plant: str | None = None) -> Path:
        package = installed_package()
        old = copy_package(package, workdir / "old")
        new = copy_package(package, workdir / "new")
        path = new / STRINGS
        source = path.read_text(encoding="utf-8")
        source, got = insert_into(source, {"get_command"}, _indented(_get_lines(plant)))
        source, sets = insert_into(source, {"set_command"}, _indented(_set_lines(plant)))
        if got != ["get_command"] or sets != ["set_command"]:
            raise RuntimeError(f"cannot build the stress patch: no get/set handlers in {STRINGS}")
        path.write_text(source, encoding="utf-8")
        out = workdir / ("stress.lpatch" if plant is None else f"stress-{plant}.lpatch")
        diff(old, new, package.name, out)
        return out

    def connect(self, host: str, port: int, timeout_s: float) -> KvClient:
        return KvClient(host, port, timeout_s)

    def prepare(self, host: str, port: int, timeout_s: float) -> None:
        with KvClient(host, port, timeout_s) as c:
            c.write(PROBE_KEY.decode(), b"v1")


class KvClient:
    """One blocking connection. Transport problems raise OSError (socket.timeout: the deadline)."""

    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.parser = ReplyParser()

    def __enter__(self) -> KvClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def call(self, *args: bytes) -> object:
        self.sock.sendall(encode_command(*args))
        while True:
            replies = self.parser.replies()
            if replies:
                if is_error(replies[0]):
                    raise RequestFailed(f"{args[0].decode()} answered {replies[0]}")
                return replies[0]
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionResetError("the server closed the connection")
            self.parser.feed(data)

    def write(self, key: str, value: bytes) -> None:
        reply = self.call(b"SET", key.encode(), value)
        if reply != "OK":
            raise RequestFailed(f"SET {key} answered {reply!r}")

    def read(self, key: str) -> bytes | None:
        reply = self.call(b"GET", key.encode())
        if reply is not None and not isinstance(reply, bytes):
            raise RequestFailed(f"GET {key} answered {reply!r}")
        return reply

    def read_many(self, keys: list[str]) -> list[bytes | None]:
        reply = self.call(b"MGET", *(k.encode() for k in keys))
        if not isinstance(reply, list):
            raise RequestFailed(f"MGET answered {reply!r}")
        return reply

    def probe(self) -> int:
        reply = self.call(b"GET", PROBE_KEY)
        if reply == b"v1":
            return 1
        if reply == b"v2":
            return 2
        raise RequestFailed(
            f"GET {PROBE_KEY.decode()} answered {reply!r}, neither version's answer"
        )
