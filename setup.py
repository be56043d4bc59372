"""The one thing pyproject.toml cannot say without an experimental table: the C fast paths.

kvserver._respfast is the request parser's fast path (src/kvserver/_respfast.c); sqlserver._pgfast
answers prepared SELECTs without the GIL (src/sqlserver/_pgfast.c, which needs no SQLite headers: it
finds SQLite's functions in the _sqlite3 module's library at run time). Both are optional: without a
C compiler the install still succeeds and the servers fall back to Python, with the same behaviour,
only slower.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "kvserver._respfast",
            sources=["src/kvserver/_respfast.c"],
            optional=True,
        ),
        Extension(
            "sqlserver._pgfast",
            sources=["src/sqlserver/_pgfast.c"],
            optional=True,
        ),
    ]
)
