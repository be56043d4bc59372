"""The data-changing update of docs/validated-updates.md ("A data-changing update"), built as an operator
builds it: kvserver v2 keeps every string that is a canonical 64-bit integer as a Python int (Redis's
"int" encoding: 28 bytes instead of 33 + its length, and INCR needs no parsing), and a transform hook
converts every existing value. Used by tests/mve and bench/mve_update.py.

v2 changes kvserver/keyspace.py only: `lookup` and `items` give ints back as their decimal bytes (every
command still sees bytes), `store` and `replace` pack. The transform must pack exactly the canonical
integers: b"007" or b"+5" packed as 7 and 5 would read back as b"7" and b"5" (the buggy variant does
that, and the comparison catches it at the first read of such a key).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import kvserver
from tests.support import livepatch_cli

SRC = Path(kvserver.__file__).resolve().parent

PACK = '''

def _pack(value: Any) -> Any:
    """A string that is a canonical 64-bit integer is kept as an int (v2's "int" encoding)."""
    if type(value) is bytes and 0 < len(value) <= 20 and 48 <= value[-1] <= 57:
        try:
            n = int(value)
        except ValueError:
            return value
        if -(1 << 63) <= n < (1 << 63) and b"%d" % n == value:
            return n
    return value
'''

# (old, new) text edits of kvserver/keyspace.py
EDITS = (
    (
        '''    """The live value of `key`, or None. An expired key is deleted on the way (lazy expiry)."""
        value = self._data.get(key)
        if value is None or not self._expires:
            return value
        when = self._expires.get(key)
        if when is not None and when <= now_ms:
            del self._data[key]
            del self._expires[key]
            return None
        return value
''',
        '''    """The live value of `key`, or None. An expired key is deleted on the way (lazy expiry)."""
        value = self._data.get(key)
        if value is None:
            return None
        if self._expires:
            when = self._expires.get(key)
            if when is not None and when <= now_ms:
                del self._data[key]
                del self._expires[key]
                return None
        if type(value) is int:
            return b"%d" % value
        return value
''',
    ),
    (
        '''        """Set `key` to `value`, replacing any TTL with `expire_at_ms` (None: no TTL)."""
        self._data[key] = value
''',
        '''        """Set `key` to `value`, replacing any TTL with `expire_at_ms` (None: no TTL)."""
        self._data[key] = _pack(value)
''',
    ),
    (
        '''        """Set the value of `key`, keeping its TTL (INCR, APPEND, SETRANGE; a new key has none)."""
        self._data[key] = value
''',
        '''        """Set the value of `key`, keeping its TTL (INCR, APPEND, SETRANGE; a new key has none)."""
        self._data[key] = _pack(value)
''',
    ),
    (
        """            value = data.get(key)
            if value is not None:
                yield key, value, expires.get(key)
""",
        """            value = data.get(key)
            if value is not None:
                yield key, b"%d" % value if type(value) is int else value, expires.get(key)
""",
    ),
    (
        """def type_name(value: Any) -> bytes:""",
        PACK.lstrip("\n")
        + """

def type_name(value: Any) -> bytes:""",
    ),
)

# The transform hook (runs in the follower on its copy of the data; in place under global quiescence
# with `livepatch apply`). Self-contained: it runs before the new code is swapped in.
HOOKS = """
def transform(ctx):
    from livepatch import mve

    server = mve.current().server  # kvserver's ServerState (kvserver.mve_support)
    packed = 0
    for db in server.databases:
        data = db._data
        for key, value in data.items():  # values change, keys do not: iteration is safe
            if type(value) is bytes and 0 < len(value) <= 20 and 48 <= value[-1] <= 57:
                try:
                    n = int(value)
                except ValueError:
                    continue
                if -(1 << 63) <= n < (1 << 63) and {CHECK}:
                    data[key] = n
                    packed += 1
    ctx.record(f"packed {packed} integer strings", None)
"""
GOOD_CHECK = 'b"%d" % n == value'
BUGGY_CHECK = "value.isdigit()"  # b"007" is digits, but not canonical: it would read back as b"7"


def _tree(work: Path, name: str, edits: tuple[tuple[str, str], ...]) -> Path:
    root = work / name
    shutil.copytree(SRC, root / "kvserver", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    f = root / "kvserver" / "keyspace.py"
    text = f.read_text()
    for old, new in edits:
        assert text.count(old) == 1, f"keyspace.py: {old[:60]!r} not found once (kvserver changed?)"
        text = text.replace(old, new)
    f.write_text(text)
    return root


def build(work: Path) -> dict[str, Path]:
    """`good` and `buggy` (.lpatch) of the int-encoding update, with `livepatch diff --category data`."""
    v1 = _tree(work, "intenc-v1", ())
    v2 = _tree(work, "intenc-v2", EDITS)
    out: dict[str, Path] = {}
    for name, check in (("good", GOOD_CHECK), ("buggy", BUGGY_CHECK)):
        hooks = work / f"intenc-{name}-hooks.py"
        hooks.write_text(HOOKS.replace("{CHECK}", check))
        target = work / f"intenc-{name}.lpatch"
        done = livepatch_cli(
            "diff", str(v1), str(v2), "--package", "kvserver", "--category", "data",
            "--hooks", str(hooks), "-o", str(target),
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        out[name] = target
    return out
