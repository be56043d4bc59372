"""Smoke test of a livepatch installed WITHOUT extras: the library a server embeds works on its own.

Imports livepatch, runs an Agent with a trusted key in this process, applies a signed one-function patch
to a module of its own over the control socket (the `livepatch` command), reverts it, and checks that the
commands of the extras name the extra to install. Exit 0 when all holds."""

import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import livepatch

tmp = Path(tempfile.mkdtemp(prefix="lp-minimal-"))
for v, body in (("v1", "return 1"), ("v2", "return 2")):
    (tmp / v / "smokepkg").mkdir(parents=True)
    (tmp / v / "smokepkg" / "__init__.py").write_text("")
    (tmp / v / "smokepkg" / "core.py").write_text(f"def answer():\n    {body}\n")
sys.path.insert(0, str(tmp / "v1"))
from smokepkg import core  # noqa: E402

bindir = Path(sys.executable).parent
lp = str(bindir / "livepatch")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([lp, *args], capture_output=True, text=True, timeout=60)


assert run("keygen", "--out", str(tmp / "keys")).returncode == 0
p = run(
    "diff",
    str(tmp / "v1"),
    str(tmp / "v2"),
    "--package",
    "smokepkg",
    "--key",
    str(tmp / "keys" / "livepatch.key"),
    "--category",
    "thread-local",
    "-o",
    str(tmp / "p.lpatch"),
)
assert p.returncode == 0, p.stdout + p.stderr
stop = threading.Event()


def worker() -> None:
    with livepatch.managed_thread(role="worker"):
        while not stop.is_set():
            livepatch.quiescence_point()
            stop.wait(0.001)


t = threading.Thread(target=worker)
t.start()
sock = str(tmp / "lp.sock")
with livepatch.Agent(socket_path=sock, trusted_keys=[tmp / "keys" / "livepatch.pub"]):
    p = run("apply", str(tmp / "p.lpatch"), "--socket", sock, "--method", "local")
    assert p.returncode == 0 and core.answer() == 2, p.stdout + p.stderr
    p = run("revert", "--socket", sock)
    assert p.returncode == 0 and core.answer() == 1, p.stdout + p.stderr
stop.set()
t.join()
for argv, extra in ((["serve", "kv"], "kv"), (["bench"], "bench"), (["demo"], "bench")):
    p = run(*argv)  # without the extra, the command stops at once, naming it
    assert p.returncode != 0 and f"pip install 'livepatch[{extra}]'" in p.stderr, (argv, p.stderr)
    print(f"livepatch {' '.join(argv)}: {p.stderr.strip()}")
print("minimal install: import, Agent, apply, revert and the extras' messages all work")
