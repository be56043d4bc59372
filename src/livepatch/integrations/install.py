"""Install every framework integration and, optionally, start the agent: the one line a server needs.

Imported only by `livepatch.integrations` (never by `import livepatch`): importing it costs nothing
much; `install()` imports the frameworks it patches (socketserver, http.server, asyncio,
concurrent.futures), which the server would import anyway.
"""

from __future__ import annotations

import atexit
import importlib
import os
import threading
from collections.abc import Sequence

from livepatch.agent.agent import NEXT_TO_SOCKET, Agent, StateDirOption

# The integrations, in the order they are installed (http_server relies on socketserver's threads).
FRAMEWORKS: tuple[str, ...] = ("socketserver", "http_server", "asyncio", "futures")

_lock = threading.Lock()


def install_frameworks(frameworks: Sequence[str] = FRAMEWORKS) -> None:
    """Patch the standard library's frameworks (docs/integrations.md says exactly what). Idempotent and
    thread-safe; call it before the server builds its servers, loops and pools."""
    unknown = sorted(set(frameworks) - set(FRAMEWORKS))
    if unknown:
        raise ValueError(f"unknown framework(s) {unknown}: choose from {list(FRAMEWORKS)}")
    with _lock:
        for name in FRAMEWORKS:
            if name in frameworks:
                importlib.import_module(f"livepatch.integrations.{name}").install()


def install(
    socket_path: str | os.PathLike[str] | None = None,
    trusted_keys: Sequence[str | os.PathLike[str]] = (),
    allow_unsigned: bool = False,
    *,
    frameworks: Sequence[str] = FRAMEWORKS,
    state_dir: StateDirOption = NEXT_TO_SOCKET,
    on_stale: str = "refuse",
) -> Agent | None:
    """Make a server that starts itself live-patchable: patch the frameworks and, with `socket_path`,
    start an Agent there (stopped at interpreter exit) and return it.

        livepatch.integrations.install("/run/app/livepatch.sock", trusted_keys=["author.pub"])

    state_dir, on_stale: as Agent's: the applied stack is kept in SOCKET.state by default and
    re-applied here, before this returns, when the server starts again (docs/cli.md, "State directory").
    Call it from the main thread before the server is built, after the modules it patches can be imported.
    Raises what Agent.start raises for a bad key, an unusable socket path or state directory, or stale
    patches. Calling it again patches nothing twice; each call with a socket path
    starts one more agent (one per socket).
    """
    install_frameworks(frameworks)
    if socket_path is None:
        return None
    agent = Agent(
        socket_path,
        trusted_keys=trusted_keys,
        allow_unsigned=allow_unsigned,
        state_dir=state_dir,
        on_stale=on_stale,
    )
    agent.start()
    atexit.register(agent.stop)
    return agent
