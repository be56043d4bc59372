"""The server process of scripts/live_apply_history.py: one project at one commit, serving, patchable, and
answering questions about its own code.

    livepatch run --allow-unsigned --socket S scripts/live_apply_target.py waitress PORT PROBE_PORT
    livepatch run --allow-unsigned --socket S scripts/live_apply_target.py h11 PORT PROBE_PORT
    python scripts/live_apply_target.py kvserver PORT PROBE_PORT S      (kvserver embeds its own agent)
    python scripts/live_apply_target.py PROJECT --fingerprints          (a fresh process: print and exit)
    livepatch run --allow-unsigned --socket S scripts/live_apply_target.py PACKAGE PORT PROBE_PORT
                                            (any other package: imported, not served; the probe only)

The project's package comes from PYTHONPATH (a tree at some commit). Every module of the package is
imported first, so that a patch finds all of them loaded (a module a process never imported is skipped by
a patch, and would later be read from disk, unpatched). Then it serves: waitress a tiny WSGI app, h11 a
small keep-alive HTTP server built on h11 (socketserver threads), kvserver itself. A probe thread (not a
framework thread: it never holds a patch) answers one JSON line per connection on PROBE_PORT:
{"op": "fingerprints"} -> every function's code fingerprint and every simple module-level value;
{"op": "pytest", "args": [...]} -> pytest run in this very process, the outcome of each test;
{"op": "shapes"} -> the attribute names the live instances of the package's classes carry
(`instance_shapes`: what a transformer that missed an instance leaves behind, session 11).
"""

from __future__ import annotations

import gc
import importlib
import json
import pkgutil
import socket
import socketserver
import sys
import threading
import time
from types import FunctionType, GetSetDescriptorType, MemberDescriptorType, ModuleType
from typing import Any

SIMPLE = (int, float, str, bytes, bool, type(None))
# instance_shapes' bounds: past either, the answer says it is incomplete rather than stall the harness
SHAPES_DEADLINE_S = 20.0
SHAPES_MAX_INSTANCES = 200_000


def import_all(package: str) -> list[str]:
    """Import every module of the package except its tests; return the names that failed."""
    failed = []
    pkg = importlib.import_module(package)
    for info in pkgutil.walk_packages(pkg.__path__, f"{package}."):
        if ".tests" in info.name or info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except Exception:
            failed.append(info.name)
    return failed


def _functions(owner: Any, prefix: str, module: str, out: dict[str, str], depth: int = 0) -> None:
    from livepatch.patch.fingerprint import code_fingerprint

    for name, value in list(vars(owner).items()):
        for candidate in (value, getattr(value, "__func__", None), getattr(value, "fget", None)):
            if isinstance(candidate, FunctionType) and candidate.__module__ == module:
                out[f"{prefix}{name}"] = code_fingerprint(candidate.__code__)
        if isinstance(value, type) and value.__module__ == module and depth < 4:
            _functions(value, f"{prefix}{name}.", module, out, depth + 1)


def fingerprints(package: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, mod in sorted(sys.modules.items()):
        if not isinstance(mod, ModuleType) or not (
            name == package or name.startswith(f"{package}.")
        ):
            continue
        if ".tests" in name:
            continue
        _functions(mod, f"{name}:", name, out)
        for key, value in vars(mod).items():
            if not key.startswith("__") and isinstance(value, SIMPLE):
                out[f"{name}:{key}=value"] = repr(value)
    return out


def _package_modules(package: str) -> list[tuple[str, ModuleType]]:
    return [
        (name, mod)
        for name, mod in sorted(sys.modules.items())
        if isinstance(mod, ModuleType)
        and (name == package or name.startswith(f"{package}."))
        and ".tests" not in name
    ]


def package_classes(package: str) -> list[type]:
    """The classes defined in the package: those its modules bind (nested classes too), and every
    subclass of one of them that a package module defines (a class made inside a function)."""
    found: dict[int, type] = {}

    def add(owner: Any, depth: int) -> None:
        for value in list(vars(owner).values()):
            if isinstance(value, type) and _in_package(value, package) and id(value) not in found:
                found[id(value)] = value
                if depth < 4:
                    add(value, depth + 1)

    for _, mod in _package_modules(package):
        add(mod, 0)
    todo = list(found.values())
    while todo:
        for sub in type.__subclasses__(todo.pop()):
            if _in_package(sub, package) and id(sub) not in found:
                found[id(sub)] = sub
                todo.append(sub)
    return list(found.values())


def _in_package(cls: type, package: str) -> bool:
    module = cls.__dict__.get("__module__")
    return isinstance(module, str) and (module == package or module.startswith(f"{package}."))


def _attribute_names(obj: Any) -> set[str]:
    """The names of the instance's own state: its `__dict__`'s keys and its filled `__slots__`. Read
    through the type's own descriptors (never getattr), so no code of the package runs."""
    names: set[str] = set()
    dict_read = False
    for klass in type(obj).__mro__:
        own = klass.__dict__
        descriptor = own.get("__dict__")
        if isinstance(descriptor, GetSetDescriptorType) and not dict_read:
            dict_read = True  # the first one in the MRO is the instance's __dict__
            try:
                d = descriptor.__get__(obj, klass)
            except (AttributeError, TypeError):
                d = None
            if isinstance(d, dict):
                names.update(str(k) for k in d)
        slots = own.get("__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if not isinstance(slot, str) or slot in ("__dict__", "__weakref__"):
                continue
            mangled = slot
            if slot.startswith("__") and not slot.endswith("__"):
                mangled = f"_{klass.__name__.lstrip('_')}{slot}"
            member = own.get(mangled)
            if isinstance(member, MemberDescriptorType):
                try:
                    member.__get__(obj, klass)
                except AttributeError:  # an empty slot
                    continue
                names.add(mangled)
    return names


def _class_values(cls: type) -> list[str]:
    """The names the class binds (along its MRO) to plain values, not functions or descriptors: what an
    instance without its own value reads."""
    names = {
        str(name)
        for klass in cls.__mro__
        if klass is not object
        for name, value in klass.__dict__.items()
        if not (isinstance(name, str) and name.startswith("__"))
        and not hasattr(type(value), "__get__")
    }
    return sorted(names)


def _shadowing(obj: Any) -> list[str]:
    """The names in the instance's `__dict__` whose value differs from the plain value its class binds
    to the same name: what reading the name gives on this instance and not on one without it (waitress
    ca95fa2108ab: a live `Adjustments` keeps `clear_untrusted_proxy_headers = False`, which the new
    `__init__` no longer stores, and hides the new class default True). Values are compared by identity,
    and by `!=` only for simple types, so no code of the package runs."""
    own = None
    for klass in type(obj).__mro__:
        descriptor = klass.__dict__.get("__dict__")
        if isinstance(descriptor, GetSetDescriptorType):
            try:
                own = descriptor.__get__(obj, klass)
            except (AttributeError, TypeError):
                pass
            break
    if not isinstance(own, dict):
        return []
    out = []
    for name, value in own.items():
        for klass in type(obj).__mro__:
            if name in klass.__dict__:
                default = klass.__dict__[name]
                if hasattr(type(default), "__get__"):  # a function, property...: not a value
                    break
                same = value is default or (
                    type(value) is type(default) and isinstance(value, SIMPLE) and value == default
                )
                if not same:
                    out.append(str(name))
                break
    return out


def instance_shapes(package: str) -> dict[str, Any]:
    """{"classes": {"module:Qualname": {"n": instances, "attrs": {name: how many carry it},
    "shadows": {name: how many hide a different class-level value with it (`_shadowing`)},
    "class_values": [names the class binds to plain values]}},
    "complete": bool, "note": why not}: every live instance of the package's classes, the ones
    gc.freeze() froze included. gc.get_objects() does not list frozen objects (kvserver freezes its heap,
    its EventLoop included, at start-up), so the instances are found as the objects that refer to their
    class (an instance of a heap type does), by livepatch._frozenheap.all_referrers: one walk of the
    generations and the permanent one, as livepatch.migrate.live_instances does per class. A collection
    first, so that garbage (a closed connection's cycle) is not counted. Bounded by SHAPES_DEADLINE_S and
    SHAPES_MAX_INSTANCES."""
    classes = package_classes(package)
    gc.collect()
    note = ""
    try:
        from livepatch import _frozenheap

        holders = _frozenheap.all_referrers(*classes) if classes else []
    except ImportError:  # the optional C helper is not built: the generations only
        holders = gc.get_referrers(*classes) if classes else []
        if gc.get_freeze_count():
            note = f"{gc.get_freeze_count()} frozen objects not searched (no livepatch._frozenheap)"
    kinds = {id(c): c for c in classes}
    shapes: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + SHAPES_DEADLINE_S
    seen = 0
    for obj in holders:
        cls = type(obj)
        if kinds.get(id(cls)) is not cls or isinstance(obj, type):
            continue
        seen += 1
        if seen > SHAPES_MAX_INSTANCES or (seen % 1000 == 0 and time.monotonic() > deadline):
            note = f"stopped after {seen - 1} instances (limits: {SHAPES_MAX_INSTANCES}, {SHAPES_DEADLINE_S} s)"
            break
        key = f"{cls.__module__}:{cls.__qualname__}"
        if key not in shapes:
            shapes[key] = {"n": 0, "attrs": {}, "shadows": {}, "class_values": _class_values(cls)}
        shape = shapes[key]
        shape["n"] += 1
        for name in _attribute_names(obj):
            shape["attrs"][name] = shape["attrs"].get(name, 0) + 1
        for name in _shadowing(obj):
            shape["shadows"][name] = shape["shadows"].get(name, 0) + 1
    del holders
    return {"classes": shapes, "complete": not note, "note": note}


class _Outcomes:
    """A pytest plugin that keeps each test's outcome (a failing setup counts as the test's)."""

    def __init__(self) -> None:
        self.outcomes: dict[str, str] = {}

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.when == "call" or report.outcome != "passed":
            self.outcomes.setdefault(report.nodeid, report.outcome)
            if report.when == "call":
                self.outcomes[report.nodeid] = report.outcome

    def pytest_collectreport(self, report: Any) -> None:
        if report.outcome == "failed":
            self.outcomes[report.nodeid or "<collection>"] = "collection-error"


def run_pytest(args: list[str]) -> dict[str, str]:
    import pytest

    plugin = _Outcomes()
    pytest.main([*args, "-q", "-p", "no:cacheprovider", "-p", "no:timeout"], plugins=[plugin])
    return plugin.outcomes


def serve_probe(package: str, port: int) -> None:
    listener = socket.create_server(("127.0.0.1", port))
    while True:
        conn, _ = listener.accept()
        with conn, conn.makefile("rwb") as f:
            req = json.loads(f.readline())
            if req["op"] == "fingerprints":
                reply: Any = fingerprints(package)
            elif req["op"] == "shapes":
                reply = instance_shapes(package)
            else:
                reply = run_pytest(req["args"])
            f.write(json.dumps(reply).encode() + b"\n")
            f.flush()


# -- the servers -----------------------------------------------------------------------------------------


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = f"hello {environ.get('PATH_INFO', '/')}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def serve_waitress(port: int) -> None:
    import waitress

    server = waitress.create_server(_wsgi_app, host="127.0.0.1", port=port, threads=4)
    print(f"READY {port}", flush=True)
    server.run()


class _H11Handler(socketserver.StreamRequestHandler):
    """Reads line by line (`rfile.readline`): under livepatch run each line read is a quiescence point
    with the wait for it inactive, between two calls into h11 (never inside one)."""

    def handle(self) -> None:
        import h11

        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(self.rfile.readline(65536))  # b"" at EOF: ConnectionClosed next
                continue
            if isinstance(event, h11.Request):
                body = f"hello {event.target.decode()}".encode()
                headers = [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
                self.wfile.write(conn.send(h11.Response(status_code=200, headers=headers)))
                self.wfile.write(conn.send(h11.Data(data=body)))
                self.wfile.write(conn.send(h11.EndOfMessage()))
            elif isinstance(event, h11.EndOfMessage):
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return


class _H11Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def serve_h11(port: int) -> None:
    with _H11Server(("127.0.0.1", port), _H11Handler) as server:
        print(f"READY {port}", flush=True)
        server.serve_forever()


def serve_kvserver(port: int, agent_socket: str) -> None:
    from kvserver import cli

    sys.argv = ["kvserver", "--port", str(port), "--livepatch-socket", agent_socket]
    sys.argv += ["--allow-unsigned", "--state-dir", "none"] if _has_state_dir(cli) else []
    if "--allow-unsigned" not in sys.argv:
        sys.argv.append("--allow-unsigned")
    cli.main()


def _has_state_dir(cli: ModuleType) -> bool:
    command = getattr(cli, "serve_command", None)
    return any(getattr(p, "name", "") == "state_dir" for p in getattr(command, "params", []))


def main() -> None:
    project = sys.argv[1]
    package = project
    if sys.argv[2] == "--fingerprints":
        import_all(package)
        print(json.dumps(fingerprints(package)))
        return
    port, probe_port = int(sys.argv[2]), int(sys.argv[3])
    failed = import_all(package)
    if failed:
        print(f"note: could not import {', '.join(failed)}", file=sys.stderr, flush=True)
    threading.Thread(target=serve_probe, args=(package, probe_port), daemon=True).start()
    if project == "waitress":
        serve_waitress(port)
    elif project == "h11":
        serve_h11(port)
    elif project == "kvserver":
        serve_kvserver(port, sys.argv[4])
    else:  # a package the harness does not serve (tests/corpus/test_live_apply_shapes.py): probe only
        print(f"READY {port}", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
