"""A request parser with __slots__ (the shape of kvserver's parsers), held by connections."""

import threading


class Parser:
    __slots__ = ("buf", "limit", "lock", "parsed")

    def __init__(self):
        self.buf = []
        self.parsed = 0
        self.limit = 1000
        self.lock = threading.Lock()

    def feed(self, data):
        with self.lock:
            if len(self.buf) >= self.limit:
                self.buf.clear()
            self.buf.append(data)
            self.parsed += 1
            return self.parsed


class Connection:
    __slots__ = ("name", "parser")

    def __init__(self, name):
        self.name = name
        self.parser = Parser()

    def handle(self, data):
        return f"{self.name}:{self.parser.feed(data)}/{self.parser.limit}"


LOCK = threading.Lock()
CONNECTIONS = [Connection("a"), Connection("b")]
BY_NAME = {c.name: c.parser for c in CONNECTIONS}
