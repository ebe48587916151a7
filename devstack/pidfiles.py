"""Pid files of the dev stack's processes: how `bud dev status|down` in another shell finds what `up` started."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil


def alive(pid: int) -> bool:
    """Whether pid still runs.

    A child of ours that exited is reaped here. Its zombie may linger briefly while the other threads of a
    multi-threaded program (the Go binaries) finish: that still counts as running, so callers keep polling until it
    is reaped. Someone else's zombie (an orphan waiting for init) counts as gone.
    """
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
        ours = True
    except ChildProcessError:
        ours = False  # not our child: `bud dev down` from another shell
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE or ours
    except psutil.NoSuchProcess:
        return False


class PidFiles:
    def __init__(self, directory: Path):
        self.directory = directory

    def path(self, name: str) -> Path:
        return self.directory / f"{name}.pid"

    def record(self, name: str, pid: int) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path(name).write_text(str(pid))

    def forget(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def running_pid(self, name: str) -> int | None:
        """The recorded pid if that process is alive."""
        try:
            pid = int(self.path(name).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return pid if alive(pid) else None

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> bool:
        """Signal the recorded process, wait, SIGKILL after timeout_s; forget it. True if it was running."""
        pid = self.running_pid(name)
        if pid is not None:
            os.kill(pid, sig)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline and self.running_pid(name):
                time.sleep(0.1)
            if self.running_pid(name):
                os.kill(pid, signal.SIGKILL)
        self.forget(name)
        return pid is not None
