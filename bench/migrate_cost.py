"""What livepatch.migrate.replace_class costs (the pause a class replacement adds to a transform hook).

    python3 bench/migrate_cost.py [--heap N ...] [--instances K ...] [--frozen] [--ab]

Builds a heap of N tracked objects (a dict of N small lists, like a keyspace of list values) and K live
instances of a slotted class, each held in a slot of a holder object in a module-level list (the shape
of kvserver's parsers), then times replace_class to a class with one more slot (median of 3, each on a
fresh set of instances). --frozen: gc.freeze() the heap first, as kvserver does at start-up (the frozen
objects are then searched by livepatch._frozenheap). --ab: also time the search without
`_frozenheap.all_referrers` (gc.get_referrers plus `_frozenheap.referrers`, which compare each
reference with every target), in turns with it. Prints one line per (N, K, search).
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
import types
from typing import Any

from livepatch import migrate
from livepatch.migrate import replace_class

OLD = """
class Parser:
    __slots__ = ("buf", "count")

    def __init__(self):
        self.buf = []
        self.count = 0


class Conn:
    __slots__ = ("parser",)

    def __init__(self):
        self.parser = Parser()
"""
NEW = OLD.replace('("buf", "count")', '("buf", "count", "limit")').split("class Conn")[0]


class _Ctx:
    def record(self, what: str, undo: Any = None) -> None:
        pass


def once(heap_size: int, instances: int, frozen: bool) -> float:
    module = types.ModuleType("migrate_cost_target")
    exec(OLD, vars(module))
    sys.modules[module.__name__] = module
    heap = {i: [i] for i in range(heap_size)}
    vars(module)["CONNS"] = [module.Conn() for _ in range(instances)]
    if frozen:
        gc.freeze()
    scope: dict[str, Any] = {}
    exec(NEW, vars(module), scope)
    try:
        t0 = time.perf_counter()
        done = replace_class(
            _Ctx(), module.Parser, scope["Parser"], lambda o: setattr(o, "limit", 1)
        )
        elapsed = time.perf_counter() - t0
        assert done.instances == instances
        return elapsed
    finally:
        if frozen:
            gc.unfreeze()
        del heap
        sys.modules.pop(module.__name__, None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--heap", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--instances", type=int, nargs="+", default=[100, 10_000])
    ap.add_argument("--frozen", action="store_true")
    ap.add_argument("--ab", action="store_true")
    args = ap.parse_args()
    helper = migrate._frozenheap
    modes = {"all_referrers": helper}
    if args.ab and helper is not None:
        modes["gc.get_referrers"] = types.SimpleNamespace(referrers=helper.referrers)
    for n in args.heap:
        for k in args.instances:
            times: dict[str, list[float]] = {m: [] for m in modes}
            for _ in range(3):
                for mode, module in modes.items():  # in turns: the load moves both alike
                    migrate._frozenheap = module
                    try:
                        times[mode].append(once(n, k, args.frozen))
                    finally:
                        migrate._frozenheap = helper
            for mode, ts in times.items():
                print(
                    f"heap {n:>9} objects, {k:>6} instances{' (frozen)' if args.frozen else ''}, "
                    f"{mode}: replace_class {statistics.median(ts) * 1000:8.1f} ms (median of 3)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
