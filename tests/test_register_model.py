"""RegisterModel through the API against the real S3 server and clamd: clean, infected, hostile and broken models."""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import struct
import time
from pathlib import Path

import pytest

from core.objectstore import ObjectStore
from tests.model_files import (
    TinyModel,
    write_eicar_file,
    write_malicious_pickle,
    write_nested_json,
    write_padded_json,
    write_padded_text,
    write_safetensors_claiming_header,
    write_safetensors_with_nested_header,
    write_tiny_llama,
    write_torch_zip_checkpoint,
    write_truncated_safetensors,
)
from tests.helpers import unique
from tests.registry_helpers import register_and_wait, registration, upload, wait_settled

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> TinyModel:
    return write_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama")


def copy_model(tiny: TinyModel, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(tiny.path, target)
    return target


def blocking(model: dict) -> list[dict]:
    return [f for f in model["scan_report"]["findings"] if f["blocking"]]


def notes(model: dict) -> list[dict]:
    return [f for f in model["scan_report"]["findings"] if not f["blocking"]]


async def objects_under(settings, prefix: str) -> list[str]:
    async with ObjectStore(settings) as store:
        return [o.key for o in await store.list_objects(settings.models_bucket, prefix.rstrip("/") + "/")]


async def test_clean_model_becomes_available_with_facts_and_checksums(api, control_worker, settings, tiny):
    prefix = await upload(settings, tiny.path)
    model = await register_and_wait(api, settings, prefix, parameter_count=tiny.parameter_count,
                                    context_length=tiny.spec.max_position_embeddings)
    assert model["status"] == "AVAILABLE", model["scan_report"]
    assert model["real_parameter_count"] == tiny.parameter_count
    assert model["facts"]["model_type"] == "llama"
    assert model["facts"]["num_layers"] == tiny.spec.num_layers
    assert model["license"] == "Apache-2.0" and model["license_category"] == "permissive"  # normalised to SPDX
    local = {name: hashlib.sha256((tiny.path / name).read_bytes()).hexdigest() for name in tiny.files}
    assert {f["path"]: f["sha256"] for f in model["files"]} == local
    assert all("clean" in f["checks"]["clamav"] for f in model["scan_report"]["files"])
    assert model["scan_report"]["large_file_policy"]


async def test_eicar_inside_a_file_quarantines_the_model(api, control_worker, settings, tiny, tmp_path):
    folder = copy_model(tiny, tmp_path)
    write_eicar_file(folder / "extra" / "notes.dat", padding_before=4096, padding_after=4096)
    prefix = await upload(settings, folder)
    model = await register_and_wait(api, settings, prefix, parameter_count=tiny.parameter_count)
    assert model["status"] == "QUARANTINED"
    [finding] = blocking(model)
    assert finding["file"] == "extra/notes.dat" and finding["check"] == "clamav"
    assert "Eicar" in finding["subject"]
    # Moved, not deleted: nothing left at the source, everything under the quarantine prefix.
    assert await objects_under(settings, prefix) == []
    quarantined = await objects_under(settings, f"quarantine/{model['id']}")
    assert len(quarantined) == len(tiny.files) + 1
    assert model["scan_report"]["quarantine_prefix"] == f"s3://models/quarantine/{model['id']}/"


async def test_pickle_calling_os_system_is_quarantined_without_unpickling(api, control_worker, settings, tiny, tmp_path):
    folder = copy_model(tiny, tmp_path)
    marker = tmp_path / "pwned"
    write_malicious_pickle(folder / "pytorch_model.bin", command=f"touch {marker}")
    write_torch_zip_checkpoint(folder / "optimizer.pt", malicious_command=f"touch {marker}")
    prefix = await upload(settings, folder)
    model = await register_and_wait(api, settings, prefix, parameter_count=tiny.parameter_count)
    assert model["status"] == "QUARANTINED"
    flagged = {(f["file"], f["subject"]) for f in blocking(model) if f["check"] == "pickle"}
    assert ("pytorch_model.bin", "os.system") in {(file, subject) for file, subject in flagged}
    assert any(file == "optimizer.pt" for file, _ in flagged)
    assert not marker.exists()  # the payload never ran


async def test_truncated_safetensors_is_quarantined(api, control_worker, settings, tiny, tmp_path):
    folder = copy_model(tiny, tmp_path)
    write_truncated_safetensors(tiny.path / "model.safetensors", folder / "model.safetensors")
    prefix = await upload(settings, folder)
    model = await register_and_wait(api, settings, prefix, parameter_count=tiny.parameter_count)
    assert model["status"] == "QUARANTINED"
    assert any(f["check"] == "safetensors" and f["file"] == "model.safetensors" for f in blocking(model))


async def test_declared_parameter_count_far_from_the_tensors_is_flagged(api, control_worker, settings, tiny):
    prefix = await upload(settings, tiny.path)
    model = await register_and_wait(api, settings, prefix, parameter_count=tiny.parameter_count * 50)
    assert model["status"] == "QUARANTINED"
    assert any(f["check"] == "config" and "parameter" in f["message"] for f in blocking(model))


async def test_config_json_over_the_size_limit_is_quarantined_saying_its_size(api, control_worker, settings, tiny,
                                                                            tmp_path):
    folder = copy_model(tiny, tmp_path)
    write_padded_json(folder / "config.json", 30 * MiB, tiny.spec.config())
    model = await register_and_wait(api, settings, await upload(settings, folder),
                                    parameter_count=tiny.parameter_count)
    assert model["status"] == "QUARANTINED"
    [finding] = blocking(model)
    assert finding["file"] == "config.json"
    assert finding["message"] == "config.json is 30.0 MB, larger than the 4 MB limit"


async def test_config_json_nested_100000_deep_is_quarantined_within_seconds(api, control_worker, settings, tiny,
                                                                           tmp_path):
    folder = copy_model(tiny, tmp_path)
    write_nested_json(folder / "config.json", depth=100_000)
    prefix = await upload(settings, folder)
    started = time.monotonic()
    response = await api.post("/api/models", json=registration(settings, prefix, parameter_count=tiny.parameter_count))
    model = await wait_settled(api, response.json()["id"], timeout=60)
    assert time.monotonic() - started < 60
    assert model["status"] == "QUARANTINED"
    [finding] = blocking(model)
    assert finding["file"] == "config.json" and "not valid JSON" in finding["message"]
    assert "recursion" in finding["message"]


async def test_readme_and_license_over_the_size_limit_are_skipped_with_a_note(api, control_worker, settings, tiny,
                                                                              tmp_path):
    folder = copy_model(tiny, tmp_path)
    write_padded_text(folder / "README.md", 5 * MiB, first_line="---\nlicense: mit\n---\n")
    write_padded_text(folder / "LICENSE", 6 * MiB)
    model = await register_and_wait(api, settings, await upload(settings, folder),
                                    parameter_count=tiny.parameter_count, license=None)
    assert model["status"] == "AVAILABLE", model["scan_report"]
    skipped = {f["file"]: f["message"] for f in notes(model) if f["code"] == "file_too_large"}
    assert skipped == {
        "README.md": "README.md is 5.0 MB, larger than the 4 MB limit: not read for the license",
        "LICENSE": "LICENSE is 6.0 MB, larger than the 4 MB limit: not read for the license",
    }
    assert model["license"] is None or model["license_category"] == "unknown"  # neither file was read


async def test_config_declaring_40_layers_over_2_layers_of_weights_is_quarantined(api, control_worker, settings,
                                                                                   tmp_path):
    liar = write_tiny_llama(tmp_path / "liar", config_overrides={"num_hidden_layers": 40})
    model = await register_and_wait(api, settings, await upload(settings, liar.path),
                                    parameter_count=liar.parameter_count)
    assert model["status"] == "QUARANTINED"
    [finding] = [f for f in blocking(model) if f["code"] == "layer_count_mismatch"]
    assert finding["message"] == ("config.json declares 40 layers but the safetensors weights hold 2 "
                                  "(model.layers.0 to model.layers.1)")


async def test_hostile_safetensors_headers_are_quarantined_within_seconds(api, control_worker, settings, tiny,
                                                                         tmp_path):
    folder = copy_model(tiny, tmp_path)
    write_safetensors_claiming_header(folder / "claims-100gb.safetensors", claimed_header_bytes=100 * 1024**3)
    write_safetensors_with_nested_header(folder / "nested.safetensors", depth=100_000)
    prefix = await upload(settings, folder)
    response = await api.post("/api/models", json=registration(settings, prefix, parameter_count=tiny.parameter_count))
    model = await wait_settled(api, response.json()["id"], timeout=60)
    assert model["status"] == "QUARANTINED"
    found = {f["file"]: f for f in blocking(model) if f["check"] == "safetensors"}
    assert found["claims-100gb.safetensors"]["code"] == "header_length_out_of_bounds"
    assert str(100 * 1024**3) in found["claims-100gb.safetensors"]["message"]
    assert found["nested.safetensors"]["code"] == "header_not_json"
    assert "too deep" in found["nested.safetensors"]["message"]


async def test_nul_characters_in_tensor_names_and_config_values_end_in_a_stored_report(api, control_worker, settings,
                                                                                       tiny, tmp_path):
    """PostgreSQL cannot store a NUL in text: a report quoting one must still be stored, never retried forever."""
    folder = copy_model(tiny, tmp_path)
    craft_header = json.dumps({"evil\u0000name": {"dtype": "NOPE", "shape": [1], "data_offsets": [0, 1]}}).encode()
    (folder / "nul.safetensors").write_bytes(struct.pack("<Q", len(craft_header)) + craft_header + b"\0")
    config = {**tiny.spec.config(), "model_type": "llama\u0000", "license": "mit\u0000"}
    (folder / "config.json").write_text(json.dumps(config))
    response = await api.post("/api/models", json=registration(settings, await upload(settings, folder),
                                                               parameter_count=tiny.parameter_count, license=None))
    model = await wait_settled(api, response.json()["id"], timeout=60)
    assert model["status"] == "QUARANTINED", model["error"]
    found = {(f["file"], f["code"]): f for f in blocking(model)}
    assert "evil\\x00name" in found[("nul.safetensors", "bad_tensor")]["subject"]
    assert found[("config.json", "config_incomplete")]["subject"] == "model_type"
    assert model["license_category"] in (None, "unknown")


async def test_file_names_that_are_not_plain_paths_fail_with_the_name(api, control_worker, settings, tiny):
    for odd in ("notes\nforged-line.txt", "weights\\evil.bin"):
        prefix = await upload(settings, tiny.path)
        async with ObjectStore(settings) as store:
            await store.put_bytes(settings.models_bucket, f"{prefix}/{odd}", b"hello")
        model = await register_and_wait(api, settings, prefix, parameter_count=tiny.parameter_count)
        assert model["status"] == "FAILED"
        assert repr(odd) in model["error"] and "plain relative names" in model["error"]
        assert await objects_under(settings, prefix)  # nothing was moved


async def test_missing_objects_and_missing_config_fail_with_the_reason(api, control_worker, settings, tiny, tmp_path):
    empty = await register_and_wait(api, settings, f"default/{unique('nothing-here')}")
    assert empty["status"] == "FAILED"
    assert "no objects" in empty["error"]

    folder = copy_model(tiny, tmp_path)
    (folder / "config.json").unlink()
    prefix = await upload(settings, folder)
    no_config = await register_and_wait(api, settings, prefix)
    assert no_config["status"] == "FAILED"
    assert "config.json is missing" in no_config["error"]


@pytest.mark.parametrize("source_path", [
    "s3://other-bucket/model", "s3://models/../secrets", "s3://models/a/../../b", "http://models/x",
    "s3://models/", "s3://models", "models/x", "s3:///x", "s3://models/a//b",
])
async def test_bad_source_paths_are_422(api, settings, source_path):
    response = await api.post("/api/models", json=registration(settings, "x", source_path=source_path))
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == "source_path"


async def test_duplicate_registration_is_409(api, control_worker, settings, tiny):
    prefix = await upload(settings, tiny.path)
    body = registration(settings, prefix, name=unique("dup"), version="2.0")
    assert (await api.post("/api/models", json=body)).status_code == 202
    second = await api.post("/api/models", json=body)
    assert second.status_code == 409
    assert second.json()["error"]["code"] == "conflict"


async def test_ten_registrations_at_once(api, control_worker, settings, tiny):
    prefixes = await asyncio.gather(*(upload(settings, tiny.path) for _ in range(10)))
    models = await asyncio.gather(*(
        register_and_wait(api, settings, prefix, parameter_count=tiny.parameter_count)
        for prefix in prefixes
    ))
    assert [m["status"] for m in models] == ["AVAILABLE"] * 10
    assert len({m["id"] for m in models}) == 10


def test_a_report_lists_blocking_findings_first_and_counts_what_it_leaves_out():
    from registry.findings import Finding
    from workflows.register_model import MAX_REPORTED_FINDINGS, reported

    notes_first = [Finding(check="license", code="note", message=f"note {i}", blocking=False) for i in range(150)]
    blocks = [Finding(check="clamav", code="signature", message=f"virus {i}", file=f"f{i}") for i in range(100)]
    listed = reported(notes_first + blocks)
    assert len(listed) == MAX_REPORTED_FINDINGS + 1
    assert [f.message for f in listed[:100]] == [f"virus {i}" for i in range(100)]
    assert listed[-1].code == "more_findings" and listed[-1].message == "50 more findings not listed (0 blocking)"
    assert not listed[-1].blocking
    assert reported(blocks) == blocks
