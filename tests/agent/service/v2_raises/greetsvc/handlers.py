"""Request handlers: the patchable logic."""


def version() -> str:
    return "v1"


def greet(name: str) -> str:
    raise RuntimeError(f"broken greeting for {name}")


def handle(line: str) -> str:
    cmd, _, arg = line.partition(" ")
    if cmd == "GREET":
        return greet(arg)
    if cmd == "PING":
        return "PONG"
    return f"ERR unknown command {cmd!r}"
