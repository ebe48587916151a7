"""Where training and kernel fitting look for their data, and what they say when it is not there."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from budsim.dataset import PerfDataMissing, load_samples
from budsim.kernel_fit import KernelTablesMissing, kernel_tables

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_missing_measured_data_names_the_place_and_the_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("BUDSIM_PERF_DATA", str(tmp_path))
    with pytest.raises(PerfDataMissing) as error:
        load_samples()
    assert str(tmp_path / "aiconfigurator" / "silicon_sample.csv") in str(error.value)
    assert "BUDSIM_PERF_DATA" in str(error.value)


def test_train_without_the_data_exits_with_the_reason_not_a_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "budsim.train", "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
        env={**os.environ, "BUDSIM_PERF_DATA": str(tmp_path)},
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.startswith(f"measured data not found at {tmp_path}"), result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "out").exists()


def _systems(tmp_path, versions: str, nccl: str, tables: list[str]):
    (tmp_path / "query_versions.yaml").write_text(versions)
    (tmp_path / "gpu_x.yaml").write_text(f"data_dir: data/gpu_x\nmisc:\n  nccl_version: '{nccl}'\n")
    for table in tables:
        path = tmp_path / "data" / "gpu_x" / table
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    return tmp_path


VLLM_TABLES = [
    "gemm/vllm/0.24.0/gemm_perf.parquet",
    "attention/vllm/0.24.0/context_attention_perf.parquet",
    "attention/vllm/0.24.0/generation_attention_perf.parquet",
]


def test_kernel_tables_follow_the_queried_vllm_version_and_the_specs_nccl(tmp_path):
    systems = _systems(
        tmp_path,
        "defaults:\n  vllm: {current: '0.24.0'}\n",
        nccl="2.27.3",
        tables=[
            *VLLM_TABLES,
            "gemm/sglang/0.5.14/gemm_perf.parquet",  # another runtime's table is never read
            "comm/vllm/0.14.0/custom_allreduce_perf.parquet",
            "comm/vllm/0.22.0/custom_allreduce_perf.parquet",
            "comm/vllm/0.27.0/custom_allreduce_perf.parquet",  # newer than the queried version
            "comm/nccl/2.23/nccl_perf.parquet",
            "comm/nccl/2.27.3/nccl_perf.parquet",
            "comm/nccl/2.29.2/nccl_perf.parquet",
        ],
    )
    tables = kernel_tables(systems, "gpu_x")
    assert tables.gemm == systems / "data/gpu_x/gemm/vllm/0.24.0/gemm_perf.parquet"
    # no 0.24.0 all-reduce table: the newest older one fills in, never a newer one
    assert tables.custom_allreduce == systems / "data/gpu_x/comm/vllm/0.22.0/custom_allreduce_perf.parquet"
    assert tables.nccl == systems / "data/gpu_x/comm/nccl/2.27.3/nccl_perf.parquet"


def test_kernel_tables_take_a_systems_own_vllm_version_and_name_a_missing_table(tmp_path):
    systems = _systems(
        tmp_path,
        "defaults:\n  vllm: {current: '0.24.0'}\noverrides:\n  gpu_x:\n    vllm: {current: '0.14.0'}\n",
        nccl="2.27.3",
        tables=VLLM_TABLES,
    )
    with pytest.raises(KernelTablesMissing, match="gpu_x/gemm/vllm/0.14.0/gemm_perf.parquet"):
        kernel_tables(systems, "gpu_x")
