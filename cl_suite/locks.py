"""One writer per run folder and per results root (advisory ``fcntl`` locks), and children that die with their parent.

A lock is a file (``.lock``) held open with ``flock``: the kernel drops it when its holder exits, even on SIGKILL,
so a killed run never leaves a stale lock behind. The file records the holder's pid, for the error message only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path


class Busy(RuntimeError):
    """Another live process holds the lock: a second writer is refused (bad input, exit 2)."""


class FolderLock:
    """An exclusive, non-blocking lock on ``folder/.lock``; ``release`` or process exit drops it."""

    def __init__(self, folder: str | Path, what: str) -> None:
        self.path = Path(folder) / ".lock"
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise Busy(f"{self.what} is in use by another cl-suite process (pid {holder}); wait for it to end "
                       "or stop it") from None  # fmt: skip
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __del__(self) -> None:  # a store dropped without release() does not keep its folder locked
        with contextlib.suppress(Exception):  # at interpreter exit the kernel drops the lock anyway
            self.release()

    def __enter__(self) -> FolderLock:
        return self.acquire() if self._fd is None else self

    def __exit__(self, *exc) -> None:
        self.release()


def die_with_parent(parent_pid: int | None = None, sig: int = signal.SIGKILL) -> None:
    """Make this process receive ``sig`` when its parent dies (Linux: ``prctl(PR_SET_PDEATHSIG)``); elsewhere, a
    daemon thread that polls the parent pid. Called first thing in a pool worker, or in a child before exec."""
    parent_pid = os.getppid() if parent_pid is None else parent_pid
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(sig), 0, 0, 0) == 0:  # 1 = PR_SET_PDEATHSIG
            if os.getppid() != parent_pid:  # the parent died before the call: nobody will signal us
                os.kill(os.getpid(), sig)
            return
    threading.Thread(target=_watch_parent, args=(parent_pid, sig), daemon=True).start()


def _watch_parent(parent_pid: int, sig: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os.kill(os.getpid(), sig)
