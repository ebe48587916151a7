"""Who a local replica process is, so a supervisor can tell its own replica from a reused pid or another server.

The local cluster backend (clusters/local.py) puts a fresh identity in each replica's environment at start; the
backend reads it back from the process (/proc/<pid>/environ, which `vllm serve` has too) and the simulated runtime
also answers it on /health.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping

from pydantic import BaseModel

ENV_RELEASE = "BUD_REPLICA_RELEASE"
ENV_INDEX = "BUD_REPLICA_INDEX"
ENV_TOKEN = "BUD_REPLICA_TOKEN"  # random per start: a restarted replica has a new one


class ReplicaIdentity(BaseModel):
    release: str
    replica: int
    token: str

    @classmethod
    def new(cls, release: str, replica: int) -> ReplicaIdentity:
        return cls(release=release, replica=replica, token=secrets.token_hex(16))

    def env(self) -> dict[str, str]:
        return {ENV_RELEASE: self.release, ENV_INDEX: str(self.replica), ENV_TOKEN: self.token}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReplicaIdentity | None:
        """The identity a launcher gave this process, or None when it was started by hand."""
        env = os.environ if env is None else env
        if not env.get(ENV_TOKEN):
            return None
        return cls(release=env.get(ENV_RELEASE, ""), replica=int(env.get(ENV_INDEX) or 0), token=env[ENV_TOKEN])
