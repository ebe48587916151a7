"""charts/bud-foundry (the control plane's own chart): `helm lint --strict`, `helm template` over representative values
with every manifest validated offline (kubernetes-validate; KEDA's kinds against tests/fixtures/keda-crds.yaml), the
settings the pods get read back by the real Settings, the schema's refusals, and the image's Dockerfile.
Installing it on the Kubernetes test cluster: tests/kube/test_foundry_install.py.

Also here: inference pods on a Kubernetes cluster fetch models from BUD_S3_ENDPOINT_FOR_PODS, and
`python -m core.migrate` (the chart's migration Job) against a real PostgreSQL.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import tomllib
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import jsonschema
import kubernetes_validate
import pytest
import yaml
from cryptography.fernet import Fernet

from clusters.helm import default_helm_binary
from clusters.kubernetes import KubernetesBackend
from core.db import migration_files
from core.settings import Settings
from core.temporal import temporal_tls
from tests.test_chart import deployment_spec, render as render_runtime, write_values

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "bud-foundry"
CI = {path.stem.removesuffix("-values"): path for path in sorted((CHART / "ci").glob("*-values.yaml"))}
KEDA_CRDS = ROOT / "tests" / "fixtures" / "keda-crds.yaml"
KUBE_VERSIONS = ("1.33", "1.36")
KEDA_API = "keda.sh/v1alpha1/ScaledObject"
MONITORING_API = "monitoring.coreos.com/v1/ServiceMonitor"
WORKERS = ("control", "optimizer")


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([default_helm_binary(), *args], capture_output=True, text=True, check=check)


def template_args(values_file: Path, *extra: str, api_versions: tuple[str, ...] = ()) -> list[str]:
    args = ["template", "bud", str(CHART), "-n", "bud-system", "-f", str(values_file), *extra]
    for api in api_versions:
        args += ["--api-versions", api]
    return args


def render(values_file: Path, *extra: str, api_versions: tuple[str, ...] = ()) -> dict[str, dict]:
    """`helm template` -> {"Kind/name": manifest}."""
    output = helm(*template_args(values_file, *extra, api_versions=api_versions)).stdout
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in yaml.safe_load_all(output) if doc}


def refusal(values_file: Path, *extra: str) -> str:
    result = helm(*template_args(values_file, *extra), check=False)
    assert result.returncode != 0, f"helm template accepted {extra}"
    return result.stderr


def of_kind(manifests: dict[str, dict], kind: str) -> dict[str, dict]:
    return {name.split("/", 1)[1]: doc for name, doc in manifests.items() if doc["kind"] == kind}


def pod_spec(manifests: dict[str, dict], name: str) -> dict:
    kind = "Job" if "-migrate-" in name else "Deployment"
    return manifests[f"{kind}/{name}"]["spec"]["template"]["spec"]


def crd_schemas() -> dict[str, dict]:
    return {crd["spec"]["names"]["kind"]: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
            for crd in yaml.safe_load_all(KEDA_CRDS.read_text())}


def pod_environment(manifests: dict[str, dict], secret_data: dict[str, str] | None = None) -> dict[str, str]:
    """What envFrom gives every pod: the settings ConfigMap and the Secret."""
    env = dict(manifests["ConfigMap/bud-settings"]["data"])
    if secret_data is None:
        secret_data = manifests["Secret/bud-secrets"]["stringData"]
    return {**env, **secret_data}


def settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in [name for name in os.environ if name.startswith("BUD_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


# ---- lint and validation over the representative values ----------------------------------------------------------


def test_the_representative_values_exist() -> None:
    assert sorted(CI) == ["default", "existing-secrets", "keda", "tls"]


@pytest.mark.parametrize("values_file", CI.values(), ids=CI.keys())
def test_helm_lint_strict_passes(values_file: Path) -> None:
    result = helm("lint", "--strict", str(CHART), "-f", str(values_file), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize("values_file", CI.values(), ids=CI.keys())
def test_every_rendered_manifest_is_valid_kubernetes_or_valid_against_its_crd(values_file: Path) -> None:
    manifests = render(values_file, api_versions=(KEDA_API, MONITORING_API))
    schemas = crd_schemas()
    for name, manifest in manifests.items():
        if manifest["kind"] in schemas:
            jsonschema.validate(manifest, schemas[manifest["kind"]])
            continue
        if manifest["kind"] == "ServiceMonitor":  # not in the Kubernetes schemas; its fields are checked below
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{name} is not valid Kubernetes {version}: {error.message} at {list(error.path)}")


# ---- what the default release holds -------------------------------------------------------------------------------


def test_the_default_release_runs_every_component_hardened() -> None:
    manifests = render(CI["default"])
    assert set(of_kind(manifests, "Deployment")) == {"bud-api", "bud-gateway", "bud-worker-control",
                                                     "bud-worker-optimizer"}
    assert set(of_kind(manifests, "Service")) == {"bud-api", "bud-gateway"}
    assert set(of_kind(manifests, "Job")) == {"bud-migrate-1"}
    assert set(of_kind(manifests, "PodDisruptionBudget")) == {"bud-gateway"}
    # No KEDA and no Prometheus Operator on this cluster: CPU autoscalers, no ScaledObject, no ServiceMonitor.
    assert set(of_kind(manifests, "HorizontalPodAutoscaler")) == {"bud-gateway", "bud-worker-control",
                                                                  "bud-worker-optimizer"}
    assert not of_kind(manifests, "ScaledObject") and not of_kind(manifests, "ServiceMonitor")

    for name in ("bud-api", "bud-gateway", "bud-worker-control", "bud-worker-optimizer", "bud-migrate-1"):
        pod = pod_spec(manifests, name)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        (container,) = pod["containers"]
        assert container["image"] == "ghcr.io/bud-foundry/bud-foundry:0.1.0"
        assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                                "capabilities": {"drop": ["ALL"]}}
        # The writable places on a read-only root: /tmp (HOME, helm's caches) and the state folder.
        assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp", "/var/lib/bud"}
        assert container["envFrom"] == [{"configMapRef": {"name": "bud-settings"}},
                                        {"secretRef": {"name": "bud-secrets"}}]
        assert container["resources"]["requests"] and container["resources"]["limits"]
        if name != "bud-migrate-1":
            assert container["readinessProbe"] and container["startupProbe"]

    api = pod_spec(manifests, "bud-api")["containers"][0]
    assert api["command"] == ["python", "-m", "api"]
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert manifests["Deployment/bud-api"]["spec"]["replicas"] == 2
    assert pod_spec(manifests, "bud-migrate-1")["containers"][0]["command"] == ["python", "-m", "core.migrate"]
    assert pod_spec(manifests, "bud-migrate-1")["restartPolicy"] == "Never"


def test_the_gateway_has_several_replicas_a_disruption_budget_and_a_cpu_autoscaler() -> None:
    manifests = render(CI["default"])
    gateway = manifests["Deployment/bud-gateway"]
    assert "replicas" not in gateway["spec"]  # the HPA owns the count
    hpa = manifests["HorizontalPodAutoscaler/bud-gateway"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "bud-gateway"}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
    pdb = manifests["PodDisruptionBudget/bud-gateway"]["spec"]
    assert pdb == {"maxUnavailable": 1, "selector": {"matchLabels": gateway["spec"]["selector"]["matchLabels"]}}
    container = pod_spec(manifests, "bud-gateway")["containers"][0]
    assert container["command"][:3] == ["python", "-m", "gateway"]
    assert container["command"][3:] == ["--host", "0.0.0.0", "--port", "8080",
                                        "--route-source", "gateway.postgres_source:from_environment"]
    env = {item["name"]: item for item in container["env"]}
    assert env["BUD_GATEWAY_ADVERTISE_URL"]["value"] == "http://$(POD_IP):8080"
    assert env["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert container["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "5"]}}
    # Replicas prefer different nodes.
    spread = pod_spec(manifests, "bud-gateway")["affinity"]["podAntiAffinity"]
    term = spread["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"]["app.kubernetes.io/component"] == "gateway"


def test_each_worker_polls_its_queue_and_gets_its_shutdown_grace_plus_a_margin() -> None:
    manifests = render(CI["default"], "--set", "workers.shutdownGraceSeconds=45",
                       "--set", "workers.shutdownMarginSeconds=15", "--set", "taskQueues.control=ctl-q")
    settings = manifests["ConfigMap/bud-settings"]["data"]
    assert settings["BUD_WORKER_SHUTDOWN_GRACE_S"] == "45"
    assert settings["BUD_CONTROL_QUEUE"] == "ctl-q" and settings["BUD_OPTIMIZER_QUEUE"] == "bud-optimizer"
    for role, queue in (("control", "ctl-q"), ("optimizer", "bud-optimizer")):
        pod = pod_spec(manifests, f"bud-worker-{role}")
        assert pod["terminationGracePeriodSeconds"] == 60
        (container,) = pod["containers"]
        assert container["command"] == ["python", "-m", "worker", "--queue", queue,
                                        "--ready-file", "/tmp/worker-ready.json"]
        assert container["readinessProbe"]["exec"]["command"] == ["test", "-f", "/tmp/worker-ready.json"]
        assert manifests[f"Deployment/bud-worker-{role}"]["metadata"]["labels"]["bud.ai/task-queue"] == queue


def test_the_pods_settings_are_real_settings_that_production_accepts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every BUD_* variable the chart sets is a setting, and Settings() (BUD_ENV=production, which refuses the dev
    stack's secrets) reads the release's ConfigMap and Secret into what the values said."""
    manifests = render(CI["default"])
    env = pod_environment(manifests)
    known = {f"BUD_{name.upper()}" for name in Settings.model_fields}
    assert {name for name in env if name.startswith("BUD_")} - known == set()
    settings = settings_from(env, monkeypatch)
    assert settings.env == "production"
    assert settings.database_url == "postgresql://bud:db-password@postgres.databases.svc:5432/bud"
    assert settings.temporal_address == "temporal-frontend.temporal.svc:7233" and not settings.temporal_tls
    assert settings.api_host == "0.0.0.0" and settings.api_port == 8000
    assert settings.pod_s3_endpoint == settings.s3_endpoint == "http://s3.storage.svc:9000"
    assert settings.gateway_url == "http://bud-gateway.bud-system.svc:8080/v1"
    assert str(settings.state_dir) == "/var/lib/bud"
    Fernet(settings.secret_key.encode())  # the generated key seals and opens


def test_a_generated_secret_key_is_a_fresh_fernet_key_each_install_and_kept_on_uninstall() -> None:
    first = render(CI["default"])["Secret/bud-secrets"]
    second = render(CI["default"])["Secret/bud-secrets"]
    keys = [secret["stringData"]["BUD_SECRET_KEY"] for secret in (first, second)]
    assert keys[0] != keys[1]
    for key in keys:
        assert len(base64.urlsafe_b64decode(key)) == 32
        Fernet(key.encode())
    # Uninstalling must not lose the key that seals stored kubeconfigs (an upgrade reuses it: the install test).
    assert first["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_pods_roll_when_settings_change() -> None:
    before = render(CI["tls"])["Deployment/bud-api"]["spec"]["template"]["metadata"]["annotations"]
    after = render(CI["tls"], "--set", "clamd.port=3311")["Deployment/bud-api"]["spec"]["template"]["metadata"][
        "annotations"]
    assert before["checksum/config"] != after["checksum/config"]
    assert before["checksum/secrets"] == after["checksum/secrets"]  # the tls values fix the secret key


# ---- existing secrets, several replicas, monitoring ----------------------------------------------------------------


def test_existing_secrets_and_fixed_replica_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    manifests = render(CI["existing-secrets"], api_versions=(MONITORING_API,))
    assert not of_kind(manifests, "Secret")
    assert not of_kind(manifests, "HorizontalPodAutoscaler") and not of_kind(manifests, "ScaledObject")
    replicas = {name: doc["spec"]["replicas"] for name, doc in of_kind(manifests, "Deployment").items()}
    assert replicas == {"bud-api": 3, "bud-gateway": 4, "bud-worker-control": 4, "bud-worker-optimizer": 2}
    assert manifests["PodDisruptionBudget/bud-gateway"]["spec"]["maxUnavailable"] == 2
    for name in replicas:
        container = pod_spec(manifests, name)["containers"][0]
        assert {"secretRef": {"name": "bud-foundry-credentials"}} in container["envFrom"]
        assert "checksum/secrets" not in manifests[f"Deployment/{name}"]["spec"]["template"]["metadata"]["annotations"]

    # The existing Secret's keys, as the README tells the platform team to fill them, make a valid production config.
    secret = {"BUD_DATABASE_URL": "postgresql://bud:x@db:5432/bud", "BUD_REDIS_URL": "redis://:y@redis:6379/0",
              "BUD_S3_ACCESS_KEY": "ak", "BUD_S3_SECRET_KEY": "sk", "BUD_SECRET_KEY": Fernet.generate_key().decode()}
    assert settings_from(pod_environment(manifests, secret), monkeypatch).redis_url == "redis://:y@redis:6379/0"

    # The cluster serves ServiceMonitor: one for the API's and one for the gateway's /metrics.
    monitors = of_kind(manifests, "ServiceMonitor")
    assert set(monitors) == {"bud-api", "bud-gateway"}
    for name, monitor in monitors.items():
        service = manifests[f"Service/{name}"]
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
        assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "30s"}]
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["bud-system"]}
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"


# ---- KEDA ---------------------------------------------------------------------------------------------------------


def test_keda_on_the_cluster_scales_each_worker_on_its_task_queue_backlog() -> None:
    manifests = render(CI["default"], api_versions=(KEDA_API,))
    assert set(of_kind(manifests, "HorizontalPodAutoscaler")) == {"bud-gateway"}  # the workers' belong to KEDA
    scaled = of_kind(manifests, "ScaledObject")
    assert set(scaled) == {"bud-worker-control", "bud-worker-optimizer"}
    for role, queue, low, high, target in (("control", "bud-control", 2, 10, "5"),
                                           ("optimizer", "bud-optimizer", 1, 4, "2")):
        spec = scaled[f"bud-worker-{role}"]["spec"]
        assert spec["scaleTargetRef"] == {"name": f"bud-worker-{role}"}
        assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (low, high)
        assert "replicas" not in manifests[f"Deployment/bud-worker-{role}"]["spec"]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "temporal" and "authenticationRef" not in trigger
        assert trigger["metadata"] == {
            "endpoint": "temporal-frontend.temporal.svc:7233", "namespace": "default", "taskQueue": queue,
            "queueTypes": "workflow,activity", "targetQueueSize": target, "activationTargetQueueSize": "0",
        }
    # KEDA forced off: the CPU fallback even where KEDA is installed.
    forced = render(CI["default"], "--set", "workers.autoscaling.keda=never", api_versions=(KEDA_API,))
    assert not of_kind(forced, "ScaledObject")
    assert set(of_kind(forced, "HorizontalPodAutoscaler")) == {"bud-gateway", "bud-worker-control",
                                                               "bud-worker-optimizer"}


def test_keda_with_temporal_over_mutual_tls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    manifests = render(CI["keda"])  # keda: always, without the API on the cluster
    scaled = of_kind(manifests, "ScaledObject")
    optimizer = scaled["bud-worker-optimizer"]["spec"]
    assert optimizer["minReplicaCount"] == 0  # KEDA may park the optimizers until work arrives
    assert optimizer["triggers"][0]["metadata"]["activationTargetQueueSize"] == "1"
    for name, doc in scaled.items():
        (trigger,) = doc["spec"]["triggers"]
        assert trigger["metadata"]["namespace"] == "bud-prod"
        assert trigger["metadata"]["tlsServerName"] == "temporal.example.internal"
        assert trigger["authenticationRef"] == {"name": "bud-temporal"}
    auth = manifests["TriggerAuthentication/bud-temporal"]["spec"]["secretTargetRef"]
    assert auth == [{"parameter": "ca", "name": "temporal-client-tls", "key": "ca.crt"},
                    {"parameter": "cert", "name": "temporal-client-tls", "key": "tls.crt"},
                    {"parameter": "key", "name": "temporal-client-tls", "key": "tls.key"}]

    # Every pod mounts the certificate Secret where the settings point, and the settings read those files.
    pod = pod_spec(manifests, "bud-worker-control")
    volume = next(v for v in pod["volumes"] if v["name"] == "temporal-tls")["secret"]
    assert volume["secretName"] == "temporal-client-tls"
    assert [item["path"] for item in volume["items"]] == ["ca.crt", "tls.crt", "tls.key"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "temporal-tls")
    assert mount == {"name": "temporal-tls", "mountPath": "/etc/bud/temporal-tls", "readOnly": True}
    env = pod_environment(manifests)
    assert env["BUD_S3_ENDPOINT"] == "http://seaweedfs-s3.storage.svc:8333"
    assert env["BUD_S3_ENDPOINT_FOR_PODS"] == "http://s3.example.internal:8333"
    files = {"ca.crt": b"CA PEM", "tls.crt": b"CERT PEM", "tls.key": b"KEY PEM"}
    for file_name, body in files.items():
        (tmp_path / file_name).write_bytes(body)
    mounted = {name: value.replace("/etc/bud/temporal-tls", str(tmp_path)) if value.startswith("/etc/bud/") else value
               for name, value in env.items()}
    tls = temporal_tls(settings_from(mounted, monkeypatch))
    assert (tls.server_root_ca_cert, tls.client_cert, tls.client_private_key) == (b"CA PEM", b"CERT PEM", b"KEY PEM")
    assert tls.domain == "temporal.example.internal"


def test_temporal_server_tls_without_a_client_certificate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    manifests = render(CI["tls"], api_versions=(KEDA_API,))
    env = pod_environment(manifests)
    assert env["BUD_TEMPORAL_TLS"] == "true" and env["BUD_TEMPORAL_TLS_CA_FILE"] == "/etc/bud/temporal-tls/ca.crt"
    assert "BUD_TEMPORAL_TLS_CERT_FILE" not in env and "BUD_TEMPORAL_TLS_KEY_FILE" not in env
    volume = next(v for v in pod_spec(manifests, "bud-api")["volumes"] if v["name"] == "temporal-tls")
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    assert manifests["TriggerAuthentication/bud-temporal"]["spec"]["secretTargetRef"] == [
        {"parameter": "ca", "name": "temporal-ca", "key": "ca.crt"}]
    (tmp_path / "ca.crt").write_bytes(b"PRIVATE CA")
    settings = settings_from({**env, "BUD_TEMPORAL_TLS_CA_FILE": str(tmp_path / "ca.crt")}, monkeypatch)
    tls = temporal_tls(settings)
    assert tls.server_root_ca_cert == b"PRIVATE CA" and tls.client_cert is None and tls.domain is None
    assert settings.gateway_url == "https://llm.example.com/v1"  # inference URLs point at the public gateway


# ---- the schema and the cross-field rules refuse bad values, naming the field ---------------------------------------


@pytest.mark.parametrize("setting,fragment", [
    ("workers.control.maxReplicas=0", "workers.control.maxReplicas"),
    ("workers.control.minReplicas=20", "workers.control.minReplicas must not exceed workers.control.maxReplicas"),
    ("gateway.autoscaling.minReplicas=11", "gateway.autoscaling.minReplicas must not exceed"),
    ("workers.autoscaling.keda=sometimes", "workers.autoscaling.keda"),
    ("workers.autoscaling.queueTypes={nexus}", "workers.autoscaling.queueTypes"),
    ("workers.shutdownGraceSeconds=-1", "workers.shutdownGraceSeconds"),
    ("podSecurityContext.runAsNonRoot=false", "podSecurityContext.runAsNonRoot"),
    ("temporal.address=temporal-without-port", "temporal.address"),
    ("s3.endpoint=ftp://s3.storage", "s3.endpoint"),
    ("s3.endpointForPods=127.0.0.1:9000", "s3.endpointForPods"),
    ("secrets.databaseUrl=mysql://db/bud", "secrets.databaseUrl"),
    ("api.replicas=3", "replicas"),
    ("extraEnv.PATH=/bin", "extraEnv"),
    ("taskQueues.optimizer=bud-control", "taskQueues.control and taskQueues.optimizer must differ"),
    ("temporal.tls.existingSecret=tls", "temporal.tls.existingSecret is set but temporal.tls.enabled is false"),
    ("secrets.existingSecret=mine", "secrets.existingSecret is set"),
])
def test_bad_values_are_refused_naming_the_field(setting: str, fragment: str) -> None:
    assert fragment in refusal(CI["default"], "--set", setting)


def test_mutual_tls_needs_both_the_certificate_and_its_key() -> None:
    assert "temporal.tls.certKey and temporal.tls.keyKey go together" in refusal(
        CI["keda"], "--set", "temporal.tls.keyKey=")


def test_without_an_existing_secret_the_database_url_is_required(tmp_path: Path) -> None:
    values = yaml.safe_load(CI["default"].read_text())
    del values["secrets"]["databaseUrl"]
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    assert "secrets.databaseUrl is required (or secrets.existingSecret)" in refusal(path)


# ---- inference pods fetch models from the store as they reach it ---------------------------------------------------


def test_a_release_on_kubernetes_fetches_the_model_from_the_endpoint_for_pods(tmp_path: Path) -> None:
    spec = deployment_spec()
    here = Settings(s3_endpoint="http://127.0.0.1:9000", s3_endpoint_for_pods="http://s3.storage.svc:9000",
                    s3_access_key="ak", s3_secret_key="sk")
    values = KubernetesBackend(settings=here).values(spec)
    assert values["model"]["s3"]["endpoint"] == "http://s3.storage.svc:9000"
    manifests = render_runtime(write_values(tmp_path, values), release=spec.release)
    transfer = manifests[f"Deployment/{spec.release}"]["spec"]["template"]["spec"]["initContainers"][0]
    env = {item["name"]: item.get("value") for item in transfer["env"]}
    assert env["S3_ENDPOINT"] == "http://s3.storage.svc:9000"
    # Without the setting, pods get the one address there is (a cluster on this machine reaches it too).
    plain = KubernetesBackend(settings=Settings(s3_endpoint="http://10.0.0.5:9000")).values(spec)
    assert plain["model"]["s3"]["endpoint"] == "http://10.0.0.5:9000"


# ---- the image ----------------------------------------------------------------------------------------------------


def test_the_dockerfile_copies_every_package_the_project_installs_and_the_runtime_chart() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ") and "--from" not in line}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages - copied == set(), f"the image lacks {packages - copied}"
    assert "charts/bud-runtime" in copied
    assert "COPY --from=tools /tools/helm /usr/local/bin/helm" in dockerfile  # the control workers run helm
    assert "USER 1000" in dockerfile  # the chart's runAsUser


# ---- the migration Job's command, against a real PostgreSQL ---------------------------------------------------------


async def test_python_m_core_migrate_applies_each_version_once_beside_other_migrators(postgres_url: str) -> None:
    """What the migration Job runs, three at once (the Job and two API replicas starting together): every version is
    applied exactly once and a later run finds nothing to do."""
    name = f"migrate_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = postgres_url.rsplit("/", 1)[0] + f"/{name}"
    env = {**os.environ, "BUD_DATABASE_URL": url, "BUD_ENV": "dev"}

    async def run() -> str:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "core.migrate", cwd=ROOT, env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 0, err.decode()
        return out.decode().strip()

    try:
        outputs = sorted(await asyncio.gather(run(), run(), run()))
        versions = ", ".join(str(version) for version, _, _ in migration_files())
        assert outputs == [f"applied migrations {versions}", "schema up to date", "schema up to date"]
        assert await run() == "schema up to date"
        conn = await asyncpg.connect(url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(migration_files())
        finally:
            await conn.close()
    finally:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await admin.close()
