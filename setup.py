"""The one thing pyproject.toml cannot say without an experimental table: kvserver's C fast path.

kvserver._respfast is the request parser's fast path (src/kvserver/_respfast.c). It is optional:
without a C compiler the install still succeeds and kvserver.resp falls back to hiredis and pure
Python, with the same behaviour, only slower. kvserver._dirtyfast (src/kvserver/_dirtyfast.c) is hot
standby's per-request dirty tracking, optional in the same way (kvserver.dirty falls back to Python).
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
            "kvserver._dirtyfast",
            sources=["src/kvserver/_dirtyfast.c"],
            optional=True,
        ),
    ]
)
