"""Request handlers: the patchable logic."""


def version() -> str:
    return "v1"


def greet(name: str) -> str:
    return f"hello {name} ({version()})"


def handle(line: str) -> str:
    cmd, _, arg = line.partition(" ")
    if cmd == "GREET":
        return greet(arg)
    if cmd == "PING":
        return "PONG"
    return f"ERR unknown command {cmd!r}"
