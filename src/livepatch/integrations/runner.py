"""`livepatch run`: start an unmodified server with the agent and the framework integrations.

Order matters, and is the point of this module: the frameworks are patched and the agent listens
*before* the server's own code is imported, so every server, loop and pool it builds is built from the
patched classes, and a patch can be applied from its first request on. The server then runs as
`python -m MODULE ARGS` or `python SCRIPT ARGS` would run it: as `__main__`, with `sys.argv` set to what
it expects and its directory (the current one for -m) first on `sys.path`. The code a patch can reach is
in the modules the entry point imports (they keep their names); the entry point itself runs as
`__main__` (docs/integrations.md).

With a state directory the agent re-applies the stored stack as it starts (agent/keeper.py), so here,
before the server's code runs: the modules the patches name are imported for that, with `sys.argv` and
`sys.path` already what the server will see.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import signal
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from livepatch.agent.agent import NEXT_TO_SOCKET, Agent, StateDirOption
from livepatch.errors import LivepatchError
from livepatch.integrations.install import install


class RunError(LivepatchError):
    """`livepatch run` cannot start the server as asked; the message says what to do."""


@dataclass(frozen=True)
class Target:
    """What to run: a module (`-m`) or a script path, and the arguments it receives."""

    name: str
    is_module: bool
    args: tuple[str, ...] = ()

    def search_path(self) -> str:
        """What python puts first on sys.path for it: the current directory for -m, else the
        script's directory."""
        return os.getcwd() if self.is_module else os.path.dirname(os.path.abspath(self.name))

    def check(self) -> None:
        """Fail with a RunError before anything starts when the target cannot be found (call it with
        search_path() on sys.path)."""
        if self.is_module:
            try:
                found = importlib.util.find_spec(self.name) is not None
            except (ImportError, ValueError):
                found = False
            if not found:
                raise RunError(
                    f"no module named {self.name!r} (livepatch run -m looks in the current directory "
                    "and on PYTHONPATH, as python -m does)"
                )
        elif not Path(self.name).is_file():
            raise RunError(
                f"no such script: {self.name} (to run a module, use livepatch run -m MODULE)"
            )


def default_socket_path() -> str:
    """Where the agent listens when neither --socket nor $LIVEPATCH_SOCKET says: one per process."""
    return os.path.join(tempfile.gettempdir(), f"livepatch-{os.getpid()}.sock")


def _terminate_like_python(agent: Agent) -> Callable[[int, object], None]:
    """A SIGTERM handler for a server that has none: stop the agent (its socket file goes away), then
    die of the signal as the server would have without livepatch. Not SystemExit: raised wherever the
    main thread happens to be, it would make servers print tracebacks they never print otherwise."""

    def handler(signum: int, frame: object) -> None:
        agent.stop()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    return handler


def run(
    target: Target,
    *,
    socket_path: str,
    trusted_keys: Sequence[str] = (),
    allow_unsigned: bool = False,
    state_dir: StateDirOption = NEXT_TO_SOCKET,
    on_stale: str = "refuse",
) -> None:
    """Patch the frameworks, start the agent (restoring the stack), run the target in this process until
    it returns.

    Call from the main thread. Raises RunError (bad target, no key, socket unusable), what Agent
    raises for a bad key (KeyFileError), IntegrationRefused when the server builds something live patching cannot cover, and
    whatever the server itself raises (SystemExit included)."""
    sys.path.insert(0, target.search_path())
    target.check()
    if not trusted_keys and not allow_unsigned:
        raise RunError(
            "no trusted key: pass --trusted-key KEY.pub (from livepatch keygen) so the server accepts "
            "patches signed with its private key, or --allow-unsigned (development only)"
        )
    sys.argv = [target.name, *target.args]  # runpy puts the module's file in argv[0] for -m
    try:
        agent = install(
            socket_path,
            trusted_keys=trusted_keys,
            allow_unsigned=allow_unsigned,
            state_dir=state_dir,
            on_stale=on_stale,
        )
    except OSError as exc:  # the socket's directory is missing, a live agent holds it, ...
        raise RunError(
            f"cannot start the agent on {socket_path}: {exc} (choose another --socket)"
        ) from exc
    assert agent is not None
    print(f"livepatch: agent listening on {socket_path}", file=sys.stderr, flush=True)
    if agent.restored:
        done = ", ".join(f"{n.patch_id} {n.outcome}" for n in agent.restored)
        print(f"livepatch: kept patches: {done}", file=sys.stderr, flush=True)
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate_like_python(agent))
    try:
        if target.is_module:
            runpy.run_module(target.name, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(os.path.abspath(target.name), run_name="__main__")
    finally:
        agent.stop()
