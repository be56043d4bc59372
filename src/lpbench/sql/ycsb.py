"""YCSB as BenchBase defines it (benchmarks/ycsb): usertable of 1000 x scale rows, a key and 10 text
fields of 100 characters; six transaction types with BenchBase's sample weights
    ReadRecord 50, InsertRecord 5, ScanRecord 15, UpdateRecord 10, DeleteRecord 10, ReadModifyWrite 10;
keys of reads, scans, updates, deletes and read-modify-writes from a Zipfian distribution over the loaded
keys (YCSB's ZipfianGenerator, constant 0.99: key 0 is the hottest), scans of a uniform 1..1000 keys,
inserts of fresh keys above the loaded ones (each connection its own, so they never collide).
Single-statement transactions run in autocommit; ReadModifyWrite is BEGIN, SELECT .. FOR UPDATE,
UPDATE, COMMIT.

Check after a run: every row still has its 10 fields of 100 characters.
"""

from __future__ import annotations

import random
import string

from lpbench.sql.pg import BlockingClient, Step
from lpbench.sql.workloads import SqlWorkloadSpec, Tx, TxFactory, weighted

RECORDS_PER_SCALE = 1000
FIELDS = 10
FIELD_SIZE = 100
MAX_SCAN = 1000
ZIPF_CONSTANT = 0.99
TYPES = ["read", "insert", "scan", "update", "delete", "rmw"]
WEIGHTS = [50, 5, 15, 10, 10, 10]
COLUMNS = ", ".join(f"field{i}" for i in range(1, FIELDS + 1))
INSERT_STRIDE = 1 << 20  # connection c inserts records + c, records + c + stride, ...


def records(scale: float) -> int:
    return max(1, int(RECORDS_PER_SCALE * scale))


class Zipfian:
    """YCSB's ZipfianGenerator (Gray et al., "Quickly generating billion-record synthetic databases")
    over 0..items-1; zeta(n) is summed once (a second for a million items)."""

    def __init__(self, items: int, rng: random.Random, theta: float = ZIPF_CONSTANT) -> None:
        self.items, self.theta, self.rng = items, theta, rng
        self.zetan = sum(1.0 / (i**theta) for i in range(1, items + 1))
        zeta2 = 1.0 + 1.0 / (2**theta)
        self.alpha = 1.0 / (1.0 - theta)
        self.eta = (
            (1 - (2.0 / items) ** (1 - theta)) / (1 - zeta2 / self.zetan) if items > 1 else 0.0
        )
        self.half_pow_theta = 1.0 + 0.5**theta

    def next(self) -> int:
        u = self.rng.random()
        uz = u * self.zetan
        if uz < 1.0 or self.items == 1:
            return 0
        if uz < self.half_pow_theta:
            return 1
        return min(self.items - 1, int(self.items * (self.eta * u - self.eta + 1) ** self.alpha))


class TextSource:
    """Random letters without a per-character cost: slices of one random block."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.block = "".join(rng.choices(string.ascii_letters + string.digits, k=8192))

    def text(self, n: int = FIELD_SIZE) -> str:
        i = self.rng.randrange(len(self.block) - n)
        return self.block[i : i + n]


class Ycsb:
    name = "ycsb"
    protocol = "pg"

    def __init__(self, scale: float, seed: int, connections: int) -> None:
        self.rng = random.Random(seed)
        self.records = records(scale)
        self.keys = Zipfian(self.records, self.rng)
        self.text = TextSource(self.rng)
        self.pick = weighted(self.rng, TYPES, WEIGHTS)
        self.inserted: dict[int, int] = {}

    def _fields(self) -> list[str]:
        return [self.text.text() for _ in range(FIELDS)]

    def next_transaction(self, conn: int) -> TxFactory:
        kind = self.pick()
        key = self.keys.next()
        step: Step
        if kind == "read":
            step = (READ, (key,))
        elif kind == "scan":
            step = (SCAN, (key, key + self.rng.randint(1, MAX_SCAN)))
        elif kind == "delete":
            step = (DELETE, (key,))
        elif kind == "insert":
            n = self.inserted.get(conn, 0)
            self.inserted[conn] = n + 1
            step = (INSERT, (self.records + conn + n * INSERT_STRIDE, *self._fields()))
        else:
            update = (UPDATE, (*self._fields(), key))
            if kind == "update":
                step = update
            else:
                select = (READ_FOR_UPDATE, (key,))
                return lambda: _rmw(select, update)
        return lambda: _one(step)


READ = "SELECT * FROM usertable WHERE ycsb_key = $1"
READ_FOR_UPDATE = READ + " FOR UPDATE"
SCAN = "SELECT * FROM usertable WHERE ycsb_key > $1 AND ycsb_key < $2"
DELETE = "DELETE FROM usertable WHERE ycsb_key = $1"
INSERT = "INSERT INTO usertable VALUES (" + ", ".join(f"${i}" for i in range(1, FIELDS + 2)) + ")"
UPDATE = (
    "UPDATE usertable SET "
    + ", ".join(f"field{i} = ${i}" for i in range(1, FIELDS + 1))
    + f" WHERE ycsb_key = ${FIELDS + 1}"
)


def _one(step: Step) -> Tx:
    yield step


def _rmw(select: Step, update: Step) -> Tx:
    yield "BEGIN"
    yield select
    yield update
    yield "COMMIT"


DDL = (
    "CREATE TABLE usertable (ycsb_key int PRIMARY KEY, "
    + ", ".join(f"field{i} varchar({FIELD_SIZE})" for i in range(1, FIELDS + 1))
    + ")"
)


def load(client: BlockingClient, scale: float, seed: int) -> None:
    client.execute("DROP TABLE IF EXISTS usertable")
    client.execute(DDL)
    text = TextSource(random.Random(seed))
    n = records(scale)
    batch = 5000
    for start in range(0, n, batch):
        rows = [
            (k, *(text.text() for _ in range(FIELDS))) for k in range(start, min(n, start + batch))
        ]
        client.copy_in("usertable", rows)


def check(client: BlockingClient, scale: float) -> list[str]:
    cond = " OR ".join(
        f"length(field{i}) <> {FIELD_SIZE} OR field{i} IS NULL" for i in range(1, FIELDS + 1)
    )
    bad = client.execute(f"SELECT count(*) FROM usertable WHERE {cond}").scalar()
    return (
        [] if bad == "0" else [f"ycsb: {bad} rows with a field that is not {FIELD_SIZE} characters"]
    )


SPEC = SqlWorkloadSpec(Ycsb, load, check, "YCSB: usertable, 6 transaction types, Zipfian keys")
