"""The one thing pyproject.toml cannot say without an experimental table: kvserver's C fast paths.

kvserver._respfast is the request parser's fast path (src/kvserver/_respfast.c); kvserver._mverecord
is a validated update's recording (src/kvserver/_mverecord.c). Both are optional: without a C
compiler the install still succeeds and kvserver falls back to hiredis and pure Python, with the same
behaviour, only slower.
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
            "kvserver._mverecord",
            sources=["src/kvserver/_mverecord.c"],
            optional=True,
        ),
    ]
)
