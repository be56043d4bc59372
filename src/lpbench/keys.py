"""The harness's throwaway signing key: its patches are signed with it and its servers trust it.

Signed, because that is how an operator runs livepatch, and because a signed patch carries its new code
compiled (livepatch.patch.compiled): the agent then stages it without compiling anything on the server's
patcher thread. One key per harness process, in a temporary directory removed at exit. The servers also
keep --allow-unsigned, so that a user's unsigned `--patch FILE` still applies (compiled from source).
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

from livepatch.patch import signing


@functools.cache
def harness_key() -> tuple[Path, Path]:
    """(private key path, public key path), made on first use."""
    where = Path(tempfile.mkdtemp(prefix="lpbench-key-"))
    atexit.register(shutil.rmtree, where, ignore_errors=True)
    private, public, _ = signing.generate_keypair(where / "keys")
    return private, public
