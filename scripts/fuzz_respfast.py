"""Fuzz kvserver's C request parser under AddressSanitizer and UBSan, against the reference parser.

    .venv/bin/python scripts/fuzz_respfast.py [--iterations 300000] [--seed 1]

Run it after any change to src/kvserver/_respfast.c (the hypothesis tests in
tests/kvserver/test_protocol.py run on every CI build, but without sanitizers). It compiles the C file
with -fsanitize=address,undefined into a temporary directory, then re-runs itself with the sanitizer
runtimes preloaded and PYTHONMALLOC=malloc (so every bytes object is a separate, checked allocation), and
feeds the parser (1) valid requests with bytes replaced, inserted or deleted and sometimes cut short,
checking every buffer it accepts against kvserver.resp.PythonRequestParser, and (2) every cut of requests
whose payload sizes cross the boundaries of the buffer; and the encoder (encode_request) against
kvserver.resp.encode_command. A sanitizer report or a disagreement fails it.
Needs gcc and the Python headers.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

SOURCE = Path(__file__).resolve().parents[1] / "src" / "kvserver" / "_respfast.c"
NEAR_MISS = [b"*", b"$", b"0", b"1", b"9", b"-", b"+", b" ", b"\r", b"\n", b">", b"x", b"\r\n"]


def build(out_dir: Path) -> Path:
    target = out_dir / ("_respfast" + sysconfig.get_config_var("EXT_SUFFIX"))
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O1", "-g", "-fsanitize=address,undefined",
         "-fno-omit-frame-pointer", "-fno-sanitize-recover=all",
         f"-I{sysconfig.get_paths()['include']}", str(SOURCE), "-o", str(target)],
        check=True,
    )  # fmt: skip
    return target


def load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("kvserver._respfast", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fuzz(parse: Any, iterations: int, seed: int) -> None:
    from kvserver.resp import Limits, ProtocolError, PythonRequestParser, encode_command

    rng = random.Random(seed)
    accepted = 0
    for _ in range(iterations):
        requests = [
            [rng.randbytes(rng.choice([0, 1, 2, 3, 5, 16, 40])) for _ in range(rng.randint(1, 5))]
            for _ in range(rng.randint(1, 4))
        ]
        data = bytearray(b"".join(encode_command(*argv) for argv in requests))
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            at, token = rng.randrange(len(data) + 1), rng.choice(NEAR_MISS)
            how = rng.randrange(3)
            if how == 0:
                data[at : at + len(token)] = token
            elif how == 1:
                data[at:at] = token
            else:
                del data[at : at + rng.randint(1, 3)]
        if rng.random() < 0.2:
            data = data[: rng.randrange(len(data) + 1)]
        buf = bytes(data)
        got = parse(buf, rng.choice([1, 4, 1 << 20]))
        if got is None:
            continue
        accepted += 1
        reference = PythonRequestParser(Limits())
        try:
            reference.feed(buf)
            expected = reference.commands()
        except ProtocolError as exc:
            sys.exit(f"accepted what the reference refuses ({exc.reason}): {buf!r}")
        if expected != got or reference.buffered() or reference.pending_error is not None:
            sys.exit(f"disagreement on {buf!r}: C {got!r}, reference {expected!r}")
    for size in range(300):
        whole = b"*1\r\n$%d\r\n" % size + b"a" * size + b"\r\n"
        for cut in range(len(whole) + 1):
            got = parse(whole[:cut], 10)
            if got is not None and (cut != len(whole) or got != [[b"a" * size]]):
                sys.exit(f"wrong result for a cut at {cut} of a {size}-byte payload: {got!r}")
    print(
        f"ok: {iterations} mutated buffers ({accepted} accepted, all as the reference reads them)"
    )


def fuzz_encoder(encode: Any, iterations: int, seed: int) -> None:
    """encode_request (the AOF's records) against the reference encoder, sizes around every digit
    boundary, and the inputs it must decline."""
    from kvserver.resp import encode_command

    rng = random.Random(seed)
    sizes = [0, 1, 9, 10, 11, 99, 100, 101, 999, 1000, 9999, 10000, 65536, 100000]
    for _ in range(iterations // 10):
        argv = [rng.randbytes(rng.choice(sizes)) for _ in range(rng.randint(1, 12))]
        if encode(argv) != encode_command(*argv):
            sys.exit(f"encoder disagrees on arguments of sizes {[len(a) for a in argv]}")
    for declined in ([], (b"a",), [b"a", "b"], [b"a", bytearray(b"b")], [b"a", 1], "ab", None):
        if encode(declined) is not None:
            sys.exit(f"encoder accepted {declined!r}")
    print(f"ok: {iterations // 10} encoded requests, as the reference encodes them")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=300_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--built", help=argparse.SUPPRESS)  # set on the re-run under the sanitizers
    args = ap.parse_args()
    if args.built:
        module = load(Path(args.built))
        fuzz(module.parse_requests, args.iterations, args.seed)
        fuzz_encoder(module.encode_request, args.iterations, args.seed)
        return
    with tempfile.TemporaryDirectory(prefix="respfast-asan-") as tmp:
        built = build(Path(tmp))
        runtimes = [
            subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True,
                           check=True).stdout.strip()
            for lib in ("libasan.so", "libubsan.so")
        ]  # fmt: skip
        env = dict(
            os.environ,
            LD_PRELOAD=":".join(runtimes),
            PYTHONMALLOC="malloc",
            ASAN_OPTIONS="detect_leaks=0:abort_on_error=1",
        )
        argv = [sys.executable, __file__, "--built", str(built),
                "--iterations", str(args.iterations), "--seed", str(args.seed)]  # fmt: skip
        sys.exit(subprocess.run(argv, env=env).returncode)


if __name__ == "__main__":
    main()
