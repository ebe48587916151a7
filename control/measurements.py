"""Measurements in and out.

In: reading imports, a JSON list of MeasurementCreate, or a CSV with aiconfigurator's silicon columns
(silicon_sample.csv: backend, system, isl, osl, batch_size, tp_size, silicon_ttft_ms, ...) or with this API's own
field names. Either every row is good or the import is refused, with one problem per bad row naming the row and
the column.

Out: a deployment group's stored rows as the measurements budsim calibrates its predictor on."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from pydantic import ValidationError

from control.errors import Invalid
from control.payloads.measurements import MAX_IMPORT_ROWS, MeasurementCreate

MAX_PROBLEMS = 50
MAX_CELL_CHARS = 1000

# silicon_sample.csv column -> MeasurementCreate field. A column named like the field itself works as well.
SILICON_COLUMNS: dict[str, str] = {
    "model_path": "model_name",
    "system": "gpu_type",
    "backend": "runtime",
    "backend_version": "runtime_version",
    "gemm_quant_mode": "quantization",
    "isl": "input_tokens",
    "osl": "output_tokens",
    "batch_size": "concurrency",
    "tp_size": "tp",
    "pp_size": "pp",
    "silicon_ttft_ms": "ttft_p50_ms",
    "silicon_tpot_ms": "tpot_p50_ms",
}
_FIELDS = set(MeasurementCreate.model_fields) - {"source"}
_SOURCE_COLUMNS = {"source_kind": "kind", "source_id": "id", "window_start": "window_start", "window_end": "window_end"}
_INTEGER_FIELDS = {"parameter_count", "tp", "pp", "max_num_seqs", "max_num_batched_tokens", "input_tokens",
                   "output_tokens", "concurrency", "request_count"}
_REQUIRED = {"model_name", "gpu_type", "runtime", "input_tokens", "output_tokens", "concurrency", "ttft_p50_ms",
             "tpot_p50_ms"}


def _problem(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


class BadRows(Invalid):
    """Rows refused, each problem with its own field ("[3].gpu_type", "row 3 (line 4).system")."""

    def __init__(self, problems: list[dict[str, str]]):
        self.rows = problems[:MAX_PROBLEMS]
        more = f" (the first {len(self.rows)} listed)" if len(problems) > len(self.rows) else ""
        summary = "; ".join(f"{p['field']}: {p['message']}" for p in self.rows[:3])
        super().__init__(f"{len(problems)} problem(s) in the rows{more}, nothing imported: {summary}",
                         self.rows[0]["field"], problems=[p["message"] for p in self.rows])


def _refuse(problems: list[dict[str, str]]) -> BadRows:
    return BadRows(problems)


def _errors_of(error: ValidationError, where) -> list[dict[str, str]]:
    problems = []
    for detail in error.errors():
        loc = [str(part) for part in detail.get("loc", ())]
        problems.append(_problem(where(loc), detail.get("msg", "invalid")))
    return problems


def parse_json(body: bytes) -> list[MeasurementCreate]:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise Invalid(f"body is not valid JSON: {str(error)[:200]}", "body") from None
    except RecursionError:
        raise Invalid("body nests too deeply to be a list of measurements", "body") from None
    if not isinstance(data, list):
        raise Invalid("body must be a JSON list of measurements (or text/csv)", "body")
    if not data:
        raise Invalid("body has no measurements", "body")
    if len(data) > MAX_IMPORT_ROWS:
        raise Invalid(f"{len(data)} rows; at most {MAX_IMPORT_ROWS} per request", "body")
    items, problems = [], []
    for index, raw in enumerate(data):
        try:
            items.append(MeasurementCreate.model_validate(raw))
        except ValidationError as error:
            problems += _errors_of(error, lambda loc, i=index: f"[{i}]" + "".join(f".{p}" for p in loc))
    if problems:
        raise _refuse(problems)
    return items


def _column_of(field_path: list[str], columns: dict[str, str]) -> str:
    """The CSV column a MeasurementCreate field came from."""
    if not field_path:
        return "row"
    if field_path[0] == "source" and len(field_path) > 1:
        name = next((c for c, f in _SOURCE_COLUMNS.items() if f == field_path[1]), field_path[1])
        return name if name in columns else "source_id"
    return next((column for column, field in columns.items() if field == field_path[0]), field_path[0])


def parse_csv(body: bytes) -> list[MeasurementCreate]:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Invalid("the CSV is not UTF-8 text", "body") from None
    if "\x00" in text:
        raise Invalid("the CSV contains a NUL character", "body")
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        raise Invalid("the CSV has no header row", "body") from None
    header = [name.strip() for name in header]
    columns: dict[str, str] = {}  # CSV column -> field
    for name in header:
        if name in SILICON_COLUMNS:
            columns[name] = SILICON_COLUMNS[name]
        elif name in _FIELDS or name in _SOURCE_COLUMNS or name == "id":
            columns[name] = name
    present = set(columns.values())
    missing = [field for field in sorted(_REQUIRED) if field not in present]
    if missing:
        names = [next((c for c, f in SILICON_COLUMNS.items() if f == field), field) for field in missing]
        raise Invalid(f"the CSV header lacks column(s) {', '.join(names)}", "header",
                      problems=[f"no column for {field} (e.g. {name})" for field, name in zip(missing, names)])
    items, problems = [], []
    try:
        for number, cells in enumerate(reader, start=1):
            if not any(cell.strip() for cell in cells):
                continue
            if len(items) + len(problems) >= MAX_IMPORT_ROWS:
                raise Invalid(f"more than {MAX_IMPORT_ROWS} rows; at most {MAX_IMPORT_ROWS} per request", "body")
            where = f"row {number} (line {reader.line_num})"
            if len(cells) != len(header):
                problems.append(_problem(where, f"has {len(cells)} cells, the header has {len(header)}"))
                continue
            row = dict(zip(header, cells))
            try:
                items.append(_csv_item(row, columns))
            except _CellError as error:
                problems.append(_problem(f"{where}.{error.column}", error.message))
            except ValidationError as error:
                problems += _errors_of(error, lambda loc, w=where: f"{w}.{_column_of(loc, columns)}")
    except csv.Error as error:
        raise Invalid(f"the CSV cannot be read at line {reader.line_num}: {error}", "body") from None
    if problems:
        raise _refuse(problems)
    if not items:
        raise Invalid("the CSV has no rows", "body")
    return items


class _CellError(Exception):
    def __init__(self, column: str, message: str):
        super().__init__(message)
        self.column, self.message = column, message


def _csv_item(row: dict[str, str], columns: dict[str, str]) -> MeasurementCreate:
    mode = row.get("mode", "").strip()
    if mode and mode != "agg":
        raise _CellError("mode", f"{mode[:20]!r} rows time a disaggregated pair of deployments; only agg rows import")
    fields: dict[str, Any] = {}
    source: dict[str, Any] = {}
    for column, field in columns.items():
        value = row[column].strip()
        if len(value) > MAX_CELL_CHARS:
            raise _CellError(column, f"is longer than {MAX_CELL_CHARS} characters")
        if value == "":
            continue
        if field == "id":  # aiconfigurator's row id names the measurement's source
            source.setdefault("id", value)
        elif field in _SOURCE_COLUMNS:
            source[_SOURCE_COLUMNS[field]] = value
        elif field in _INTEGER_FIELDS:
            try:
                number = float(value)
            except ValueError:
                raise _CellError(column, f"{value[:20]!r} is not a number") from None
            if not number.is_integer():
                raise _CellError(column, f"{value[:20]!r} is not a whole number")
            fields[field] = int(number)
        else:
            fields[field] = value
    source.setdefault("kind", "import")
    return MeasurementCreate.model_validate({**fields, "source": source})


# ------------------------------------------------------------------------------------------ calibrating on them
MAX_CALIBRATION_ROWS = 1000  # the newest rows of a group a calibration is fitted on
_PAGE = 500


def calibration_measurement(row, facts, gpu_type: str):
    """A stored measurement as budsim sees one: the config and workload it ran (one serving instance with the row's
    concurrency; a row without max_num_seqs admitted every client at once) and its TTFT and TPOT."""
    from budsim.calibration import Measurement
    from budsim.catalog import get_gpu
    from budsim.predictor import serving_point
    from budsim.schemas import ServingConfig, Workload

    config = ServingConfig(
        tensor_parallel_size=row.tp, pipeline_parallel_size=row.pp,
        max_num_seqs=row.max_num_seqs or row.concurrency,
        max_num_batched_tokens=row.max_num_batched_tokens or ServingConfig().max_num_batched_tokens,
        runtime=row.runtime)
    workload = Workload(input_tokens=row.input_tokens, output_tokens=row.output_tokens, concurrency=row.concurrency)
    return Measurement(serving_point(facts, get_gpu(gpu_type), config, workload), row.ttft_p50_ms, row.tpot_p50_ms,
                       id=str(row.id))


async def group_measurements(conn, project_id, model_id, facts, gpu_type: str, runtime: str) -> list:
    """The project's measurements of one deployment group (the registered model on one GPU type under one runtime,
    at the model's precision: rows naming another precision are left out), as budsim Measurements, oldest first,
    at most the newest MAX_CALIBRATION_ROWS. Rows with a zero TTFT or TPOT say nothing about speed and are left
    out too."""
    from control.store import measurements as store

    precision = facts.precision.name
    rows, cursor = [], None
    while True:
        page, cursor = await store.list_measurements(conn, project_id, model_id=model_id, gpu_type=gpu_type,
                                                     runtime=runtime, limit=_PAGE, cursor=cursor)
        rows += [r for r in page if (r.precision in (None, precision)) and r.ttft_p50_ms > 0 and r.tpot_p50_ms > 0]
        rows = rows[-MAX_CALIBRATION_ROWS:]
        if cursor is None:
            return [calibration_measurement(row, facts, gpu_type) for row in rows]


async def group_calibration(conn, project_id, model_id, model_name: str, facts, gpu_type: str, runtime: str):
    """The group's calibration fitted on those measurements (in a thread: it is a small least-squares fit), or None
    when the group has none. The same rows give the same coefficients. Raises budsim's InvalidRequest when the
    measurements cannot calibrate this model."""
    import asyncio

    from budsim.calibration import calibrate, group_of

    rows = await group_measurements(conn, project_id, model_id, facts, gpu_type, runtime)
    if not rows:
        return None
    return await asyncio.to_thread(calibrate, group_of(rows[0].point, model_name), rows)
