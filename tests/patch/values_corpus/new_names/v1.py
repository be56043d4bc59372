"""A command module: errors are strings, handlers in a table."""

__all__ = ["handle"]

ERR_SYNTAX = "ERR syntax error"


def ping(args):
    return "PONG"


HANDLERS = {"ping": ping}


def handle(name, args):
    handler = HANDLERS.get(name)
    if handler is None:
        return ERR_SYNTAX
    return handler(args)
