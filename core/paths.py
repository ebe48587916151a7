"""Where the project's own files and tools live on this machine (one source for each path)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# helm and kubectl, unpacked by scripts/install-helm.sh
TOOLS_BIN = PROJECT_ROOT / ".tools" / "bin"
# the virtualenv's scripts: the Temporal CLI, rclone, embedded PostgreSQL's binaries, `bud`
VENV_BIN = Path(sys.executable).parent


def tool_path(name: str) -> str:
    """A project tool (helm, kubectl) from .tools/bin, else from PATH."""
    local = TOOLS_BIN / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found in {TOOLS_BIN} or on PATH: run scripts/install-helm.sh")
    return found
