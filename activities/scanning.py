"""Security and integrity checks of a model's files: ClamAV, pickle opcodes, safetensors headers, config.json.

What a file holds is a finding, whatever it holds: a scanner never raises on hostile input (each has bounds on
size, depth and time), so a bad file ends the registration with its reason instead of retrying forever. What
retrying cannot change about the objects themselves (one deleted after listing) fails the registration at once
(activities.object_store.object_errors); clamd or S3 not answering retries.
"""

from __future__ import annotations

import asyncio
import tempfile

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.heartbeats import heartbeating
from activities.object_store import fails_after_retries, object_errors
from core.model_facts import ConfigError, load_config_json
from core.objectstore import ObjectStore
from control.payloads.models import AnalyzeConfigInput, ConfigAnalysis, FileRef, FileScanResult, ModelObject
from registry.clamd import ClamdClient, ClamdUnavailable
from registry.findings import Finding
from registry.license import resolve_license
from registry.model_config import registration_facts
from registry.model_objects import MiB, format_limit, format_size
from registry.pickle_scan import scan_pickle_path
from registry.safetensors_check import check_safetensors_header, read_header_bytes

# config.json, README.md and LICENSE are a few KB; larger ones are not read. An oversized config.json blocks the
# model (QUARANTINED: its files were scanned and what they hold cannot be used; FAILED is for registrations that
# could not be scanned at all, see registry.model_objects). An oversized README or LICENSE is a note.
TEXT_FILE_LIMIT = 4 * MiB


class ScanningActivities:
    def __init__(self, store: ObjectStore, clamd: ClamdClient):
        self.store = store
        self.clamd = clamd

    async def _counted_stream(self, ref: FileRef, progress: dict):
        progress["bytes"] = 0
        with object_errors(ref.object.path):
            async for chunk in self.store.stream(ref.bucket, ref.object.key):
                progress["bytes"] += len(chunk)
                yield chunk

    @activity.defn
    async def clamav_scan_object(self, ref: FileRef) -> FileScanResult:
        """Stream the object through clamd INSTREAM (windowed above clamd's stream limit). clamd down: retry."""
        path = ref.object.path
        async with heartbeating({"path": path}) as progress:  # clamd may think about one window for minutes
            try:
                verdict = await self.clamd.instream(self._counted_stream(ref, progress))
            except ClamdUnavailable:
                raise  # retryable: never mark a model clean without clamd's answer
        if verdict.infected:
            finding = Finding(check="clamav", code="signature", file=path, subject=verdict.signature,
                              message=f"ClamAV found {verdict.signature} in {path}")
            return FileScanResult(path=path, check="clamav", findings=[finding], summary=f"FOUND {verdict.signature}")
        if not verdict.clean:
            # clamd answered with an error: retry a few times (it may be transient), then report it as a failure.
            raise ApplicationError(f"clamd could not scan {path}: {verdict.detail}", type="ClamdError",
                                   non_retryable=activity.info().attempt >= 5)
        return FileScanResult(path=path, check="clamav", summary=f"clean ({verdict.windows} window(s))")

    @activity.defn
    async def pickle_scan_object(self, ref: FileRef) -> FileScanResult:
        """Walk the pickle opcodes (never unpickling). The object is spooled to a temp file: zip members need seeks.
        The walk runs on a thread within registry.pickle_scan's opcode, size and time bounds."""
        async with heartbeating({"path": ref.object.path, "stage": "spooling"}) as progress:
            with tempfile.NamedTemporaryFile(prefix="bud-pickle-", suffix=".bin") as spool:
                async for chunk in self._counted_stream(ref, progress):
                    spool.write(chunk)
                spool.flush()
                progress["stage"] = "walking opcodes"
                with fails_after_retries(f"the pickle scan of {ref.object.path}"):
                    report = await asyncio.to_thread(scan_pickle_path, spool.name, ref.object.path)
        summary = f"{report.format}: {report.pickles_scanned} pickle(s), imports {', '.join(report.globals) or 'none'}"
        return FileScanResult(path=ref.object.path, check="pickle", findings=report.findings, summary=summary[:500])

    @activity.defn
    async def safetensors_check_object(self, ref: FileRef) -> FileScanResult:
        """Validate the header with two range reads (a header length beyond 100 MB is a finding, not a read); count
        the real parameters and the layers the tensor names hold. Parsing a large header runs on a thread."""
        async def read_range(offset: int, length: int) -> bytes:
            return await self.store.read_range(ref.bucket, ref.object.key, offset, length)

        async with heartbeating({"path": ref.object.path}):
            with object_errors(ref.object.path):
                prefix = await read_header_bytes(read_range, ref.object.size)
            with fails_after_retries(f"the safetensors check of {ref.object.path}"):
                report = await asyncio.to_thread(check_safetensors_header, prefix, ref.object.size, ref.object.path)
        summary = f"{report.tensor_count} tensors, {report.parameter_count} parameters"
        return FileScanResult(path=ref.object.path, check="safetensors", findings=report.findings, summary=summary,
                              parameter_count=report.parameter_count if report.ok else None, layers=report.layers)

    async def _read_text(self, bucket: str, obj: ModelObject) -> str:
        with object_errors(obj.path):
            return (await self.store.get_bytes(bucket, obj.key)).decode("utf-8", errors="replace")

    async def _optional_text(self, bucket: str, objects: list[ModelObject], name: str,
                             notes: list[Finding]) -> str | None:
        """README.md or LICENSE when present; one over TEXT_FILE_LIMIT is skipped with a note."""
        obj = next((o for o in objects if o.path == name), None)
        if obj is None:
            return None
        if obj.size > TEXT_FILE_LIMIT:
            notes.append(Finding(check="license", code="file_too_large", file=name, blocking=False,
                                 message=f"{name} is {format_size(obj.size)}, larger than the "
                                         f"{format_limit(TEXT_FILE_LIMIT)} limit: not read for the license"))
            return None
        return await self._read_text(bucket, obj)

    @activity.defn
    async def analyze_model_config(self, request: AnalyzeConfigInput) -> ConfigAnalysis:
        """config.json -> architecture facts; declared parameter count, context and layers checked; license
        resolved. A config.json that is too large, not JSON, nested too deep or not an object is a blocking
        finding (the model ends QUARANTINED with it)."""
        with fails_after_retries("analyzing config.json"):
            return await self._analyze(request)

    async def _analyze(self, request: AnalyzeConfigInput) -> ConfigAnalysis:
        config_object = next((o for o in request.objects if o.path == "config.json"), None)
        try:
            if config_object is None:
                raise ConfigError("config.json", "config.json is missing")
            if config_object.size > TEXT_FILE_LIMIT:
                raise ConfigError("config.json", f"config.json is {format_size(config_object.size)}, larger than the "
                                                 f"{format_limit(TEXT_FILE_LIMIT)} limit")
            config = load_config_json(await self._read_text(request.bucket, config_object))
        except ConfigError as error:
            finding = Finding(check="config", code="config_unreadable", file="config.json", message=str(error))
            return ConfigAnalysis(findings=[finding])
        facts, findings = registration_facts(
            config,
            weights_parameter_count=request.weights_parameter_count,
            declared_parameter_count=request.declared_parameter_count,
            declared_context_length=request.declared_context_length,
            weights_layers=request.weights_layers,
        )
        notes: list[Finding] = []
        license_file = "LICENSE" if any(o.path == "LICENSE" for o in request.objects) else "LICENSE.txt"
        license_info = resolve_license(
            requested=request.requested_license,
            config=config,
            readme_text=await self._optional_text(request.bucket, request.objects, "README.md", notes),
            license_text=await self._optional_text(request.bucket, request.objects, license_file, notes),
            license_file=license_file,
        )
        findings += notes + license_info.findings
        return ConfigAnalysis(facts=facts, license_id=license_info.id, license_category=license_info.category,
                              license_source=license_info.source, findings=findings)
