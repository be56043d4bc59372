"""An optional fast path bound by a `try` block, and the values around it (kvserver b29989ec9d:
`HAVE_NATIVE = _native_parse is not None` right after the `try` that binds `_native_parse`)."""

try:
    from json import loads as _native_loads
except ImportError:  # pragma: no cover - json is always there
    _native_loads = None


def parse(text):
    return ("v1", text)
