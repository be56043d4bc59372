"""A new `from M import *` (h11 8bdcc7d9ff: `from .state import ConnectionState, CLIENT, SERVER, CLOSED`
became `from .state import *`, where state's `__all__` is `["ConnectionState"]` plus `+= sentinels`).

The differ accepts it when M is a module of the package whose `__all__` is built by the same top-level
statements in both versions (walk.all_statements); staging runs it in the live module and binds what the
live M exports (docs/patchability.md, "A new star import"). Each test builds a real package on disk,
imports it, diffs and stages a patch against it."""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from livepatch.errors import PatchRefused
from livepatch.patch.diff import diff_sources
from livepatch.patch.model import RefusalKind
from livepatch.patch.walk import all_statements
from livepatch.runtime.staging import stage
from tests.fixtures.livefixtures import unique_name

STATE = (
    '__all__ = ["ConnectionState"]\n\n'
    'sentinels = "CLIENT SERVER IDLE DONE".split()\n'
    "for token in sentinels:\n"
    "    globals()[token] = object()\n\n"
    "__all__ += sentinels\n\n\n"
    "class ConnectionState:\n"
    "    pass\n"
)
CONN_V1 = (
    "from .state import ConnectionState, CLIENT, SERVER\n\n\n"
    "def who(n):\n"
    "    return CLIENT if n == 1 else SERVER\n"
)
CONN_V2 = (
    "from .state import *\n\n\n"
    "def who(n):\n"
    "    return CLIENT if n == 1 else SERVER if n == 2 else IDLE if n == 3 else DONE\n"
)


@pytest.fixture
def package(tmp_path: Path) -> Iterator[tuple[str, ModuleType]]:
    pkg = unique_name("newstar")
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / pkg / "state.py").write_text(STATE)
    (tmp_path / pkg / "conn.py").write_text(CONN_V1)
    sys.path.insert(0, str(tmp_path))
    try:
        yield pkg, importlib.import_module(f"{pkg}.conn")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == pkg or n.startswith(pkg + ".")]:
            del sys.modules[name]


def _diff(pkg: str, conn_v2: str, state_v2: str = STATE) -> tuple:
    modules: dict[str, tuple[str | None, str]] = {f"{pkg}.conn": (CONN_V1, conn_v2)}
    if state_v2 != STATE:
        modules[f"{pkg}.state"] = (STATE, state_v2)
    return diff_sources(modules, context={f"{pkg}.state": STATE, f"{pkg}": ""}).spec


def test_a_new_star_import_binds_what_the_live_module_exports(
    package: tuple[str, ModuleType],
) -> None:
    pkg, conn = package
    state = sys.modules[f"{pkg}.state"]
    spec = _diff(pkg, CONN_V2)
    assert spec.refusals == ()
    staged = stage(spec)
    staged.swap_in()
    # the very objects of the live state module (sentinels compared by identity), new names bound
    assert [conn.who(n) for n in (1, 2, 3, 4)] == [
        state.CLIENT,
        state.SERVER,
        state.IDLE,
        state.DONE,
    ]
    assert conn.ConnectionState is state.ConnectionState
    staged.swap_out()
    assert conn.who(3) is state.SERVER and not hasattr(conn, "IDLE")


def test_refused_neighbours_of_a_new_star_import(package: tuple[str, ModuleType]) -> None:
    pkg, conn = package

    def kinds(spec: object) -> list[tuple[str, RefusalKind]]:
        """conn's refusals (a change of state.py may be refused on its own too)"""
        refusals = spec.refusals  # type: ignore[attr-defined]
        return [(r.qualname, r.kind) for r in refusals if r.module == f"{pkg}.conn"]

    # M's __all__ changes in the same patch: the live M exports the old list
    more = STATE.replace('"CLIENT SERVER IDLE DONE"', '"CLIENT SERVER IDLE DONE ERROR"')
    assert kinds(_diff(pkg, CONN_V2, more)) == [("<module>", RefusalKind.MODULE_STATE)]
    # a module that is not the package's (its exports are not known from the sources)
    outside = CONN_V2.replace("from .state import *", "from os.path import *")
    assert kinds(_diff(pkg, outside)) == [("<module>", RefusalKind.MODULE_STATE)]
    # M's __all__ extended with another module's (`__all__ += other.__all__`): that one may change
    # (then what M exports is not known from its source alone, in either version), or built in a block
    chained = STATE.replace("__all__ += sentinels", "from .events import names\n__all__ += names")
    assert all_statements(ast.parse(chained)) is None
    starred = STATE.replace("__all__ += sentinels", "from .events import *\n__all__ += names")
    assert all_statements(ast.parse(starred)) is None
    blocked = STATE.replace("__all__ += sentinels", "if sentinels:\n    __all__ += sentinels")
    assert all_statements(ast.parse(blocked)) is None
    assert all_statements(ast.parse(STATE)) is not None
    # at staging: the star binds a name the new version also defines itself (which one wins depends
    # on the order), or one the live module holds as another object
    for v2, message in (
        (CONN_V2 + "\n\ndef IDLE():\n    return 0\n", "binds `IDLE`, which the module also binds"),
        (CONN_V2 + "\nDONE = 4\n", "binds `DONE`, which the module also binds"),
    ):
        before = dict(vars(conn))
        spec = _diff(pkg, v2)
        assert spec.refusals == ()
        with pytest.raises(PatchRefused, match=message):
            stage(spec)
        assert vars(conn) == before  # nothing changed
    conn.IDLE = "patched at run time"  # type: ignore[attr-defined]
    try:
        with pytest.raises(PatchRefused, match="binds `IDLE`, which the module also binds"):
            stage(_diff(pkg, CONN_V2))
    finally:
        del conn.IDLE  # type: ignore[attr-defined]


def test_a_new_star_import_of_a_value_the_same_patch_changes_is_refused(tmp_path: Path) -> None:
    """M's exported value changes in the same patch: the star, run against the live M, would copy the
    old one where a fresh import copies the new one."""
    pkg = unique_name("newstarvalue")
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text("")
    limits_v1 = '__all__ = ["LIMIT"]\n\nLIMIT = 1\n'
    limits_v2 = '__all__ = ["LIMIT"]\n\nLIMIT = 2\n'
    user_v1 = "def limit():\n    return 0\n"
    user_v2 = "from .limits import *\n\n\ndef limit():\n    return LIMIT\n"
    (tmp_path / pkg / "limits.py").write_text(limits_v1)
    (tmp_path / pkg / "user.py").write_text(user_v1)
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module(f"{pkg}.limits")
        user = importlib.import_module(f"{pkg}.user")
        spec = diff_sources(
            {f"{pkg}.limits": (limits_v1, limits_v2), f"{pkg}.user": (user_v1, user_v2)},
            context={pkg: ""},
        ).spec
        assert spec.refusals == ()
        with pytest.raises(PatchRefused, match="copies the live"):
            stage(spec)
        assert user.limit() == 0 and not hasattr(user, "LIMIT")
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == pkg or n.startswith(pkg + ".")]:
            del sys.modules[name]
