"""sqlserver under `livepatch stress`: the stress patch, and a blocking PostgreSQL client (lpbench.sql.pg,
the shared codec) that tells versions apart.

The patch (built from the INSTALLED sqlserver, then `livepatch diff --category thread-local`):
    session_commands.show_command: `SHOW lpstress.version` answers "v2"; version 1 answers the session's
        own setting, which each client sets to "v1" when it connects (a custom, dotted setting);
    fastpath.parse_burst: a harmless statement (lpbench.patches.bench_lines), so the prepared writes and
        reads of the load, which pass through it, run patched code while patched.
Writes: an upsert of the connection's own keys in table stress_kv (autocommit), read back by key.

Rule 3 of the check (no going back per connection, check.py) holds for thread-per-connection (a session
stays on its thread) and for global quiescence; under the pool with local quiescence a connection's
statements run on whichever worker is free, migrated or not, so only rules 1 and 2 apply there
(docs/sqlserver.md: "a patch can land between two statements of one transaction").

Concurrency: one SqlClient per client thread.
"""

from __future__ import annotations

from pathlib import Path

from lpbench.patches import bench_lines, copy_package, diff, insert_into
from lpbench.sql.patches import sqlserver_package
from lpbench.sql.pg import BlockingClient, SqlError
from lpbench.stress.common import RequestFailed

SETTING = "lpstress.version"
SHOW_FILE = "sqlserver/session_commands.py"
OLD_LINE = "    value = session.settings.get(name)\n"
NEW_LINE = f'    value = "v2" if name == "{SETTING}" else session.settings.get(name)  # lpbench stress patch\n'
HOT_FILE, HOT_FUNCTION = "sqlserver/fastpath.py", "parse_burst"
UPSERT = "INSERT INTO stress_kv (k, v) VALUES ($1, $2) ON CONFLICT (k) DO UPDATE SET v = excluded.v"
READ = "SELECT v FROM stress_kv WHERE k = $1"


class SqlTarget:
    name = "sql"
    plants: tuple[str, ...] = ()

    def __init__(self, policy: str) -> None:
        self.policy = policy

    def monotonic(self, method: str) -> bool:
        return self.policy != "pool" or method == "global"

    def build_patch(self, workdir: Path, plant: str | None = None) -> Path:
        package = sqlserver_package()
        old = copy_package(package, workdir / "old")
        new = copy_package(package, workdir / "new")
        show = new / SHOW_FILE
        text = show.read_text(encoding="utf-8")
        start = text.find("\ndef show_command(")
        end = text.find("\ndef ", start + 1)
        if start < 0 or text.count(OLD_LINE, start, end) != 1:
            raise RuntimeError(
                f"cannot build the stress patch: show_command in {SHOW_FILE} changed"
            )
        show.write_text(text[:start] + text[start:end].replace(OLD_LINE, NEW_LINE) + text[end:])
        hot = new / HOT_FILE
        source, done = insert_into(hot.read_text(encoding="utf-8"), {HOT_FUNCTION}, bench_lines)
        if done != [HOT_FUNCTION]:
            raise RuntimeError(f"cannot build the stress patch: no {HOT_FUNCTION} in {HOT_FILE}")
        hot.write_text(source, encoding="utf-8")
        out = workdir / "stress-sql.lpatch"
        diff(old, new, package.name, out)
        return out

    def prepare(self, host: str, port: int, timeout_s: float) -> None:
        with BlockingClient(host, port, timeout_s) as c:
            c.execute("CREATE TABLE IF NOT EXISTS stress_kv (k text PRIMARY KEY, v text)")

    def connect(self, host: str, port: int, timeout_s: float) -> SqlClient:
        return SqlClient(host, port, timeout_s)


class SqlClient:
    def __init__(self, host: str, port: int, timeout_s: float) -> None:
        try:
            self.c = BlockingClient(host, port, timeout_s)
            self.c.execute(f"SET {SETTING} = 'v1'")
        except SqlError as exc:
            raise ConnectionRefusedError(str(exc)) from exc

    def close(self) -> None:
        self.c.close()

    def _run(self, step: str | tuple[str, tuple[object, ...]]) -> list[tuple[bytes | None, ...]]:
        result = self.c.run(step)
        if result.error is not None:
            raise RequestFailed(f"{result.error.sqlstate} {result.error.message}")
        return result.rows

    def write(self, key: str, value: bytes) -> None:
        self._run((UPSERT, (key, value.decode())))

    def read(self, key: str) -> bytes | None:
        rows = self._run((READ, (key,)))
        return rows[0][0] if rows else None

    def read_many(self, keys: list[str]) -> list[bytes | None]:
        array = "{" + ",".join(keys) + "}"  # the keys are stress:w:<conn>:<n>: no quoting needed
        rows = self._run(("SELECT k, v FROM stress_kv WHERE k = ANY($1)", (array,)))
        found: dict[bytes | None, bytes | None] = {row[0]: row[1] for row in rows}
        return [found.get(k.encode()) for k in keys]

    def probe(self) -> int:
        rows = self._run(f"SHOW {SETTING}")
        answer = rows[0][0] if rows else None
        if answer == b"v1":
            return 1
        if answer == b"v2":
            return 2
        raise RequestFailed(f"SHOW {SETTING} answered {answer!r}, neither version's answer")
