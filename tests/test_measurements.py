"""Measurements as data: JSON and CSV imports (aiconfigurator's silicon columns), all or nothing with 422s naming
the row and column, filtered and paged lists, bounds, and tenancy."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from tests.helpers import unique
from tests.inference_helpers import new_project

SILICON = Path("/work/shared/data/perf/aiconfigurator/silicon_sample.csv")
if not SILICON.exists():
    SILICON = Path(__file__).parent / "budsim" / "fixtures" / "silicon_sample.csv"
CSV = {"Content-Type": "text/csv"}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def measurement(model_name: str, **changes) -> dict:
    return {"model_name": model_name, "architecture": "llama", "gpu_type": "h100_sxm", "runtime": "vllm",
            "runtime_version": "0.8.5", "precision": "bfloat16", "tp": 2, "pp": 1, "max_num_seqs": 64,
            "input_tokens": 1024, "output_tokens": 128, "concurrency": 8, "ttft_p50_ms": 120.5, "ttft_p99_ms": 300.0,
            "tpot_p50_ms": 11.25, "tpot_p99_ms": 20.0, "throughput_tps": 640.0, "request_count": 200,
            "source": {"kind": "import", "id": "lab-run-7"}, **changes}


def silicon_rows(systems=("h100_sxm", "h200_sxm", "b200_sxm"), count: int = 12) -> tuple[list[str], list[dict]]:
    with SILICON.open() as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if row["mode"] == "agg" and row["system"] in systems and row["precision"]]
        return reader.fieldnames, rows[:count]


def as_csv(header: list[str], rows: list[dict]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


async def listed(client, **params) -> list[dict]:
    items, cursor = [], None
    while True:
        page = await client.get("/api/measurements", params={**params, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        items += page.json()["items"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return items


async def test_a_json_import_is_stored_canonical_and_listed_by_model_gpu_and_runtime(api):
    name = unique("org/model")
    rows = [measurement(name), measurement(name, gpu_type="nvidia-l40s", runtime="trtllm", precision="fp8",
                                           ttft_p99_ms=None, tpot_p99_ms=None, concurrency=16)]
    created = await api.post("/api/measurements", json=rows)
    assert created.status_code == 201, created.text
    assert created.json()["imported"] == 2
    mine = [m for m in await listed(api) if m["model_name"] == name]
    assert [(m["gpu_type"], m["runtime"], m["precision"]) for m in mine] == [
        ("nvidia-h100-80gb", "vllm", "bf16"), ("nvidia-l40s", "tensorrt-llm", "fp8")]
    assert mine[0]["ttft_p50_ms"] == 120.5 and mine[0]["tpot_p99_ms"] == 20.0 and mine[0]["source"]["id"] == "lab-run-7"
    assert mine[1]["ttft_p99_ms"] is None
    h100 = [m["model_name"] for m in await listed(api, gpu_type="h100_sxm", runtime="vllm")]
    assert name in h100
    trt = [m for m in await listed(api, gpu_type="nvidia-l40s", runtime="tensorrt-llm") if m["model_name"] == name]
    assert [m["concurrency"] for m in trt] == [16]


async def test_a_bad_json_row_refuses_the_whole_import_naming_row_and_field(api):
    name = unique("org/model")
    rows = [measurement(name), measurement(name, gpu_type="tpu-v5"), measurement(name, ttft_p50_ms=-1),
            measurement(name, tpot_p50_ms=50, tpot_p99_ms=10)]
    refused = await api.post("/api/measurements", json=rows)
    assert refused.status_code == 422, refused.text
    fields = [d["field"] for d in refused.json()["error"]["details"]]
    assert "[1].gpu_type" in fields and "[2].ttft_p50_ms" in fields and "[3]" in fields
    assert "unknown GPU type" in refused.text
    assert not [m for m in await listed(api) if m["model_name"] == name]  # nothing of it was stored


async def test_the_silicon_csv_imports_with_its_own_columns(api):
    header, rows = silicon_rows()
    source_ids = {row["id"] for row in rows}
    created = await api.post("/api/measurements", content=as_csv(header, rows), headers=CSV)
    assert created.status_code == 201, created.text
    assert created.json()["imported"] == len(rows)
    stored = {m["source"]["id"]: m for m in await listed(api) if m["source"]["id"] in source_ids}
    assert set(stored) == source_ids
    for row in rows:
        got = stored[row["id"]]
        assert got["ttft_p50_ms"] == float(row["silicon_ttft_ms"])
        assert got["tpot_p50_ms"] == float(row["silicon_tpot_ms"])
        assert got["input_tokens"] == int(row["isl"]) and got["concurrency"] == int(row["batch_size"])
        assert got["tp"] == int(row["tp_size"]) and got["model_name"] == row["model_path"]
        assert got["gpu_type"] in ("nvidia-h100-80gb", "nvidia-h200", "nvidia-b200")
        assert got["runtime"] in ("vllm", "sglang", "tensorrt-llm") and got["source"]["kind"] == "import"


async def test_bad_csv_rows_are_named_by_row_and_column_and_nothing_is_imported(api):
    header, rows = silicon_rows(count=5)
    marker = unique("bad-csv")
    rows = [{**row, "id": f"{marker}-{i}"} for i, row in enumerate(rows)]
    rows[1]["system"] = "gb300"  # not a GPU type of the catalog
    rows[2]["isl"] = "many"
    rows[3]["mode"] = "disagg"
    refused = await api.post("/api/measurements", content=as_csv(header, rows), headers=CSV)
    assert refused.status_code == 422, refused.text
    details = {d["field"]: d["message"] for d in refused.json()["error"]["details"]}
    assert "unknown GPU type" in details["row 2 (line 3).system"]
    assert "not a number" in details["row 3 (line 4).isl"]
    assert "agg" in details["row 4 (line 5).mode"]
    assert not [m for m in await listed(api) if (m["source"]["id"] or "").startswith(marker)]

    missing = await api.post("/api/measurements", content=b"system,isl\nh100_sxm,10\n", headers=CSV)
    assert missing.status_code == 422 and missing.json()["error"]["details"][0]["field"] == "header"
    ragged = await api.post("/api/measurements", content=as_csv(header, rows[:1]) + b"1,2,3\n", headers=CSV)
    assert ragged.status_code == 422 and "row 2 (line 3)" in ragged.json()["error"]["details"][0]["field"]


async def test_import_bounds(api):
    one = measurement(unique("org/model"))
    too_many = await api.post("/api/measurements", content=json.dumps([one] * 10_001),
                              headers={"Content-Type": "application/json"})
    assert too_many.status_code == 422 and "10000" in too_many.text, too_many.text
    header, rows = silicon_rows(count=1)
    many_rows = as_csv(header, rows * 10_001)
    over = await api.post("/api/measurements", content=many_rows, headers=CSV)
    assert over.status_code == 422 and "10000" in over.text, over.text
    assert (await api.post("/api/measurements", content=b"<xml/>", headers={"Content-Type": "application/xml"})
            ).status_code == 415
    assert (await api.post("/api/measurements", content=b"{", headers={"Content-Type": "application/json"})
            ).status_code == 422
    assert (await api.post("/api/measurements", json={"not": "a list"})).status_code == 422
    assert (await api.post("/api/measurements", json=[])).status_code == 422
    huge = await api.post("/api/measurements", content=b"x" * (9 * 1024 * 1024), headers=CSV)
    assert huge.status_code == 413
    for hostile in ({"tp": 10**9}, {"ttft_p50_ms": 1e308}, {"model_name": "x" * 201}, {"runtime": "ollama"},
                    {"precision": "fp3"}, {"concurrency": 0}, {"extra": 1}, {"source": {"kind": "guess"}}):
        refused = await api.post("/api/measurements", json=[{**measurement("m"), **hostile}])
        assert refused.status_code == 422, (hostile, refused.text)
    nul_source = {**measurement("m"), "source": {"kind": "import", "id": "a\u0000b"}}
    for body in (b"[" * 200_000, json.dumps([nul_source]).encode(),
                 json.dumps([measurement("m")]).replace('"m"', '"\\ud800"').encode()):
        refused = await api.post("/api/measurements", content=body, headers={"Content-Type": "application/json"})
        assert refused.status_code == 422, refused.text
    assert (await api.get("/api/measurements", params={"cursor": "not-a-cursor"})).status_code == 422
    assert (await api.get("/api/measurements", params={"gpu_type": "tpu"})).status_code == 422
    assert (await api.get("/api/measurements", params={"limit": 5000})).status_code == 422


async def test_lists_page_with_a_cursor(api):
    name = unique("org/model")
    assert (await api.post("/api/measurements", json=[measurement(name, concurrency=c) for c in range(1, 8)])
            ).status_code == 201
    source_rows = [m for m in await listed(api, limit=3) if m["model_name"] == name]
    assert [m["concurrency"] for m in source_rows] == list(range(1, 8))


async def test_another_project_sees_none_of_a_projects_measurements(api, anon_api):
    name = unique("org/model")
    assert (await api.post("/api/measurements", json=[measurement(name)])).status_code == 201
    _, token = await new_project(api)
    theirs = bearer(token)
    page = await anon_api.get("/api/measurements", headers=theirs)
    assert page.status_code == 200 and page.json()["items"] == []
    mine = next(m for m in await listed(api) if m["model_name"] == name)
    assert mine["model_id"] is None
    # a model of another project cannot be named
    models = (await api.get("/api/models")).json()["items"]
    if models:
        refused = await anon_api.post("/api/measurements", json=[measurement(name, model_id=models[0]["id"])],
                                      headers=theirs)
        assert refused.status_code == 422 and refused.json()["error"]["details"][0]["field"] == "[0].model_id"
    unknown = await anon_api.post("/api/measurements", headers=theirs,
                                  json=[measurement(name, model_id="00000000-0000-0000-0000-000000000001")])
    assert unknown.status_code == 422
    assert (await anon_api.get("/api/measurements", headers=theirs)).json()["items"] == []
