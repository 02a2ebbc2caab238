"""One writer per output folder: an exclusive ``flock`` on ``<folder>/.lock``.

The lock file records who holds it (host, pid, start time), so a refused writer
can name the holder. The kernel drops the lock when the holder's process ends,
however it ends (SIGKILL included), so a stale lock never blocks a later run.
On a shared filesystem this needs ``flock`` support (NFSv4, Lustre, GPFS, BeeGFS).

A holder that releases the lock deletes the lock file (while it still holds the lock),
and the folder too when it made the folder and nothing else is in it, so a finished
folder holds only its results. A process that opened the file just before it was
deleted then locks a file no longer at the path: after locking, it checks that the
path still names the file it locked (same device and inode) and otherwise starts over,
so two writers never both hold a folder. A killed holder leaves its lock file behind;
the next writer reuses it.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket

LOCK_NAME = ".lock"
#: Tries to lock before giving up, when releasing holders keep deleting the lock file.
ATTEMPTS = 100


class FolderBusy(ValueError):
    """Another process writes to this folder."""


class FolderLock:
    """Hold the exclusive lock of ``folder`` (created if missing) until :meth:`release`."""

    def __init__(self, folder: str):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self.created = False  # whether this lock made the folder (release removes it empty)
        self._fd = None
        for attempt in range(ATTEMPTS):
            self.created = _make_folder(folder) or self.created
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:  # the folder was removed by a releasing holder
                if attempt == ATTEMPTS - 1:
                    raise
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read_holder()
                os.close(fd)
                raise FolderBusy(f"{folder!r} is in use by {holder}; wait for it to finish or "
                                 "use another --out") from None
            if _same_file(fd, self.path):
                self._fd = fd
                break
            os.close(fd)  # a holder deleted the file between our open and lock: start over
        else:
            raise FolderBusy(f"{folder!r}: its lock file changed {ATTEMPTS} times while "
                             "locking; another process keeps taking and releasing it")
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
        """Delete the lock file while the lock is still held (a process that opened it just
        before sees it is gone and starts over), unlock; then remove the folder if this lock
        made it and it is empty (``rmdir`` is atomic and fails on a folder someone else has
        put a file in since)."""
        if self._fd is None:
            return
        try:
            if _same_file(self._fd, self.path):
                os.unlink(self.path)
        except OSError:
            pass
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
        if self.created:
            try:
                os.rmdir(self.folder)
            except OSError:  # not empty (results, another writer's lock): it stays
                pass

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _make_folder(folder: str) -> bool:
    """Create ``folder`` (and its parents); whether this call created ``folder`` itself."""
    parent = os.path.dirname(os.path.abspath(folder))
    os.makedirs(parent, exist_ok=True)
    try:
        os.mkdir(folder)
    except FileExistsError:
        return False
    return True


def _same_file(fd: int, path: str) -> bool:
    """Whether ``path`` names the file open as ``fd`` (same device and inode)."""
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (at_path.st_dev, at_path.st_ino) == (mine.st_dev, mine.st_ino)
