"""Silicon profiles: fits of measured TTFT/TPOT per model, GPU, runtime and TP, and the timing they give the runtime."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from budsim.catalog import get_model
from budsim.silicon_profile import (
    ARTIFACT,
    build,
    build_profiles,
    profile_timing,
    render,
    timing_from_profiles,
)
from core.model_facts import ModelArchitecture

PROJECT_ROOT = Path(__file__).resolve().parents[1]
MODEL = "nvidia/Llama-3.1-8B-Instruct-FP8"
# generating laws: TPOT = e^a c^b (isl+osl)^g, TTFT = e^a isl^p c^q
TPOT_A, TPOT_B, TPOT_G = -1.5, 0.4, 0.25
TTFT_A, TTFT_P, TTFT_Q = -2.0, 0.9, 0.15


def _row(tp: int, concurrency: int, isl: int, osl: int, **extra) -> dict[str, str]:
    tpot = math.exp(TPOT_A) * concurrency**TPOT_B * (isl + osl) ** TPOT_G
    ttft = math.exp(TTFT_A) * isl**TTFT_P * concurrency**TTFT_Q
    row = {
        "id": f"synthetic_tp{tp}_c{concurrency}_{isl}x{osl}", "backend": "vllm", "model_path": MODEL,
        "system": "h200_sxm", "precision": "fp8", "mode": "agg", "isl": str(isl), "osl": str(osl),
        "batch_size": str(concurrency), "tp_size": str(tp), "pp_size": "1", "attention_dp_size": "1",
        "silicon_ttft_ms": repr(ttft), "silicon_tpot_ms": repr(tpot),
    }  # fmt: skip
    row.update(extra)
    return row


def _synthetic_rows() -> list[dict[str, str]]:
    rows = [
        _row(tp, c, isl, osl)
        for tp in (1, 4)
        for c in (1, 2, 4, 8, 16, 32, 64)
        for isl in (256, 1024, 4096)
        for osl in (128, 1024)
    ]
    rows.append(_row(1, 8, 1024, 1024, mode="disagg"))
    rows.append(_row(2, 8, 1024, 1024, attention_dp_size="2"))
    rows.append(_row(1, 8, 1024, 1024, model_path="acme/unknown-model"))
    return rows


def _facts() -> ModelArchitecture:
    return get_model(MODEL)


def test_build_recovers_the_laws_the_rows_were_generated_with_and_counts_what_it_skipped():
    profiles = build_profiles(_synthetic_rows())
    assert profiles["rows"] == 2 * 7 * 3 * 2
    assert profiles["skipped"] == {"attention data-parallel or pipeline layout": 1, "mode": 1, "model": 1}
    [group] = profiles["groups"]
    assert (group["model"], group["gpu"], group["runtime"], group["precision"]) == (MODEL, "nvidia-h200", "vllm", "fp8")
    assert sorted(group["tp"]) == ["1", "4"]
    fit = group["tp"]["1"]
    assert fit["rows"] == 42 and fit["concurrency_range"] == [1, 64] and fit["context_range"] == [384, 5120]
    assert fit["tpot"]["a"] == pytest.approx(TPOT_A, abs=1e-4)
    assert fit["tpot"]["concurrency_exp"] == pytest.approx(TPOT_B, abs=1e-5)
    assert fit["tpot"]["context_exp"] == pytest.approx(TPOT_G, abs=1e-5)
    assert fit["tpot"]["rmse_log"] < 1e-6
    # TTFT is fitted on the low-load rows (concurrency 1 to 4)
    assert fit["ttft"]["rows"] == 3 * 3 * 2
    assert fit["ttft"]["a"] == pytest.approx(TTFT_A, abs=1e-4)
    assert fit["ttft"]["prompt_exp"] == pytest.approx(TTFT_P, abs=1e-5)
    assert fit["ttft"]["concurrency_exp"] == pytest.approx(TTFT_Q, abs=1e-5)


def test_an_exponent_the_data_makes_negative_is_dropped_not_kept():
    rows = [_row(1, c, 1024, 1024) for c in (4, 8, 16, 32)]
    for row, tpot in zip(rows, (20.0, 18.0, 17.0, 15.0)):  # TPOT falling with load: noise, not physics
        row["silicon_tpot_ms"] = str(tpot)
    fit = build_profiles(rows)["groups"][0]["tp"]["1"]["tpot"]
    assert fit["concurrency_exp"] == 0.0
    assert math.exp(fit["a"]) == pytest.approx(math.exp(sum(math.log(t) for t in (20, 18, 17, 15)) / 4), rel=1e-5)


def test_the_build_is_deterministic_whatever_the_row_order():
    rows = _synthetic_rows()
    shuffled = list(rows)
    random.Random(7).shuffle(shuffled)
    first, second = render(build_profiles(rows)), render(build_profiles(shuffled))
    assert first == second
    shuffled[0] = {**shuffled[0], "silicon_tpot_ms": "99.0"}  # a different measurement is a different file
    assert render(build_profiles(shuffled)) != first


def test_timing_is_the_fit_for_one_request_and_its_growth_to_max_num_seqs():
    profiles = build_profiles(_synthetic_rows())
    timing = timing_from_profiles(profiles, _facts(), "nvidia-h200", "vllm", 1, 64, ref_prompt_tokens=512)
    assert timing is not None
    assert timing.ttft_ms == pytest.approx(math.exp(TTFT_A) * 512**TTFT_P, rel=1e-4)
    # TPOT at a context of prompt plus an equally long reply
    assert timing.tpot_ms == pytest.approx(math.exp(TPOT_A) * 1024**TPOT_G, rel=1e-4)
    measured_at_64 = math.exp(TPOT_A) * 64**TPOT_B * 1024**TPOT_G
    assert timing.tpot_ms * (1 + timing.batch_tpot_factor) == pytest.approx(measured_at_64, rel=1e-4)
    assert timing.group == f"{MODEL} on nvidia-h200, vllm, fp8, tp 1 (42 rows)"
    # the context is clamped to what was measured: a tiny reference prompt does not extrapolate below 384 tokens
    short = timing_from_profiles(profiles, _facts(), "h200", "vllm", 1, 64, ref_prompt_tokens=16)
    assert short.tpot_ms == pytest.approx(math.exp(TPOT_A) * 384**TPOT_G, rel=1e-4)


def test_a_missing_tp_falls_back_to_the_nearest_measured_one_and_says_so():
    profiles = build_profiles(_synthetic_rows())
    exact = timing_from_profiles(profiles, _facts(), "nvidia-h200", "vllm", 4, 64)
    assert exact.group == f"{MODEL} on nvidia-h200, vllm, fp8, tp 4 (42 rows)"
    nearest = timing_from_profiles(profiles, _facts(), "nvidia-h200", "vllm", 8, 64)
    assert nearest.group == f"{MODEL} on nvidia-h200, vllm, fp8, tp 4 (42 rows; nearest measured to tp 8)"
    assert (nearest.ttft_ms, nearest.tpot_ms) == (exact.ttft_ms, exact.tpot_ms)


def test_the_committed_profiles_answer_for_a_measured_catalog_model():
    committed = json.loads(ARTIFACT.read_text())
    assert committed["data"]["hash"].startswith("sha256:")
    assert ("MiniMaxAI/MiniMax-M2.5", "nvidia-h200", "vllm", "fp8") in {
        (g["model"], g["gpu"], g["runtime"], g["precision"]) for g in committed["groups"]
    }
    timing = profile_timing(get_model("MiniMaxAI/MiniMax-M2.5"), "nvidia-h200", "vllm", 8, 256)
    assert timing is not None
    assert timing.group.startswith("MiniMaxAI/MiniMax-M2.5 on nvidia-h200, vllm, fp8, tp 8 (")
    assert "nearest" not in timing.group
    assert 1 < timing.ttft_ms < 5000 and 0.5 < timing.tpot_ms < 200 and timing.batch_tpot_factor > 0
    # the GPU may be named by alias, and another id of the same catalog entry is the same model
    assert profile_timing(get_model("MiniMaxAI/MiniMax-M2"), "h200_sxm", "vllm", 8, 256) == timing
    # more scheduler slots: TPOT at the limit grows
    assert profile_timing(get_model("MiniMaxAI/MiniMax-M2.5"), "nvidia-h200", "vllm", 8, 16).batch_tpot_factor < (
        timing.batch_tpot_factor
    )


def test_the_committed_profiles_fall_back_to_the_nearest_tp_and_say_so():
    facts = get_model("MiniMaxAI/MiniMax-M2.5")
    timing = profile_timing(facts, "nvidia-h200", "vllm", 16, 256)
    assert timing.group.startswith("MiniMaxAI/MiniMax-M2.5 on nvidia-h200, vllm, fp8, tp 8 (")
    assert timing.group.endswith("; nearest measured to tp 16)")
    assert (timing.ttft_ms, timing.tpot_ms) == (
        profile_timing(facts, "nvidia-h200", "vllm", 8, 256).ttft_ms,
        profile_timing(facts, "nvidia-h200", "vllm", 8, 256).tpot_ms,
    )


def test_tensorrt_llm_as_the_api_spells_it_matches_the_trtllm_measurements():
    facts = get_model("Qwen/Qwen3-235B-A22B-FP8")
    timing = profile_timing(facts, "nvidia-h100-80gb", "tensorrt-llm", 8, 64)
    assert timing is not None
    assert timing.group.startswith("Qwen/Qwen3-235B-A22B-FP8 on nvidia-h100-80gb, trtllm, fp8, tp 8 (")
    assert profile_timing(facts, "nvidia-h100-80gb", "trtllm", 8, 64) == timing
    # the runtime matters: there are no aggregated vLLM measurements of this model on H100
    assert profile_timing(facts, "nvidia-h100-80gb", "vllm", 8, 64) is None


def test_nothing_measured_means_no_profile():
    tiny = ModelArchitecture(
        model_type="llama", num_layers=2, hidden_size=64, num_attention_heads=4, num_kv_heads=2, head_dim=16,
        intermediate_size=128, vocab_size=1000, max_position_embeddings=2048, parameter_count=200_000,
    )  # fmt: skip
    assert profile_timing(tiny, "nvidia-h200", "vllm", 1, 256) is None
    minimax = get_model("MiniMaxAI/MiniMax-M2.5")
    assert profile_timing(minimax, "nvidia-l4", "vllm", 8, 256) is None  # GPU not measured
    assert profile_timing(minimax, "no-such-gpu", "vllm", 8, 256) is None
    bf16 = minimax.model_copy(update={"dtype": "bfloat16"})
    assert profile_timing(bf16, "nvidia-h200", "vllm", 8, 256) is None  # precision not measured


def test_the_command_writes_the_profiles_with_the_source_hash_and_prints_the_file_hash(tmp_path):
    data = tmp_path / "rows.csv"
    rows = _synthetic_rows()
    columns = sorted({key for row in rows for key in row})
    with open(data, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "out" / "silicon_profiles.json"
    result = subprocess.run(
        [sys.executable, "-m", "budsim.silicon_profile", "--data", str(data), "--out", str(out)],
        capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    written = out.read_bytes()
    assert f"sha256:{hashlib.sha256(written).hexdigest()}" in result.stdout
    profiles = json.loads(written)
    assert profiles["data"] == {"file": "rows.csv", "hash": "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest()}
    assert len(profiles["groups"]) == 1
    # rebuilding gives the same bytes
    _, digest = build(tmp_path / "again.json", data)
    assert digest == f"sha256:{hashlib.sha256(written).hexdigest()}"
    assert (tmp_path / "again.json").read_bytes() == written
