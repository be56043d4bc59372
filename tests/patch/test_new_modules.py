"""Modules a patch adds that import each other (issue 13): staged in dependency order, each new module's
imports of another new module of the same patch bind the very module object the swap registers (as a
fresh import of the new version would), nothing is left in sys.modules by staging, and the revert takes
them all out. Two new modules importing each other at the top level stay refused at staging, with the
reason, nothing changed."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from livepatch.errors import PatchRefused
from livepatch.patch.diff import patch_from_sources
from livepatch.runtime.staging import stage
from tests.fixtures.livefixtures import unique_name

SERVER_V1 = "def handle(x):\n    return x\n"
SERVER_V2 = "def handle(x):\n    from PKG.proto import parse\n\n    return parse(x)\n"
# proto is new and imports util (new too) in the three forms a package uses; listed before util in the
# patch, so the patch's order alone would run proto first
PROTO = (
    "from . import util\n"
    "import PKG.util\n"
    "from .util import LIMIT, clip\n"
    "\n"
    "TABLE = {'limit': LIMIT}\n"
    "\n"
    "def parse(x):\n"
    "    return (clip(x), util.LIMIT, PKG.util.clip(x + 1), TABLE['limit'])\n"
)
UTIL = "LIMIT = 3\n\ndef clip(x):\n    return min(x, LIMIT)\n"


@pytest.fixture()
def package(tmp_path: Path) -> Iterator[str]:
    pkg = unique_name("newmods")
    (tmp_path / pkg).mkdir()
    (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / pkg / "server.py").write_text(SERVER_V1)
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module(f"{pkg}.server")
        yield pkg
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == pkg or n.startswith(pkg + ".")]:
            del sys.modules[name]


def test_a_new_module_importing_another_new_module_of_the_patch_is_staged_after_it(
    package: str,
) -> None:
    pkg = package
    server = sys.modules[f"{pkg}.server"]
    spec = patch_from_sources(
        {
            f"{pkg}.server": (SERVER_V1, SERVER_V2.replace("PKG", pkg)),
            f"{pkg}.proto": (None, PROTO.replace("PKG", pkg)),
            f"{pkg}.util": (None, UTIL),
        }
    )
    assert [m.module for m in spec.modules].index(f"{pkg}.proto") < [
        m.module for m in spec.modules
    ].index(f"{pkg}.util")
    staged = stage(spec)
    # staging changed nothing: neither new module is visible yet
    assert f"{pkg}.util" not in sys.modules and f"{pkg}.proto" not in sys.modules
    assert not hasattr(sys.modules[pkg], "util")
    staged.swap_in()
    util = sys.modules[f"{pkg}.util"]
    proto = sys.modules[f"{pkg}.proto"]
    assert server.handle(9) == (3, 3, 3, 3)
    # proto's imports are the registered util module and its objects, not copies
    assert proto.util is util and proto.clip is util.clip and sys.modules[pkg].util is util
    staged.swap_out()
    assert server.handle(9) == 9
    assert f"{pkg}.util" not in sys.modules and f"{pkg}.proto" not in sys.modules


def test_new_modules_importing_each_other_stay_refused_at_staging(package: str) -> None:
    pkg = package
    spec = patch_from_sources(
        {
            f"{pkg}.server": (SERVER_V1, SERVER_V2.replace("PKG", pkg)),
            f"{pkg}.proto": (None, "from .util import clip\n\ndef parse(x):\n    return clip(x)\n"),
            f"{pkg}.util": (None, "from .proto import parse\n\ndef clip(x):\n    return x\n"),
        }
    )
    with pytest.raises(
        PatchRefused, match=r"the new module.s source failed to run: (ModuleNotFound|Import)Error"
    ):
        stage(spec)
    assert f"{pkg}.util" not in sys.modules and f"{pkg}.proto" not in sys.modules
    assert sys.modules[f"{pkg}.server"].handle(9) == 9


def test_a_new_module_takes_the_names_the_patch_adds_elsewhere_and_refuses_old_copies(
    package: str,
) -> None:
    """kvserver b79fb53110: the new `zsetops` imports `check_range_options`, which the same patch adds
    to the loaded `zsets`: it must get the staged function (it used to fail: the live `zsets` has no
    such name). A new module importing a value the patch *changes* in a loaded module would get the
    live, old value: refused at staging, nothing changed."""
    pkg = package
    server = sys.modules[f"{pkg}.server"]
    s1 = SERVER_V1 + "\nLIMIT = 3\n"
    s2 = SERVER_V2.replace("PKG", pkg) + "\nLIMIT = 3\n\ndef clip(x):\n    return min(x, LIMIT)\n"
    # reload the live server module at s1 (the fixture loaded SERVER_V1)
    exec(compile(s1, server.__file__ or "<server>", "exec", dont_inherit=True), vars(server))
    proto = "from .server import clip\n\ndef parse(x):\n    return (clip(x),)\n"
    spec = patch_from_sources({f"{pkg}.server": (s1, s2), f"{pkg}.proto": (None, proto)})
    staged = stage(spec)
    assert not hasattr(server, "clip")  # staging took it out again
    staged.swap_in()
    assert server.handle(9) == (3,) and sys.modules[f"{pkg}.proto"].clip is server.clip
    staged.swap_out()
    assert server.handle(9) == 9 and not hasattr(server, "clip")
    changed = s2.replace("LIMIT = 3", "LIMIT = 4")
    stale = "from .server import LIMIT\n\ndef parse(x):\n    return (min(x, LIMIT),)\n"
    spec = patch_from_sources({f"{pkg}.server": (s1, changed), f"{pkg}.proto": (None, stale)})
    with pytest.raises(PatchRefused, match=r"new module's `LIMIT` is the live `.*server.LIMIT`"):
        stage(spec)
    assert server.LIMIT == 3 and not hasattr(server, "clip")
    assert f"{pkg}.proto" not in sys.modules


CONFIG = (
    "from __future__ import annotations\n"
    "\n"
    "import sys\n"
    "from dataclasses import dataclass\n"
    "\n"
    "SEEN_AS = sys.modules[__name__].__name__  # a module looking itself up, as an import allows\n"
    "\n"
    "@dataclass\n"
    "class Settings:\n"
    "    limit: int\n"
    "    name: str = 'default'\n"
)
SERVER_V3 = (
    "from PKG import config\n"
    "\n"
    "def handle(x):\n"
    "    s = config.Settings(x)\n"
    "    return (s.limit, s.name, config.SEEN_AS)\n"
)


def test_a_new_module_is_in_sys_modules_while_its_source_runs_and_a_loaded_one_imports_it(
    package: str,
) -> None:
    """kvserver 804f2324e2 (replication_cli.py) and 1287f55ec9 (pubsub.py): a new module defining a
    dataclass under `from __future__ import annotations` failed at staging with "'NoneType' object has
    no attribute '__dict__'" (dataclasses reads `sys.modules[cls.__module__]`, which an import has set
    by then). And the loaded server's new `from PKG import config` binds the module the swap registers.
    Staging leaves neither in sys.modules nor on the package."""
    pkg = package
    server = sys.modules[f"{pkg}.server"]
    spec = patch_from_sources(
        {
            f"{pkg}.server": (SERVER_V1, SERVER_V3.replace("PKG", pkg)),
            f"{pkg}.config": (None, CONFIG),
        }
    )
    staged = stage(spec)
    assert f"{pkg}.config" not in sys.modules and not hasattr(sys.modules[pkg], "config")
    staged.swap_in()
    config = sys.modules[f"{pkg}.config"]
    assert server.config is config and sys.modules[pkg].config is config
    assert server.handle(4) == (4, "default", f"{pkg}.config")
    staged.swap_out()
    assert server.handle(9) == 9
    assert f"{pkg}.config" not in sys.modules and not hasattr(sys.modules[pkg], "config")
