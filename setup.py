"""The one thing pyproject.toml cannot say without an experimental table: the C fast paths.

- kvserver._respfast: the request parser's fast path (src/kvserver/_respfast.c);
- kvserver._mverecord: a validated update's recording (src/kvserver/_mverecord.c);
- kvserver._dirtyfast: hot standby's dirty tracking per request (src/kvserver/_dirtyfast.c);
- livepatch._frozenheap: staging's heap searches over the objects gc.freeze() froze, in place
  (src/livepatch/_frozenheap.c; CPython 3.11 only, it reads the collector's internal layout);
- livepatch._handoff: the last park of a global transition rings the patcher once the GIL is free
  (src/livepatch/_handoff.c; CPython 3.11 only, it reads _thread.lock's layout);
- sqlserver._pgfast: prepared SELECTs answered without the GIL (src/sqlserver/_pgfast.c, which needs no
  SQLite headers: it finds SQLite's functions in the _sqlite3 module's library at run time).

All are optional: without a C compiler the install still succeeds and the servers fall back to hiredis
and pure Python, with the same behaviour, only slower (without _frozenheap, staging refuses a patch that
needs a heap search while objects are frozen, and says why; without _handoff, the patcher is woken
twice by the last park).
"""

from setuptools import Extension, setup

_SOURCES = {
    "kvserver._respfast": "src/kvserver/_respfast.c",
    "kvserver._mverecord": "src/kvserver/_mverecord.c",
    "kvserver._dirtyfast": "src/kvserver/_dirtyfast.c",
    "sqlserver._pgfast": "src/sqlserver/_pgfast.c",
    "livepatch._frozenheap": "src/livepatch/_frozenheap.c",
    "livepatch._handoff": "src/livepatch/_handoff.c",
}

setup(
    ext_modules=[Extension(name, sources=[src], optional=True) for name, src in _SOURCES.items()]
)
