"""`--huge-pages`: run kvserver with transparent huge pages for its heap (docs/validated-updates.md).

fork() copies the page tables, one entry per 4 KiB page: at 10M keys (1.3 GB) the fork of a validated
update took ~1 s with 4 KiB pages and 2.7 ms with huge pages (docs/performance.md). Python's small-object
allocator (pymalloc) takes its arenas with mmap, not through malloc, so the setting is two environment
variables read when the interpreter starts: PYTHONMALLOC=malloc (every object through glibc's malloc)
and GLIBC_TUNABLES=glibc.malloc.hugetlb=1 (malloc asks for transparent huge pages, madvise).
`reexec_if_needed` adds them and re-executes the same command line (same pid, so a supervisor keeps
the same process) before anything else happens; the re-executed process finds them set and goes on.
The kernel must allow THP (`madvise` or `always` in /sys/kernel/mm/transparent_hugepage/enabled) and
glibc must be 2.35 or newer; otherwise the server runs as without the option, and says so.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

TUNABLE = "glibc.malloc.hugetlb=1"
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def active() -> bool:
    """The interpreter was started with the huge-page settings."""
    return os.environ.get("PYTHONMALLOC") == "malloc" and TUNABLE in os.environ.get(
        "GLIBC_TUNABLES", ""
    ).split(":")


def problems() -> list[str]:
    """Why huge pages would not be used on this machine (empty: they will be)."""
    found: list[str] = []
    try:
        if "[never]" in THP_SETTING.read_text():
            found.append(f"transparent huge pages are disabled ({THP_SETTING} says never)")
    except OSError:
        found.append(f"this kernel has no transparent huge pages ({THP_SETTING} is missing)")
    try:
        name, _, version = (os.confstr("CS_GNU_LIBC_VERSION") or "").partition(" ")
        major, minor = (int(x) for x in version.split(".")[:2])
        if name != "glibc" or (major, minor) < (2, 35):
            found.append(f"glibc {version} has no glibc.malloc.hugetlb tunable (2.35 or newer)")
    except (ValueError, OSError):
        found.append("the C library is not glibc (no glibc.malloc.hugetlb tunable)")
    return found


def reexec_if_needed() -> None:
    """Re-execute this command line with the huge-page settings, unless they are set already."""
    if active():
        return
    env = dict(os.environ)
    env["PYTHONMALLOC"] = "malloc"
    tunables = [t for t in env.get("GLIBC_TUNABLES", "").split(":") if t]
    env["GLIBC_TUNABLES"] = ":".join([*tunables, TUNABLE])
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os.execve(sys.executable, sys.orig_argv, env)
