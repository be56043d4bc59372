"""An optional fast path bound by a `try` block, and the values around it (kvserver b29989ec9d:
`HAVE_NATIVE = _native_parse is not None` right after the `try` that binds `_native_parse`)."""

SEPARATOR = ","  # read by the block below: staged before it

try:
    from json import dumps as _native_dumps
    from json import loads as _native_loads

    _native_join = SEPARATOR.join
except ImportError:  # pragma: no cover - json is always there
    _native_loads = None
    _native_dumps = None
    _native_join = None

# read what the block binds: staged after it
HAVE_NATIVE = _native_dumps is not None
FAST_PATHS = (_native_loads, _native_dumps, _native_join)


def parse(text):
    return ("v2", text, HAVE_NATIVE, _native_join(["a", "b"]), len(FAST_PATHS))
