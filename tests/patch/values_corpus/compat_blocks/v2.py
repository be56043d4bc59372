"""Module-level compatibility blocks (waitress's compat module, `if os.name == "posix": class trigger`,
h11's version checks): if/try blocks that only bind names."""

import sys

PY3 = sys.version_info[0] == 3

if PY3:

    def tostr(s, encoding="latin-1"):
        if isinstance(s, bytes):
            s = s.decode(encoding)
        return s.strip()

    class Trigger:
        kind = "pipe"

        def pull(self):
            return "pull v2"

        def close(self):
            return "closed"

        @staticmethod
        def name():
            return "trigger v2"

else:

    def tostr(s, encoding="latin-1"):
        return s


try:
    import json as _json
except ImportError:
    _json = None

try:
    MAXINT = sys.maxint
except AttributeError:
    MAXINT = sys.maxsize

from queue import Queue  # noqa: E402, F401 - a compat name

if hasattr(sys, "maxsize"):
    BIG = sys.maxsize

    def tobytes(s):
        return s.encode("latin-1")


CALLBACKS = [tostr]  # a holder of the function, taken at import
LIVE = Trigger()


def render(x):
    return "<" + tostr(x) + ">"
