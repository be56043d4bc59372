"""Cost of decoding a patch within the limits (livepatch.patch.limits.loads_json) against plain json.loads.

Every `.lpatch` file and control request goes through loads_json: it adds an integer-digits check per
integer and an iterative walk of the decoded containers (the nesting depth). This times both decoders on
the same realistic documents (a patch built with the real differ from N modules of M functions each,
signed, as `livepatch diff` writes it), interleaved, medians of several repeats.

    .venv/bin/python bench/json_limits.py [--modules 1,20,80] [--functions 200] [--repeat 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from typing import Any

from livepatch.patch import lpatch
from livepatch.patch.diff import patch_from_sources
from livepatch.patch.limits import JSONLimitError, loads_json


def module_source(functions: int, version: int) -> str:
    return "".join(
        f"def f{i}(x, y=None):\n    return [x, {{'v': {version}, 'i': {i}}}, \"s\\\\n\"]\n\n\n"
        for i in range(functions)
    )


def document(modules: int, functions: int) -> bytes:
    spec = patch_from_sources(
        {
            f"pkg.m{i}": (module_source(functions, 1), module_source(functions, 2))
            for i in range(modules)
        }
    )
    return lpatch.dumps(lpatch.build(spec))


def median_ms(fn: Callable[[bytes], Any], data: bytes, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(data)
        out.append((time.perf_counter() - t) * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modules", default="1,20,80")
    ap.add_argument("--functions", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    print("| modules | functions | file MB | json.loads ms | loads_json ms | ratio |")
    print("|---|---|---|---|---|---|")
    for modules in (int(m) for m in args.modules.split(",")):
        data = document(modules, args.functions)
        plain: list[float] = []
        limited: list[float] = []
        for _ in range(args.repeat):  # interleaved: load bursts spoil samples of both sides alike
            plain += median_ms(lambda d: json.loads(d.decode()), data, 1)
            limited += median_ms(loads_json, data, 1)
        a, b = statistics.median(plain), statistics.median(limited)
        print(
            f"| {modules} | {modules * args.functions} | {len(data) / 1e6:.2f} | {a:.2f} | {b:.2f} "
            f"| {b / a:.2f} |"
        )
    for name, data in (("100,000 `[`", b"[" * 100_000), ("16 MiB of `[`", b"[" * (16 << 20))):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            try:
                loads_json(data)
            except JSONLimitError:
                times.append((time.perf_counter() - t) * 1e3)
        print(f"refusing {name}: {statistics.median(times):.1f} ms")


if __name__ == "__main__":
    main()
