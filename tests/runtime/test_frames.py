"""current_frames(): every thread's frame without CPython 3.11's sys._current_frames() deadlock.

The deadlock (python/cpython#106883) is a lock-order cycle between the runtime's thread-list lock and a
garbage collection started inside sys._current_frames(); threads that keep dropping thread-locals in
reference cycles while another thread reads the frames with the collector at its most eager setting hang
the interpreter within a second. The script runs in a child process: a hang must cost a bounded wait, not
the test run. With sys._current_frames() in place of current_frames() one such child hung in 5 of 6
3-second runs on the project's machine; three children of 8 s each make a miss unlikely.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import threading

import pytest

from livepatch.runtime.frames import current_frames

CHILDREN = 3
SCRIPT = """
import gc, sys, threading, time
from livepatch.runtime.frames import current_frames

gc.set_threshold(1, 1, 1)
stop = threading.Event()

def churn():
    while not stop.is_set():
        local = threading.local()
        local.cycle = [local]  # freed by the collector; its deallocation takes the thread-list lock
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()

workers = [threading.Thread(target=churn, daemon=True) for _ in range(4)]
for w in workers:
    w.start()
end = time.monotonic() + float(sys.argv[1])
calls = 0
while time.monotonic() < end:
    current_frames()
    calls += 1
stop.set()
for w in workers:
    w.join()
print("calls", calls, "gc enabled", gc.isenabled())
"""


@pytest.mark.timeout(120)
@pytest.mark.skipif(sys.version_info >= (3, 12), reason="the deadlock is CPython 3.11's")
def test_reading_frames_while_threads_churn_never_deadlocks() -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, "8"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(CHILDREN)
    ]
    try:
        for child in children:
            try:
                out, err = child.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                pytest.fail(
                    "a process hung reading thread frames (the 3.11 _current_frames deadlock)"
                )
            assert child.returncode == 0, err
            assert out.split()[-1] == "True"  # the collector is on again afterwards
            assert int(out.split()[1]) > 0
    finally:
        for child in children:
            child.kill()
            child.wait(10)


def test_frames_of_every_thread_and_the_collector_setting_kept() -> None:
    started, release = threading.Event(), threading.Event()

    def waiter() -> None:
        started.set()
        release.wait(30)

    t = threading.Thread(target=waiter)
    t.start()
    started.wait(30)
    try:
        was = gc.isenabled()
        frames = current_frames()
        assert gc.isenabled() == was
        assert t.ident in frames and threading.get_ident() in frames
        gc.disable()
        try:
            current_frames()
            assert not gc.isenabled()  # an application that turned it off keeps it off
        finally:
            if was:
                gc.enable()
    finally:
        release.set()
        t.join(30)
