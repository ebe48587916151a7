"""clamd (Debian clamav-daemon) on 127.0.0.1 with the project's own signature folder and deliberate limits.

The limits work together with the scanning client (registry/clamd.py):
- StreamMaxLength is the longest INSTREAM clamd accepts; the client never sends more in one stream and scans larger
  files as overlapping windows (registry/README.md). Both read STREAM_MAX_BYTES, so they cannot drift apart.
- MaxScanSize bounds what clamd inspects inside one stream, archive members it unpacks included; with
  AlertExceedsMax, content beyond it is reported as `Heuristics.Limits.Exceeded.MaxScanSize` instead of being
  called clean, so a scan fails closed. MaxFileSize is set to the same value on purpose: clamd silently trims an
  archive member that decompresses beyond MaxFileSize and scans only its start (measured with ClamAV 1.4: no
  alert), so MaxFileSize must not be the smaller limit.
- MaxScanTime is generous because two shared CPU cores can be slow; the client waits a little longer than it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from core.processes import ManagedProcess
from registry.clamd import DEFAULT_STREAM_MAX_BYTES

CLAMD_BINARY = "/usr/sbin/clamd"
SIGNATURE_DIR = Path(__file__).resolve().parent / "clamav"  # shipped EICAR test signatures

STREAM_MAX_BYTES = DEFAULT_STREAM_MAX_BYTES  # 64 MiB: one INSTREAM window
MAX_SCAN_BYTES = 1024 * 1024 * 1024  # 1 GiB: a window plus the archive members unpacked from it
MAX_SCAN_TIME_MS = 300_000
MAX_THREADS = 8  # concurrent scans (the client pipelines two windows per file)


def clamd_config(state_dir: Path, port: int, database_dir: Path = SIGNATURE_DIR,
                 stream_max_bytes: int = STREAM_MAX_BYTES, max_scan_bytes: int = MAX_SCAN_BYTES) -> str:
    """The clamd.conf text: TCP on 127.0.0.1:port, foreground, state under state_dir, no freshclam.

    The limit arguments exist for tests that exercise the policies with small files; the scanning client must be
    given the same stream_max_bytes.
    """
    temp_dir = state_dir / "clamd-tmp"  # INSTREAM data is spooled here while it is scanned
    lines = {
        "TCPSocket": str(port),
        "TCPAddr": "127.0.0.1",
        "Foreground": "yes",
        "DatabaseDirectory": str(database_dir),
        "TemporaryDirectory": str(temp_dir),
        "LogFile": str(state_dir / "logs" / "clamd.log"),
        "LogTime": "yes",
        "LogFileMaxSize": "20M",
        "StreamMaxLength": str(stream_max_bytes),
        "MaxFileSize": str(max_scan_bytes),  # not below MaxScanSize: see the module docstring
        "MaxScanSize": str(max_scan_bytes),
        "MaxScanTime": str(MAX_SCAN_TIME_MS),
        "AlertExceedsMax": "yes",
        "MaxThreads": str(MAX_THREADS),
        "SelfCheck": "3600",  # signatures only change when someone copies files in
    }
    # No `User` line: clamd then keeps the identity it was started with (root here, or a normal user elsewhere);
    # with `User clamav` it would switch user and lose access to a root-owned state folder.
    return "".join(f"{key} {value}\n" for key, value in lines.items())


def clamd_ping(host: str, port: int, timeout: float = 1.0) -> bool:
    """The health check: clamd answers PING with PONG once its signatures are loaded."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"zPING\0")
            reply = b""
            while not reply.endswith(b"\0"):
                data = sock.recv(64)
                if not data:
                    break
                reply += data
            return reply == b"PONG\0"
    except OSError:
        return False


def clamd_process(state_dir: Path, port: int, database_dir: Path = SIGNATURE_DIR,
                  stream_max_bytes: int = STREAM_MAX_BYTES, max_scan_bytes: int = MAX_SCAN_BYTES) -> ManagedProcess:
    """clamd on 127.0.0.1:port with its config, temp folder and log under state_dir (written here, idempotently)."""
    if not os.access(CLAMD_BINARY, os.X_OK):
        raise FileNotFoundError(f"{CLAMD_BINARY} not found: install the Debian package clamav-daemon")
    state_dir = Path(state_dir)
    (state_dir / "clamd-tmp").mkdir(parents=True, exist_ok=True)
    (state_dir / "logs").mkdir(parents=True, exist_ok=True)
    config_path = state_dir / "clamd.conf"
    config_path.write_text(clamd_config(state_dir, port, database_dir, stream_max_bytes, max_scan_bytes))
    return ManagedProcess(
        name="clamd",
        argv=[CLAMD_BINARY, "-c", str(config_path)],
        # clamd writes its full log to LogFile and a few lines to stdout; both go to the same file (append mode)
        log_path=state_dir / "logs" / "clamd.log",
        healthy=lambda: clamd_ping("127.0.0.1", port),
        url=f"tcp://127.0.0.1:{port}",
        startup_timeout_s=60,
        stop_timeout_s=10,
    )
