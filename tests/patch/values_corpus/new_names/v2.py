"""A command module: errors are strings, handlers in a table."""

__all__ = ["ERR_ARITY", "MAX_ARGS", "handle"]

ERR_SYNTAX = "ERR syntax error"
ERR_ARITY = "ERR wrong number of arguments"
MAX_ARGS = 2


def ping(args):
    return "PONG"


def echo(args):
    return " ".join(args)


HANDLERS = {"ping": ping}
EXTRA_HANDLERS = {"echo": echo}


def handle(name, args):
    if len(args) > MAX_ARGS:
        return ERR_ARITY
    handler = HANDLERS.get(name) or EXTRA_HANDLERS.get(name)
    if handler is None:
        return ERR_SYNTAX
    return handler(args)
