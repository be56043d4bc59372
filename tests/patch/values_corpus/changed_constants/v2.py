import re

VERSION = "1.1"
FIRST_LINE = re.compile(rb"^([A-Za-z]+) (\S+) HTTP/(\d\.\d)$")
HOP_BY_HOP = frozenset(("connection", "keep-alive", "upgrade"))
RENAME = {"CONTENT_LENGTH": "CONTENT_LENGTH", "CONNECTION": "HTTP_CONNECTION"}


def parse(line):
    m = FIRST_LINE.match(line)
    return m.groups() if m else None


def is_hop(header):
    return header.lower() in HOP_BY_HOP


def environ_key(name):
    return RENAME.get(name, "HTTP_" + name)


def server():
    return "demo/" + VERSION
