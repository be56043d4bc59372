"""Request handlers: the patchable logic."""

import threading

_release = threading.Event()
# new module-level state the differ cannot patch (not a plain `NAME = value`: an unpacking): the
# patch's pre_patch hook sets it on the live module
PREFIX, SEPARATOR = "hey", " "


def version() -> str:
    return "v3"


def greet(name: str) -> str:
    return f"{PREFIX}{SEPARATOR}{name} ({version()})"


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
