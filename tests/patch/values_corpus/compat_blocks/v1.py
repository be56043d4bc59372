"""Module-level compatibility blocks (waitress's compat module, `if os.name == "posix": class trigger`,
h11's version checks): if/try blocks that only bind names."""

import sys

PY3 = sys.version_info[0] == 3

if PY3:

    def tostr(s):
        if isinstance(s, bytes):
            s = s.decode("latin-1")
        return s

    class Trigger:
        kind = "pipe"

        def pull(self):
            return "pull v1"

        @staticmethod
        def name():
            return "trigger"

else:

    def tostr(s):
        return s


try:
    import json as _json
except ImportError:
    _json = None

try:
    MAXINT = sys.maxint
except AttributeError:
    MAXINT = sys.maxsize

try:
    from Queue import Queue
except ImportError:
    from queue import Queue  # noqa: F401 - a compat name

CALLBACKS = [tostr]  # a holder of the function, taken at import
LIVE = Trigger()


def render(x):
    return "<" + tostr(x) + ">"
