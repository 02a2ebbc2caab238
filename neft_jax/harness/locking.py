"""One writer per output folder: an exclusive ``flock`` on ``<folder>/.lock``.

The lock file records who holds it (host, pid, start time), so a refused writer
can name the holder. The kernel drops the lock when the holder's process ends,
however it ends (SIGKILL included), so a stale lock never blocks a later run.
On a shared filesystem this needs ``flock`` support (NFSv4, Lustre, GPFS, BeeGFS).
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket

LOCK_NAME = ".lock"


class FolderBusy(ValueError):
    """Another process writes to this folder."""


class FolderLock:
    """Hold the exclusive lock of ``folder`` (created if missing) until :meth:`release`."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        os.makedirs(folder, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read_holder()
            os.close(self._fd)
            self._fd = None
            raise FolderBusy(f"{folder!r} is in use by {holder}; wait for it to finish or use "
                             "another --out") from None
        os.ftruncate(self._fd, 0)
        os.write(self._fd, json.dumps({
            "host": socket.gethostname(), "pid": os.getpid(),
            "since": datetime.datetime.now().isoformat(timespec="seconds")}).encode())
        os.fsync(self._fd)

    def _read_holder(self) -> str:
        try:
            with open(self.path) as f:
                info = json.load(f)
            return f"pid {info['pid']} on {info['host']} (since {info['since']})"
        except (OSError, ValueError, KeyError):
            return "another process"

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()
