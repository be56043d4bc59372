"""LCS (LEN, IDX, MINMATCHLEN, WITHMATCHLEN): differential against redis-server, plus kvserver's limit."""

from __future__ import annotations

import random

import redis

from tests.kvserver.redis_diff import Differ
from tests.kvserver.resp_helpers import err


def test_lcs(diff: Differ, diff3: Differ) -> None:
    dna = random.Random(11)
    rna1 = "".join(dna.choice("ACGT") for _ in range(300))
    rna2 = "".join(dna.choice("ACGT") for _ in range(280))
    rnd = random.Random(3)
    pairs = [("ohmytext", "mynewtext"), ("", "abc"), ("abc", "abc"), (rna1, rna2)]
    for _ in range(20):
        pairs.append(
            ("".join(rnd.choice("ab") for _ in range(rnd.randint(0, 30))),
             "".join(rnd.choice("abc") for _ in range(rnd.randint(0, 30))))
        )  # fmt: skip
    for d in (diff, diff3):
        for k, (a, b) in enumerate(pairs):
            d.check(
                ("MSET", f"a{k}", a, f"b{k}", b),
                ("LCS", f"a{k}", f"b{k}"),
                ("LCS", f"a{k}", f"b{k}", "LEN"),
                ("LCS", f"a{k}", f"b{k}", "IDX"),
                ("LCS", f"a{k}", f"b{k}", "IDX", "MINMATCHLEN", 3, "WITHMATCHLEN"),
            )
        d.check(
            ("LCS", "a0", "nokey"),
            ("LCS", "a0", "b0", "LEN", "IDX"),
            ("LCS", "a0", "b0", "MINMATCHLEN", "x"),
            ("LCS", "a0", "b0", "MINMATCHLEN", -5, "IDX"),
            ("LCS", "a0", "b0", "FOO"),
            ("RPUSH", "l", "x"),
            ("LCS", "a0", "l"),
        )


def test_lcs_size_limit(r: redis.Redis) -> None:
    r.set("a", "x" * 3000)
    r.set("b", "y" * 3000)
    assert "must be at most" in err(r, "LCS", "a", "b")
    r.set("b", "x" * 1000)
    assert r.execute_command("LCS", "a", "b", "LEN") == 1000
