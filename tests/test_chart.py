"""charts/bud-runtime: `helm lint --strict`, `helm template` over representative values, every rendered manifest
validated offline against the Kubernetes OpenAPI schemas (kubernetes-validate), and the things a user relies on."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import kubernetes_validate
import pytest
import yaml

from clusters.chart_values import CHART_DIR, ModelCache, S3Source, chart_values
from clusters.helm import default_helm_binary
from control.payloads.autoscaling import AutoscalingSpec, MetricSpec
from control.payloads.deployments import DeploymentSpec, Resources, RuntimeConfig
from tests.conftest import S3_KEY, S3_SECRET

CI_VALUES = sorted((CHART_DIR / "ci").glob("*-values.yaml"))
KUBE_VERSIONS = ("1.33", "1.36")  # helm/kubectl's version, and the local test cluster's
CRD_KINDS = {"ServiceMonitor"}  # not in the Kubernetes schemas; checked field by field below


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([default_helm_binary(), *args], capture_output=True, text=True, check=check)


def write_values(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / f"values-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def render(values_file: Path, release: str = "ep-test", namespace: str = "bud-endpoints") -> dict[str, dict]:
    """`helm template` -> {"Kind/name": manifest}."""
    output = helm("template", release, str(CHART_DIR), "-n", namespace, "-f", str(values_file)).stdout
    manifests = [doc for doc in yaml.safe_load_all(output) if doc]
    return {f"{doc['kind']}/{doc['metadata']['name']}": doc for doc in manifests}


def base_values(**overrides: Any) -> dict[str, Any]:
    values = yaml.safe_load((CHART_DIR / "ci" / "vllm-tp4-values.yaml").read_text())
    for dotted, value in overrides.items():
        node = values
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return values


def server_container(manifests: dict[str, dict], release: str = "ep-test") -> dict:
    return manifests[f"Deployment/{release}"]["spec"]["template"]["spec"]["containers"][0]


def flag(args: list[str], name: str) -> str:
    assert name in args, f"{name} missing from {args}"
    return args[args.index(name) + 1]


# ---- lint and schema validation over the representative values --------------------------------------------------


def test_representative_values_exist() -> None:
    assert [path.name for path in CI_VALUES] == [
        "sglang-autoscaling-values.yaml", "trtllm-existing-pvc-values.yaml", "vllm-tp4-values.yaml",
    ]


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda path: path.stem)
def test_helm_lint_strict_passes(values_file: Path) -> None:
    result = helm("lint", "--strict", str(CHART_DIR), "-f", str(values_file), check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@pytest.mark.parametrize("values_file", CI_VALUES, ids=lambda path: path.stem)
def test_every_rendered_manifest_is_valid_kubernetes(values_file: Path) -> None:
    manifests = render(values_file)
    assert "Deployment/ep-test" in manifests and "Service/ep-test" in manifests
    for name, manifest in manifests.items():
        if manifest["kind"] in CRD_KINDS:
            continue
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                pytest.fail(f"{name} is not valid Kubernetes {version}: {error.message} at {list(error.path)}")


# ---- what the rendered release does ---------------------------------------------------------------------------


def test_vllm_tp4_release(tmp_path: Path) -> None:
    manifests = render(CI_VALUES[2])
    deployment = manifests["Deployment/ep-test"]
    pod = deployment["spec"]["template"]["spec"]
    server = server_container(manifests)

    assert deployment["spec"]["replicas"] == 2
    assert server["command"] == ["vllm", "serve"]
    args = server["args"]
    assert args[0] == "/models/0b7c2f7e-7a44-4f7d-9d62-3f9f5d0a9c11"  # the verified copy on the cache
    assert flag(args, "--tensor-parallel-size") == "4"
    assert flag(args, "--pipeline-parallel-size") == "1"
    assert flag(args, "--max-model-len") == "1000000"  # not 1e+06: Helm reads numbers as floats
    assert flag(args, "--max-num-seqs") == "128"
    assert flag(args, "--gpu-memory-utilization") == "0.92"
    assert flag(args, "--max-num-batched-tokens") == "8192"
    assert flag(args, "--served-model-name") == "llama-3-70b"

    resources = server["resources"]
    expected = {"cpu": "16000m", "memory": "262144Mi", "nvidia.com/gpu": "4"}
    assert resources["limits"] == resources["requests"] == expected
    assert pod["nodeSelector"] == {"bud.ai/gpu-type": "nvidia-h100-80gb"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    spread = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]
    assert spread["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"

    # Probes: all on /health; the startup probe allows the whole model-load budget (1800 s) before liveness.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"] == {"path": "/health", "port": "http"}
    startup = server["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 1800
    assert server["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]

    # Hardening.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in [*pod["initContainers"], *pod["containers"]]:
        context = container["securityContext"]
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True

    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "131072Mi"}  # half the memory
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "ep-test-model-cache"}
    claim = manifests["PersistentVolumeClaim/ep-test-model-cache"]
    assert claim["spec"]["storageClassName"] == "fast-rwx"
    assert claim["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"

    labels = deployment["metadata"]["labels"]
    assert labels["bud.ai/endpoint-id"] == "3f2b8c1e-0a4d-4c6e-9b7a-1d2e3f4a5b6c"
    assert labels["bud.ai/release"] == "ep-test"
    assert labels["app.kubernetes.io/instance"] == "ep-test"
    assert labels["bud.ai/project-id"] == "7d0c1a9e"
    assert "HorizontalPodAutoscaler/ep-test" not in manifests


def test_model_transfer_init_container_copies_from_s3_and_verifies_checksums() -> None:
    manifests = render(CI_VALUES[2])
    pod = manifests["Deployment/ep-test"]["spec"]["template"]["spec"]
    [transfer] = pod["initContainers"]
    env = {item["name"]: item for item in transfer["env"]}
    assert env["S3_BUCKET"]["value"] == "models"
    assert env["S3_PREFIX"]["value"] == "llama-3-70b/v1"
    assert env["S3_ENDPOINT"]["value"] == "http://s3.storage.svc:9000"
    assert env["MODEL_DIR"]["value"] == "/models/0b7c2f7e-7a44-4f7d-9d62-3f9f5d0a9c11"
    secret_ref = env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]
    assert secret_ref == {"name": "ep-test-s3", "key": "AWS_SECRET_ACCESS_KEY"}
    assert manifests["Secret/ep-test-s3"]["stringData"]["AWS_ACCESS_KEY_ID"] == "bud"
    assert transfer["resources"]["limits"] == transfer["resources"]["requests"]

    config = manifests["ConfigMap/ep-test-transfer"]["data"]
    assert config["SHA256SUMS"].splitlines() == [
        "5d41402abc4b2a76b9719d911017c592ae1bd1f5e5c1f2c9b0d2c7d5e6f7a8b9  config.json",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08  model-00001-of-00002.safetensors",
        "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752  model-00002-of-00002.safetensors",
    ]
    assert "sha256sum --check" in config["transfer.sh"]
    # The server mounts the cache read-only; only the init container writes it.
    server_mounts = {mount["name"]: mount for mount in server_container(manifests)["volumeMounts"]}
    assert server_mounts["model-cache"]["readOnly"] is True


@pytest.mark.parametrize(
    ("runtime", "entrypoint", "expected"),
    [
        ("vllm", ["vllm", "serve"], {"--tensor-parallel-size": "4", "--pipeline-parallel-size": "2",
                                     "--max-model-len": "32768", "--max-num-seqs": "96",
                                     "--gpu-memory-utilization": "0.88", "--max-num-batched-tokens": "4096",
                                     "--served-model-name": "qwen"}),
        ("sglang", ["python3", "-m", "sglang.launch_server"],
         {"--model-path": "/models/qwen-72b", "--tp-size": "4", "--pp-size": "2", "--context-length": "32768",
          "--max-running-requests": "96", "--mem-fraction-static": "0.88", "--chunked-prefill-size": "4096",
          "--served-model-name": "qwen"}),
        ("tensorrt-llm", ["trtllm-serve", "serve"],
         {"--tp_size": "4", "--pp_size": "2", "--max_seq_len": "32768", "--max_batch_size": "96",
          "--kv_cache_free_gpu_memory_fraction": "0.88", "--max_num_tokens": "4096", "--served_model_name": "qwen"}),
    ],
)
def test_each_runtime_gets_its_own_command_line(
    tmp_path: Path, runtime: str, entrypoint: list[str], expected: dict[str, str]
) -> None:
    values = base_values(**{
        "runtime": runtime, "servedModelName": "qwen", "model.id": "qwen-72b", "resources.gpuCount": 8,
        "engine.tensorParallelSize": 4, "engine.pipelineParallelSize": 2, "engine.maxModelLen": 32768,
        "engine.maxNumSeqs": 96, "engine.gpuMemoryUtilization": 0.88, "engine.maxNumBatchedTokens": 4096,
    })
    manifests = render(write_values(tmp_path, values))
    server = server_container(manifests)
    assert server["command"] == entrypoint
    assert server["image"].startswith({"vllm": "vllm/", "sglang": "lmsysorg/sglang:",
                                       "tensorrt-llm": "nvcr.io/nvidia/tensorrt-llm/"}[runtime])
    assert {name: flag(server["args"], name) for name in expected} == expected
    assert flag(server["args"], "--port") == "8000"
    assert manifests["Deployment/ep-test"]["metadata"]["labels"]["bud.ai/runtime"] == runtime


def test_autoscaling_adds_the_seeds_hpa_and_leaves_replicas_to_it() -> None:
    manifests = render(CI_VALUES[0])
    assert "replicas" not in manifests["Deployment/ep-test"]["spec"]
    hpa = manifests["HorizontalPodAutoscaler/ep-test"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "ep-test"}
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    cpu, queue = hpa["spec"]["metrics"]
    assert cpu["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}
    assert queue["type"] == "External"
    assert queue["external"]["metric"]["name"] == "inference_queue_depth"
    assert queue["external"]["target"] == {"type": "Value", "value": "100"}


def test_ingress_and_service_monitor_point_at_the_service() -> None:
    manifests = render(CI_VALUES[0])
    ingress = manifests["Ingress/ep-test"]["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [{"hosts": ["mistral.inference.example.com"], "secretName": "inference-tls"}]
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]
    assert backend == {"service": {"name": "ep-test", "port": {"name": "http"}}}

    monitor = manifests["ServiceMonitor/ep-test"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    # Its series carry release=<release>: what the alert rules and Grafana dashboards select on.
    assert monitor["spec"]["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s",
                                             "relabelings": [{"targetLabel": "release", "replacement": "ep-test"}]}]
    assert monitor["spec"]["selector"]["matchLabels"] == manifests["Service/ep-test"]["spec"]["selector"]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["bud-endpoints"]}


def test_existing_claim_is_used_and_not_created() -> None:
    manifests = render(CI_VALUES[1])
    pod = manifests["Deployment/ep-test"]["spec"]["template"]["spec"]
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["model-cache"]["persistentVolumeClaim"] == {"claimName": "shared-models"}
    assert not [name for name in manifests if name.startswith("PersistentVolumeClaim/")]
    assert "initContainers" not in pod  # the model is already on the volume: no S3 copy
    assert pod["nodeSelector"] == {"bud.ai/gpu-type": "nvidia-a100-80gb", "topology.kubernetes.io/zone": "zone-a"}
    assert {"key": "dedicated", "operator": "Equal", "value": "inference", "effect": "NoSchedule"} in pod["tolerations"]
    assert volumes["dshm"]["emptyDir"]["sizeLimit"] == "32Gi"
    assert server_container(manifests)["args"][0] == "/models/qwen-32b"


def test_gpu_resource_name_is_configurable(tmp_path: Path) -> None:
    values = base_values(**{"resources.gpuResourceName": "amd.com/gpu"})
    server = server_container(render(write_values(tmp_path, values)))
    assert server["resources"]["limits"]["amd.com/gpu"] == server["resources"]["requests"]["amd.com/gpu"] == "4"
    assert "nvidia.com/gpu" not in server["resources"]["limits"]


# ---- values the chart refuses ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "fragments", "by_schema"),
    [
        ({"runtime": "foo"}, ["runtime", "vllm", "sglang", "tensorrt-llm"], True),
        ({"resources.gpuCount": -1}, ["resources.gpuCount", "greater than or equal to 1"], True),
        ({"engine.gpuMemoryUtilization": 1.5}, ["engine.gpuMemoryUtilization"], True),
        ({"engine.tensorParallelSize": "four"}, ["engine.tensorParallelSize"], True),
        ({"resources.gpuCout": 2}, ["gpuCout", "not allowed"], True),
        ({"model.sha256": {"config.json": "not-a-digest"}}, ["model.sha256"], True),
        ({"engine.tensorParallelSize": 8}, ["tensorParallelSize", "resources.gpuCount is 4"], False),
    ],
    ids=["runtime-foo", "negative-gpus", "utilization", "tp-string", "unknown-key", "bad-digest", "tp-over-gpus"],
)
def test_bad_values_are_rejected_naming_the_field(
    tmp_path: Path, overrides: dict[str, Any], fragments: list[str], by_schema: bool
) -> None:
    result = helm("template", "ep-test", str(CHART_DIR), "-f", str(write_values(tmp_path, base_values(**overrides))),
                  check=False)
    assert result.returncode != 0
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    if not by_schema:
        return  # a cross-field check in the templates: `helm lint` reports template `fail` calls only as INFO
    lint = helm("lint", "--strict", str(CHART_DIR), "-f", str(write_values(tmp_path, base_values(**overrides))),
                check=False)
    assert lint.returncode != 0


# ---- the backend's values ---------------------------------------------------------------------------------------


def deployment_spec(**changes: Any) -> DeploymentSpec:
    endpoint_id = uuid.uuid4()
    spec = DeploymentSpec(
        endpoint_id=endpoint_id,
        release=f"ep-{endpoint_id.hex[:8]}",
        served_model_name="llama-3-8b",
        model_id=uuid.uuid4(),
        model_uri="s3://models/llama-3-8b/v1/",
        model_sha256={"./config.json": "A" * 64},
        runtime="sglang",
        config=RuntimeConfig(tensor_parallel_size=2, max_model_len=8192, max_num_batched_tokens=2048),
        replicas=3,
        resources=Resources(gpu_type="nvidia-l40s", gpu_count=2, cpu_cores=6.5, memory_gb=48),
        startup_timeout_s=1200.5,
        labels={"bud.ai/project-id": "p1"},
    )
    return spec.model_copy(update=changes)


def test_backend_values_from_a_deployment_spec_render_a_valid_release(tmp_path: Path) -> None:
    spec = deployment_spec()
    values = chart_values(
        spec,
        s3=S3Source(endpoint_url="http://s3.local:9000", access_key_id="k", secret_access_key="s"),
        cache=ModelCache(storage_class="standard", size="50Gi", access_modes=["ReadWriteOnce"]),
        extra={"serviceMonitor": {"enabled": True}},
    )
    manifests = render(write_values(tmp_path, values), release=spec.release)
    for manifest in manifests.values():
        if manifest["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(manifest, "1.33", strict=True)

    deployment = manifests[f"Deployment/{spec.release}"]
    assert deployment["spec"]["replicas"] == 3
    assert deployment["metadata"]["labels"]["bud.ai/endpoint-id"] == str(spec.endpoint_id)
    assert deployment["metadata"]["labels"]["bud.ai/project-id"] == "p1"
    server = server_container(manifests, spec.release)
    assert server["resources"]["limits"] == {"cpu": "6500m", "memory": "49152Mi", "nvidia.com/gpu": "2"}
    assert flag(server["args"], "--tp-size") == "2"
    assert flag(server["args"], "--context-length") == "8192"
    assert flag(server["args"], "--chunked-prefill-size") == "2048"
    assert server["startupProbe"]["periodSeconds"] * server["startupProbe"]["failureThreshold"] >= 1201
    pod = deployment["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"bud.ai/gpu-type": "nvidia-l40s"}
    env = {item["name"]: item.get("value") for item in pod["initContainers"][0]["env"]}
    assert (env["S3_BUCKET"], env["S3_PREFIX"], env["S3_ENDPOINT"]) == ("models", "llama-3-8b/v1", "http://s3.local:9000")
    sums = manifests[f"ConfigMap/{spec.release}-transfer"]["data"]["SHA256SUMS"]
    assert sums.strip() == f"{'a' * 64}  config.json"
    claim = manifests[f"PersistentVolumeClaim/{spec.release}-model-cache"]["spec"]
    assert (claim["storageClassName"], claim["accessModes"]) == ("standard", ["ReadWriteOnce"])
    assert f"ServiceMonitor/{spec.release}" in manifests


def test_a_model_path_that_is_not_s3_is_loaded_as_is_without_a_copy(tmp_path: Path) -> None:
    spec = deployment_spec(model_uri="/mnt/models/llama-3-8b", runtime="vllm")
    values = chart_values(spec, cache=ModelCache(enabled=False))
    manifests = render(write_values(tmp_path, values), release=spec.release)
    pod = manifests[f"Deployment/{spec.release}"]["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert server_container(manifests, spec.release)["args"][0] == "/mnt/models/llama-3-8b"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    assert volumes["model-cache"] == {"name": "model-cache", "emptyDir": {}}
    assert not [name for name in manifests if name.split("/")[0] in {"PersistentVolumeClaim", "Secret", "ConfigMap"}]



def queue_metric(target: dict[str, Any]) -> MetricSpec:
    return MetricSpec.model_validate(
        {"type": "External", "external": {"metric": {"name": "inference_queue_depth"}, "target": target}}
    )


def test_a_spec_with_autoscaling_renders_its_hpa_and_a_deployment_without_replicas(tmp_path: Path) -> None:
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 120, "policies": [{"type": "Pods", "value": 1,
                                                                                 "periodSeconds": 60}]}}
    spec = deployment_spec(autoscaling=AutoscalingSpec(min_replicas=2, max_replicas=6, behavior=behavior))
    values = chart_values(spec)
    assert values["autoscaling"] == {
        "enabled": True, "minReplicas": 2, "maxReplicas": 6, "targetCPUUtilizationPercentage": 80,
        "queueDepth": {"enabled": True, "metricName": "inference_queue_depth", "targetType": "Value",
                       "targetValue": 100},
        "behavior": behavior,
    }
    manifests = render(write_values(tmp_path, values), release=spec.release)
    for manifest in manifests.values():
        kubernetes_validate.validate(manifest, "1.33", strict=True)

    assert "replicas" not in manifests[f"Deployment/{spec.release}"]["spec"]
    hpa = manifests[f"HorizontalPodAutoscaler/{spec.release}"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.release}
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    cpu, queue = hpa["metrics"]
    assert cpu == {"type": "Resource",
                   "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}
    assert queue == {"type": "External", "external": {
        "metric": {"name": "inference_queue_depth", "selector": {"matchLabels": {"bud.ai/release": spec.release}}},
        "target": {"type": "Value", "value": "100"},
    }}
    assert hpa["behavior"] == behavior


def test_an_average_value_queue_target_renders_average_value_and_no_cpu_metric_when_none(tmp_path: Path) -> None:
    scaling = AutoscalingSpec(min_replicas=1, max_replicas=3,
                              metrics=[queue_metric({"type": "AverageValue", "averageValue": 12.5})])
    spec = deployment_spec(autoscaling=scaling)
    values = chart_values(spec)
    assert values["autoscaling"]["targetCPUUtilizationPercentage"] is None
    assert values["autoscaling"]["queueDepth"]["targetType"] == "AverageValue"
    manifests = render(write_values(tmp_path, values), release=spec.release)
    hpa = manifests[f"HorizontalPodAutoscaler/{spec.release}"]
    kubernetes_validate.validate(hpa, "1.33", strict=True)
    (queue,) = hpa["spec"]["metrics"]
    assert queue["external"]["target"] == {"type": "AverageValue", "averageValue": "12.5"}
    assert "behavior" not in hpa["spec"]


def test_a_cpu_only_autoscaler_has_no_queue_metric(tmp_path: Path) -> None:
    cpu = MetricSpec.model_validate(
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 150}}}
    )
    spec = deployment_spec(autoscaling=AutoscalingSpec(min_replicas=1, max_replicas=2, metrics=[cpu]))
    manifests = render(write_values(tmp_path, chart_values(spec)), release=spec.release)
    (metric,) = manifests[f"HorizontalPodAutoscaler/{spec.release}"]["spec"]["metrics"]
    assert metric["resource"]["target"] == {"type": "Utilization", "averageUtilization": 150}


@pytest.mark.parametrize("scaling", [None, AutoscalingSpec(enabled=False, min_replicas=2, max_replicas=4)],
                         ids=["none", "disabled"])
def test_a_spec_without_enabled_autoscaling_renders_no_hpa_and_fixed_replicas(
    tmp_path: Path, scaling: AutoscalingSpec | None
) -> None:
    spec = deployment_spec(autoscaling=scaling)
    values = chart_values(spec)
    assert values["autoscaling"] == {"enabled": False}
    manifests = render(write_values(tmp_path, values), release=spec.release)
    assert not [name for name in manifests if name.startswith("HorizontalPodAutoscaler/")]
    assert manifests[f"Deployment/{spec.release}"]["spec"]["replicas"] == 3


def test_cluster_wide_extra_values_still_merge_over_the_specs_autoscaling() -> None:
    spec = deployment_spec(autoscaling=AutoscalingSpec(min_replicas=2, max_replicas=4))
    values = chart_values(spec, extra={"autoscaling": {"queueDepth": {"metricName": "bud_queue_depth"}}})
    assert values["autoscaling"]["queueDepth"] == {
        "enabled": True, "metricName": "bud_queue_depth", "targetType": "Value", "targetValue": 100,
    }
    assert values["autoscaling"]["minReplicas"] == 2


# ---- the model-transfer script, run for real against the S3 server ---------------------------------------------


def run_transfer(script: Path, sums: Path, model_dir: Path, s3_endpoint: str, prefix: str, pod: str):
    env = {
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",  # the AWS CLI from the dev dependencies
        "HOME": str(model_dir.parent), "HOSTNAME": pod, "SHA256SUMS_FILE": str(sums), "MODEL_DIR": str(model_dir),
        "S3_ENDPOINT": s3_endpoint, "S3_BUCKET": "models", "S3_PREFIX": prefix, "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET,
    }
    return subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=120)


def rendered_transfer_files(tmp_path: Path, sha256: dict[str, str], name: str) -> tuple[Path, Path]:
    """transfer.sh and SHA256SUMS exactly as the release's ConfigMap carries them."""
    values = base_values(**{"model.sha256": sha256})
    data = render(write_values(tmp_path, values))["ConfigMap/ep-test-transfer"]["data"]
    script, sums = tmp_path / f"{name}-transfer.sh", tmp_path / f"{name}-SHA256SUMS"
    script.write_text(data["transfer.sh"])
    sums.write_text(data["SHA256SUMS"])
    return script, sums


def test_model_transfer_script_copies_verifies_and_skips_a_verified_copy(tmp_path: Path, s3_endpoint: str) -> None:
    prefix = f"transfer-{uuid.uuid4().hex[:8]}/v1"
    files = {"config.json": b'{"architectures": ["LlamaForCausalLM"]}',
             "weights/model-00001.safetensors": os.urandom(3 * 1024 * 1024)}
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                      region_name="us-east-1")
    for path, body in files.items():
        s3.put_object(Bucket="models", Key=f"{prefix}/{path}", Body=body)
    digests = {path: hashlib.sha256(body).hexdigest() for path, body in files.items()}
    script, sums = rendered_transfer_files(tmp_path, digests, "good")
    model_dir = tmp_path / "cache" / "model-a"
    model_dir.parent.mkdir()

    first = run_transfer(script, sums, model_dir, s3_endpoint, prefix, "pod-a")
    assert first.returncode == 0, first.stderr
    assert {path: (model_dir / path).read_bytes() for path in files} == files
    assert "verifying 2 files" in first.stdout
    assert sorted(p.name for p in model_dir.parent.iterdir()) == ["model-a"]  # no staging folder left

    # Another replica (or a restart) finds the verified copy and copies nothing.
    mtime = (model_dir / "config.json").stat().st_mtime_ns
    second = run_transfer(script, sums, model_dir, s3_endpoint, prefix, "pod-b")
    assert second.returncode == 0, second.stderr
    assert "already cached and verified" in second.stdout
    assert (model_dir / "config.json").stat().st_mtime_ns == mtime

    # A copy that does not match the registry's sums is refused and never published.
    wrong = {**digests, "config.json": "0" * 64}
    bad_script, bad_sums = rendered_transfer_files(tmp_path, wrong, "bad")
    other_dir = tmp_path / "cache" / "model-b"
    failed = run_transfer(bad_script, bad_sums, other_dir, s3_endpoint, prefix, "pod-c")
    assert failed.returncode != 0
    assert "does not match the registry's sha256 sums" in failed.stderr
    assert sorted(p.name for p in other_dir.parent.iterdir()) == ["model-a"]


# ---- draining a stopping pod ------------------------------------------------------------------------------------


def test_a_stopping_pod_sleeps_in_pre_stop_then_gets_the_drain_timeout_plus_margin(tmp_path: Path) -> None:
    spec = deployment_spec(drain_timeout_s=120)
    manifests = render(write_values(tmp_path, chart_values(spec)), release=spec.release)
    deployment = manifests[f"Deployment/{spec.release}"]
    kubernetes_validate.validate(deployment, "1.33", strict=True)
    pod = deployment["spec"]["template"]["spec"]
    server = server_container(manifests, spec.release)
    assert server["lifecycle"]["preStop"] == {"exec": {"command": ["sleep", "5"]}}
    assert pod["terminationGracePeriodSeconds"] == 5 + 120 + 10
    # Readiness asks the server itself: it fails once the server drains, so the pod gets no new requests.
    assert server["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}


def test_the_drain_timeout_defaults_to_thirty_seconds_and_a_zero_sleep_drops_the_hook(tmp_path: Path) -> None:
    manifests = render(write_values(tmp_path, chart_values(deployment_spec())))
    assert next(iter(m for k, m in manifests.items() if k.startswith("Deployment/")))[
        "spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 45
    values = base_values(**{"drain.preStopSleepSeconds": 0, "drain.timeoutSeconds": 600})
    manifests = render(write_values(tmp_path, values))
    assert "lifecycle" not in server_container(manifests)
    assert manifests["Deployment/ep-test"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 610


@pytest.mark.parametrize("field,value", [("drain.timeoutSeconds", 0), ("drain.timeoutSeconds", 601),
                                         ("drain.preStopSleepSeconds", -1), ("drain.marginSeconds", "10")])
def test_drain_values_out_of_range_are_rejected_naming_the_field(tmp_path: Path, field: str, value: Any) -> None:
    result = helm("template", "ep-test", str(CHART_DIR), "-f", str(write_values(tmp_path, base_values(**{field: value}))),
                  check=False)
    assert result.returncode != 0
    assert field.split(".")[1] in result.stderr, result.stderr


def test_a_spec_drain_timeout_out_of_range_is_refused() -> None:
    for bad in (0, 601):
        with pytest.raises(ValueError, match="drain_timeout_s"):
            deployment_spec().model_validate({**deployment_spec().model_dump(), "drain_timeout_s": bad})
