"""Request handlers: the patchable logic."""

import threading

_release = threading.Event()


def version() -> str:
    return "v1"


def greet(name: str) -> str:
    _release.wait(3600)  # the bad patch: hangs (the tests end it with a RELEASE request)
    return f"hello {name} (v2, late)"


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
