"""Request handlers: the patchable logic."""

import threading

_release = threading.Event()
PREFIX = "hey"  # new module-level state: the patch's post_patch hook sets it on the live module


def version() -> str:
    return "v3"


def greet(name: str) -> str:
    return f"{PREFIX} {name} ({version()})"


def handle(line: str) -> str:
    cmd, _, arg = line.partition(" ")
    if cmd == "GREET":
        return greet(arg)
    if cmd == "PING":
        return "PONG"
    if cmd == "HOLD":  # a long request: no quiescence point until RELEASE (or the timeout) comes
        _release.clear()
        return "HELD" if _release.wait(float(arg)) else "HOLD TIMED OUT"
    if cmd == "RELEASE":
        _release.set()
        return "RELEASED"
    return f"ERR unknown command {cmd!r}"
