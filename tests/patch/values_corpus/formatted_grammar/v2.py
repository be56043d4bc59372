"""A grammar built with str.format(**globals()) and `%` globals() (like h11's _abnf), and names bound
by a loop through globals() (like h11's sentinels)."""

import re

OWS = r"[ \t]{0,8}"
HEXDIG = r"[0-9A-Fa-f]"
chunk_size = r"({HEXDIG}){{1,20}}".format(**globals())
chunk_ext = r";.*"
chunk_header = r"(?P<chunk_size>{chunk_size})(?P<chunk_ext>{chunk_ext})?{OWS}\r\n".format(
    **globals()
)
CHUNK_HEADER_RE = re.compile(chunk_header.encode("ascii"))
ows_run = "(%(OWS)s)" % globals()  # noqa: UP031 - the `%` form is the point

sentinels = ["CLIENT", "SERVER"]
for _token in sentinels:
    globals()[_token] = _token.lower()

EVENT_TRANSITIONS = {"client": ("IDLE", "SEND_BODY", "DONE")}


def parse_chunk(data):
    m = CHUNK_HEADER_RE.fullmatch(data)
    return int(m.group("chunk_size"), 16) if m else None


def transitions(role):
    return EVENT_TRANSITIONS.get(role, ())
