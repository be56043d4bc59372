"""What `import livepatch` and a server's quiescence points load: the runtime's thread side only.

A server imports livepatch and runs quiescence points in every thread; it must not pay for the stager,
the differ or the AST machinery (issue 9 item 6, `bench/import_time.py`): those load with the first
patch. Checked in a fresh interpreter, since this one has loaded everything already.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import source_env

pytestmark = pytest.mark.timeout(60)

# A server's use of the facade: a managed thread passing quiescence points, the flag, the statistics
# are not in it (they are read by an operator's request).
SERVER = """
import sys, threading
import livepatch

livepatch.quiescence_point()  # an unmanaged thread
flag = livepatch.transition_flag()
done = threading.Event()

def worker():
    with livepatch.managed_thread("worker", livepatch.Priority.MEDIUM):
        for _ in range(1000):
            if flag.request is not None:
                livepatch.quiescence_point()
            livepatch.quiescence_point()
        livepatch.deactivate()
        livepatch.activate()
    done.set()

t = threading.Thread(target=worker)
t.start()
t.join(30)
assert done.is_set()
print(json.dumps(sorted(sys.modules)))
"""

# What only a patch needs: the stager and the swap, the differ and its rules, the patch model, the
# hooks, the watch window, and the standard library's AST machinery (the differ's; `dataclasses`
# imports it through `inspect`).
NOT_FOR_A_SERVER = (
    "livepatch.runtime.staging",
    "livepatch.runtime.swap",
    "livepatch.runtime.swap_build",
    "livepatch.runtime.resolve",
    "livepatch.runtime.hook_runner",
    "livepatch.runtime.patch_hooks",
    "livepatch.runtime.watch",
    "livepatch.runtime.verify",
    "livepatch.patch.diff",
    "livepatch.patch.walk",
    "livepatch.patch.compiled",
    "livepatch.patch.patchability",
    "livepatch.patch.model",
    "livepatch.agent",
    "ast",
    "dataclasses",
    "inspect",
)


def _modules_after(program: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", "import json\n" + program],
        capture_output=True,
        text=True,
        env=source_env(),
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_a_server_importing_livepatch_and_running_quiescence_points_loads_no_patch_machinery() -> (
    None
):
    loaded = _modules_after(SERVER)
    assert (
        "livepatch.runtime.core" in loaded
    )  # the facade did load: the check below means something
    assert sorted(loaded & set(NOT_FOR_A_SERVER)) == []


def test_the_agent_loads_the_patch_machinery_before_the_first_patch(tmp_path: Path) -> None:
    """What an attempt runs is imported when the Agent is created (server start), not inside the first
    apply: imported there, it ran while the patcher held the GIL (lpbench on kvserver: a first stage of
    100-420 ms, the next ones 0.0-0.3 ms). Nor by the quiescence points before it."""
    loaded = _modules_after(
        "import sys\n"
        "import livepatch\n"
        "livepatch.quiescence_point()\n"
        "assert 'livepatch.runtime.staging' not in sys.modules\n"
        f"agent = livepatch.Agent({str(tmp_path / 'lp.sock')!r}, allow_unsigned=True)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    machinery = {
        "livepatch.runtime.staging",
        "livepatch.runtime.hook_runner",
        "livepatch.runtime.patch_hooks",
        "livepatch.runtime.events",
        "livepatch.runtime.stragglers",
        "livepatch.patch.hooks_info",
    }
    assert sorted(machinery - loaded) == []


def test_the_first_patch_loads_what_it_needs(tmp_path: Path) -> None:
    """The other side: the lazy imports are there and work (a missing one would fail only at the first
    patch, which a server meets in production): apply and revert a one-function patch, read the
    statistics and the history."""
    old, new = "def f():\n    return 1\n", "def f():\n    return 2\n"
    (tmp_path / "lp_cost_mod.py").write_text(old)
    loaded = _modules_after(
        f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\n"
        "import livepatch, lp_cost_mod\n"
        f"spec = livepatch.patch_from_sources({{'lp_cost_mod': ({old!r}, {new!r})}})\n"
        "result = livepatch.apply_patch(spec)\n"
        "assert result.outcome is livepatch.Outcome.APPLIED, result\n"
        "assert lp_cost_mod.f() == 2\n"
        "assert livepatch.revert_patch().ok and lp_cost_mod.f() == 1\n"
        "assert livepatch.statistics().managed == 0 and len(livepatch.history()) == 2\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    assert {"livepatch.runtime.staging", "livepatch.runtime.verify", "ast"} <= loaded
