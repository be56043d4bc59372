"""What the old leader becomes after a promotion: `python -m livepatch.mve.waiter PID [FD ARGV...]`.

The old leader execs this (its memory is released; its pid, parent and standard streams stay), so that
whoever supervises the server's pid still supervises the server: SIGTERM, SIGINT, SIGHUP and SIGQUIT
are forwarded to the promoted follower (our child), and we exit with its status. If this process is
killed outright, so is the follower (SIGKILL by PR_SET_PDEATHSIG, set by the follower at take-over).

With follow-back (fallback.py) it also holds FD, a copy of the listening socket, and ARGV, the server's
command line: if the follower dies without a stop having been forwarded to it (killed, crashed, or a
non-zero exit), it executes ARGV with the socket inherited (LIVEPATCH_LISTEN_FD): the old version
serves again, same pid. SIGUSR1 (`livepatch retire`) closes FD and forgets ARGV.
"""

from __future__ import annotations

import os
import signal
import sys

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
RETIRE = signal.SIGUSR1  # fallback.RETIRE_SIGNAL (not imported: this process stays small)
LISTEN_FD_ENV = "LIVEPATCH_LISTEN_FD"


class _Fallback:
    def __init__(self, fd: int, argv: list[str]) -> None:
        self.fd: int | None = fd
        self.argv = argv

    def retire(self, _signum: int = 0, _frame: object = None) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                os.close(fd)
            except OSError:
                pass

    def wanted(self, status: int, stopped: bool) -> bool:
        """The new version died by itself (not asked to stop) while the old one stood by."""
        if self.fd is None or stopped:
            return False
        return os.WIFSIGNALED(status) or (os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0)

    def run_old_version(self, pid: int, status: int) -> None:
        assert self.fd is not None
        how = (
            f"killed by signal {os.WTERMSIG(status)}"
            if os.WIFSIGNALED(status)
            else f"exited with status {os.WEXITSTATUS(status)}"
        )
        sys.stderr.write(
            f"livepatch: the new version (pid {pid}) {how}; the old version takes over (follow-back)\n"
        )
        sys.stderr.flush()
        os.set_inheritable(self.fd, True)
        env = dict(os.environ, **{LISTEN_FD_ENV: str(self.fd)})
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        os.execve(sys.executable, self.argv, env)


def wait_for(pid: int, fallback: _Fallback | None = None) -> int:
    stopped = []

    def forward(signum: int, _frame: object) -> None:
        stopped.append(signum)
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in FORWARDED:
        signal.signal(signum, forward)
    if fallback is not None:
        signal.signal(RETIRE, fallback.retire)
    # Blocked by the leader before exec: a signal during our start waited for its handler.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, (*FORWARDED, RETIRE))
    try:
        _, status = os.waitpid(pid, 0)  # retried by Python after each forwarded signal (PEP 475)
    except ChildProcessError:
        return 0
    if fallback is not None and fallback.wanted(status, bool(stopped)):
        fallback.run_old_version(pid, status)  # execs: does not return
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def main(argv: list[str]) -> int:
    pid = int(argv[0])
    fallback = _Fallback(int(argv[1]), argv[2:]) if len(argv) > 2 else None
    return wait_for(pid, fallback)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
