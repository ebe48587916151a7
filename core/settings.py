"""Settings from BUD_* environment variables (pydantic-settings); the defaults are the embedded dev stack's
(`bud dev up`), and BUD_ENV=production refuses its well-known secrets."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Self
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.kubeconfig import KubeconfigPolicy
from core.paths import PROJECT_ROOT
from core.secrets import SecretBox, ensure_key_file

# Settings whose defaults are secrets everyone knows (the dev stack's database and S3 credentials).
DEV_SECRET_SETTINGS = ("database_url", "s3_access_key", "s3_secret_key")

# The dev stack generates a password for each of its servers into the state folder (mode 600, devstack/stack.py);
# in dev, a URL to 127.0.0.1 without a password takes it from there, so a process started by hand reaches them too.
DEV_PASSWORD_FILES = {"database_url": "postgres-password", "redis_url": "redis-password"}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def url_password(url: str) -> str | None:
    """The password a URL carries (decoded), or None."""
    password = urlsplit(url).password
    return unquote(password) if password else None


def url_with_password(url: str, password: str) -> str:
    """`url` with `password` for its user (postgresql://bud@host/db -> postgresql://bud:PASSWORD@host/db)."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    user = quote(unquote(parts.username), safe="") if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))


def redacted(url: str) -> str:
    """`url` without its password, for what the stack prints."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}@{host}" if parts.username else host))


class DevSecretsInProduction(RuntimeError):
    """BUD_ENV=production with a dev default secret. Not a ValueError on purpose: pydantic would wrap that in a
    ValidationError that prints every input, the real secrets already set among them."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BUD_", extra="ignore")

    env: str = Field(default="dev", description="dev (console logs) or production (JSON logs; dev secrets refused)")
    state_dir: Path = PROJECT_ROOT / ".bud"

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    public_inference_base: str = Field(default="", description="inference_url base; defaults to the gateway URL")
    api_max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="larger request bodies get 413")
    api_max_header_bytes: int = Field(default=8 * 1024, ge=1024, description="larger request headers get 431")

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    temporal_tls: bool = Field(default=False, description=(
        "connect to Temporal over TLS (a production cluster's frontend); the files below are optional"))
    temporal_tls_ca_file: str = Field(default="", description=(
        "PEM CA bundle for Temporal's certificate; empty: the system's roots"))
    temporal_tls_cert_file: str = Field(default="", description="PEM client certificate for mutual TLS")
    temporal_tls_key_file: str = Field(default="", description="PEM private key of the client certificate")
    temporal_tls_server_name: str = Field(default="", description=(
        "the name checked on Temporal's certificate; empty: the address's host"))
    temporal_ui_port: int = 8233
    control_queue: str = "bud-control"
    optimizer_queue: str = "bud-optimizer"

    database_url: str = Field(default="postgresql://bud@127.0.0.1:55432/bud", description=(
        "in dev, without a password, the dev stack's generated one from <state_dir>/postgres-password"))
    db_pool_min: int = 1
    db_pool_max: int = 10

    s3_endpoint: str = "http://127.0.0.1:9000"
    s3_endpoint_for_pods: str = Field(default="", description=(
        "the same store as a Kubernetes cluster's pods reach it (their model copy), e.g. "
        "http://s3.storage.svc:9000; empty: s3_endpoint"))
    s3_access_key: str = "budadmin"
    s3_secret_key: str = "budadmin-secret"
    s3_region: str = "us-east-1"
    models_bucket: str = "models"
    upload_max_file_bytes: int = Field(default=64 * 1024**3, ge=1, le=10_000 * 16 * 1024**2, description=(
        "largest file PUT /api/models/uploads/... accepts (413 above); at most S3's 10,000 parts of 16 MB"))
    upload_max_bytes: int = Field(default=1024**4, ge=1, description=(
        "most bytes one model version's uploaded files may hold together (413 above)"))

    clamd_host: str = "127.0.0.1"
    clamd_port: int = 3310

    prometheus_url: str = "http://127.0.0.1:9090"

    redis_url: str = Field(default="redis://127.0.0.1:56379/0", description=(
        "the gateway's shared limit counters; in dev, without a password, the dev stack's generated one from "
        "<state_dir>/redis-password; production refuses a URL without a password"))

    local_cluster_name: str = "local"
    local_cluster_gpu_type: str = "nvidia-h100-80gb"
    local_cluster_gpu_count: int = 8
    local_cluster_simulation: dict[str, float] | None = Field(
        default={"ttft_scale": 1.3, "tpot_scale": 0.8, "batch_scale": 1.5}, description=(
            "how the platform's local cluster's simulated GPUs differ from the optimizer's uncalibrated model (JSON: "
            "ttft_scale, tpot_scale, batch_scale; null: not at all), so that benchmarks there teach the predictor "
            "something; a measured silicon profile of the model takes precedence. Read when the cluster is first "
            "registered"))

    sim_load_delay_s: float = Field(default=0.0, ge=0, description="simulated model load time of local replicas")
    deploy_ready_timeout_s: float = Field(default=900, gt=0, description="how long replicas may take to become ready")
    drain_timeout_s: float = Field(default=30, ge=1, le=600, description=(
        "before a replica stops it leaves the route and its in-flight requests get this long to finish"))
    reoptimize_interval_s: float = Field(
        default=300, ge=10, description="how often the Reoptimize schedule observes every RUNNING endpoint"
    )
    autoscale_sync_s: float = Field(
        default=15.0, gt=0, le=3600, description="how often the local autoscaler samples load (the HPA's sync period)"
    )
    scale_to_zero_min_s: float = Field(
        default=60, ge=1, le=86_400, description="the shortest idle period an endpoint may scale to zero after"
    )
    worker_metrics_port: int = Field(default=0, description="Prometheus port for the worker's SDK metrics; 0 = off")
    worker_shutdown_grace_s: float = Field(default=10, ge=0, le=3600, description=(
        "after SIGTERM the worker stops polling and its running activities get this long before they are "
        "cancelled (Temporal retries them on another worker)"))
    secret_key: str = Field(default="", repr=False, description=(
        "Fernet key sealing kubeconfigs and provider keys at rest; the dev stack generates one into "
        "<state_dir>/secret-key, production must set it"))
    kubeconfig_allow_plugins: bool = Field(default=False, description=(
        "administrator's choice: accept kubeconfigs whose users run exec/auth-provider credential plugins"))
    kubeconfig_allow_local_files: bool = Field(default=False, description=(
        "administrator's choice: accept kubeconfigs naming local files (client-certificate, tokenFile, ...)"))
    provider_allow_private_urls: bool = Field(default=False, description=(
        "administrator's choice: accept provider base URLs that are plain http or point at loopback or private "
        "addresses (core/provider_urls.py)"))
    worker_metrics_base_port: int = Field(default=8100, description="dev stack: worker i exposes metrics on base + i")

    @model_validator(mode="after")
    def _dev_stack_passwords(self) -> Self:
        """In dev, a URL to this machine without a password takes the dev stack's generated one, if there is one."""
        if self.env == "production":
            return self
        for name, file_name in DEV_PASSWORD_FILES.items():
            url = getattr(self, name)
            if url_password(url) is None and urlsplit(url).hostname in LOOPBACK_HOSTS:
                try:
                    password = (self.state_dir / file_name).read_text().strip()
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if password:
                    setattr(self, name, url_with_password(url, password))
        return self

    @model_validator(mode="after")
    def _production_needs_its_own_secrets(self) -> Self:
        if self.env != "production":
            return self
        defaults = [f"BUD_{name.upper()}" for name in DEV_SECRET_SETTINGS
                    if getattr(self, name) == type(self).model_fields[name].default]
        if url_password(self.redis_url) is None:
            defaults.append("BUD_REDIS_URL")
        if not self.secret_key:
            defaults.append("BUD_SECRET_KEY")
        if defaults:
            raise DevSecretsInProduction(
                f"BUD_ENV=production refuses the dev stack's default secrets: set {', '.join(defaults)} "
                "(this deployment's own database URL, S3 credentials and a Redis URL with its password)"
            )
        return self

    def as_environment(self) -> dict[str, str]:
        """These settings as BUD_* variables, for the processes we start (workers, API, gateway)."""
        return {f"BUD_{name.upper()}": str(value) for name, value in self.model_dump().items() if value is not None}

    @property
    def kubeconfig_policy(self) -> KubeconfigPolicy:
        return KubeconfigPolicy(allow_plugins=self.kubeconfig_allow_plugins,
                                allow_local_files=self.kubeconfig_allow_local_files)

    def secret_box(self) -> SecretBox:
        """Seals and opens secrets at rest with BUD_SECRET_KEY, or in dev with the state folder's own key."""
        return SecretBox(self.secret_key or ensure_key_file(self.state_dir / "secret-key"))

    @property
    def admin_token_path(self) -> Path:
        """The first admin token, written once (mode 600) on the first start."""
        return self.state_dir / "admin-token"

    @property
    def pod_s3_endpoint(self) -> str:
        """Where a Kubernetes cluster's pods fetch models from (this process's 127.0.0.1 is not theirs)."""
        return self.s3_endpoint_for_pods or self.s3_endpoint

    @property
    def gateway_url(self) -> str:
        return self.public_inference_base or f"http://{self.gateway_host}:{self.gateway_port}/v1"


@lru_cache
def get_settings() -> Settings:
    return Settings()
