"""A request parser with __slots__ (the shape of kvserver's parsers), held by connections."""

import threading


class Parser:
    __slots__ = ("buf", "parsed")

    def __init__(self):
        self.buf = []
        self.parsed = 0

    def feed(self, data):
        self.buf.append(data)
        self.parsed += 1
        return self.parsed


class Connection:
    __slots__ = ("name", "parser")

    def __init__(self, name):
        self.name = name
        self.parser = Parser()

    def handle(self, data):
        return f"{self.name}:{self.parser.feed(data)}"


LOCK = threading.Lock()
CONNECTIONS = [Connection("a"), Connection("b")]
BY_NAME = {c.name: c.parser for c in CONNECTIONS}
