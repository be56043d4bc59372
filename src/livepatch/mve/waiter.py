"""What the old leader becomes after a promotion: `python -m livepatch.mve.waiter PID`.

The old leader execs this (its memory is released; its pid, parent and standard streams stay), so that
whoever supervises the server's pid still supervises the server: SIGTERM, SIGINT, SIGHUP and SIGQUIT
are forwarded to the promoted follower (our child), and we exit with its status. If this process is
killed outright, so is the follower (SIGKILL by PR_SET_PDEATHSIG, set by the follower at take-over).
"""

from __future__ import annotations

import os
import signal
import sys

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


def wait_for(pid: int) -> int:
    def forward(signum: int, _frame: object) -> None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED:
        signal.signal(signum, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)  # blocked by the leader before exec
    try:
        _, status = os.waitpid(pid, 0)  # retried by Python after each forwarded signal (PEP 475)
    except ChildProcessError:
        return 0
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(wait_for(int(sys.argv[1])))
