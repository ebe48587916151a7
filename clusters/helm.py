"""The Helm 3 command line, run as an asyncio subprocess against a kubeconfig given as text.

Each call writes the kubeconfig (and values) to private temporary files that are removed afterwards. Helm's
failures become the project's exceptions: an unreachable API server is ClusterUnreachable (retried), values the
chart rejects are DeploymentFailed (permanent), anything else is HelmError (retried).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from clusters.base import ClusterUnreachable, DeploymentFailed
from core.paths import tool_path
from core.processes import die_with_parent

# stderr fragments that mean the API server did not answer: worth retrying later.
UNREACHABLE_MARKERS = (
    "kubernetes cluster unreachable",
    "connection refused",
    "i/o timeout",
    "no such host",
    "tls handshake timeout",
    "context deadline exceeded",
    "connection reset by peer",
    "the server is currently unable to handle the request",
)
# stderr fragments that mean the values or the manifests are wrong: retrying cannot help.
INVALID_MARKERS = (
    "values don't meet the specifications of the schema",
    "execution error at",
    "parse error",
    " is invalid:",
    "is forbidden",
    "exceeded quota",
)
BUSY_MARKER = "another operation (install/upgrade/rollback) is in progress"


class HelmError(Exception):
    """helm failed for a reason that may pass (the activity retries)."""

    def __init__(self, command: list[str], returncode: int, stderr: str):
        self.command = command
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"helm {command[0]} failed (exit {returncode}): {self.stderr}")

    @property
    def busy(self) -> bool:
        """Another helm operation holds the release (or one died half-way and left it pending)."""
        return BUSY_MARKER in self.stderr


def default_helm_binary() -> str:
    """The project's helm (scripts/install-helm.sh puts it in .tools/bin), else one on PATH."""
    return tool_path("helm")



def _error_for(command: list[str], returncode: int, stderr: str) -> Exception:
    text = stderr.lower()
    if any(marker in text for marker in UNREACHABLE_MARKERS):
        return ClusterUnreachable(f"helm {command[0]}: {stderr.strip()}")
    if any(marker in text for marker in INVALID_MARKERS):
        return DeploymentFailed(f"helm {command[0]} rejected the release: {stderr.strip().removeprefix('Error: ')}")
    return HelmError(command, returncode, stderr)


@contextlib.contextmanager
def _private_file(text: str, suffix: str) -> Iterator[Path]:
    handle, name = tempfile.mkstemp(prefix="bud-helm-", suffix=suffix)  # mode 0600
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


class Helm:
    def __init__(self, binary: str | None = None, timeout_s: float = 300.0):
        self.binary = binary or default_helm_binary()
        self.timeout_s = timeout_s

    async def run(self, args: list[str], kubeconfig: str | None = None, values: dict[str, Any] | None = None) -> str:
        """Run `helm ARGS [--kubeconfig F] [-f V]`; stdout on success, the mapped exception otherwise."""
        with contextlib.ExitStack() as files:
            argv = [self.binary, *args]
            if kubeconfig is not None:
                argv += ["--kubeconfig", str(files.enter_context(_private_file(kubeconfig, ".kubeconfig")))]
            if values is not None:
                argv += ["-f", str(files.enter_context(_private_file(yaml.safe_dump(values), ".values.yaml")))]
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL,
                preexec_fn=die_with_parent,
            )
            try:
                async with asyncio.timeout(self.timeout_s):
                    stdout, stderr = await process.communicate()
            except BaseException:  # timeout or cancellation: do not leave helm running
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
                raise
        if process.returncode != 0:
            raise _error_for(args, process.returncode, stderr.decode(errors="replace"))
        return stdout.decode()

    # ---- the commands the backend uses ----------------------------------------------------------------------

    async def upgrade_install(
        self, release: str, chart: Path, namespace: str, values: dict[str, Any], kubeconfig: str
    ) -> None:
        await self.run(
            ["upgrade", "--install", release, str(chart), "--namespace", namespace, "--create-namespace",
             "--reset-values", "--history-max", "5"],
            kubeconfig=kubeconfig,
            values=values,
        )

    async def template(self, release: str, chart: Path, namespace: str, values: dict[str, Any]) -> str:
        return await self.run(["template", release, str(chart), "--namespace", namespace], values=values)

    async def status(self, release: str, namespace: str, kubeconfig: str) -> dict[str, Any] | None:
        """`helm status -o json`, or None when there is no such release."""
        try:
            return json.loads(await self.run(["status", release, "--namespace", namespace, "-o", "json"], kubeconfig))
        except HelmError as error:
            if "release: not found" in error.stderr:
                return None
            raise

    async def manifest(self, release: str, namespace: str, kubeconfig: str) -> str:
        return await self.run(["get", "manifest", release, "--namespace", namespace], kubeconfig)

    async def rollback(self, release: str, namespace: str, kubeconfig: str) -> None:
        await self.run(["rollback", release, "--namespace", namespace], kubeconfig)

    async def uninstall(self, release: str, namespace: str, kubeconfig: str, wait_s: int = 120) -> None:
        await self.run(
            ["uninstall", release, "--namespace", namespace, "--ignore-not-found", "--wait", "--timeout", f"{wait_s}s"],
            kubeconfig,
        )
