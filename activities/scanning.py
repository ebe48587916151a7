"""Security and integrity checks of a model's files: ClamAV, pickle opcodes, safetensors headers, config.json."""

from __future__ import annotations

import asyncio
import tempfile
import time

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.model_facts import ConfigError, load_config_json
from core.objectstore import ObjectStore
from control.payloads.models import AnalyzeConfigInput, ConfigAnalysis, FileRef, FileScanResult
from registry.clamd import ClamdClient, ClamdUnavailable
from registry.findings import Finding
from registry.license import resolve_license
from registry.model_config import registration_facts
from registry.pickle_scan import scan_pickle_path
from registry.safetensors_check import read_safetensors_header

HEARTBEAT_EVERY_S = 2.0
TEXT_FILE_LIMIT = 4 * 1024 * 1024  # config.json, README.md and LICENSE are small; refuse to read giant ones


class ScanningActivities:
    def __init__(self, store: ObjectStore, clamd: ClamdClient):
        self.store = store
        self.clamd = clamd

    async def _heartbeating_stream(self, ref: FileRef):
        done, last_beat = 0, time.monotonic()
        async for chunk in self.store.stream(ref.bucket, ref.object.key):
            done += len(chunk)
            if time.monotonic() - last_beat > HEARTBEAT_EVERY_S:
                activity.heartbeat({"path": ref.object.path, "bytes": done})
                last_beat = time.monotonic()
            yield chunk

    async def _heartbeating(self, work, details: dict):
        """Await CPU-bound work on a thread while telling Temporal the activity is alive (the scanner's own bounds,
        registry.pickle_scan.MAX_SCAN_SECONDS and friends, make sure the work ends)."""
        task = asyncio.ensure_future(work)
        while True:
            done, _ = await asyncio.wait({task}, timeout=HEARTBEAT_EVERY_S)
            if done:
                return task.result()
            activity.heartbeat(details)

    @activity.defn
    async def clamav_scan_object(self, ref: FileRef) -> FileScanResult:
        """Stream the object through clamd INSTREAM (windowed above clamd's stream limit). clamd down: retry."""
        try:
            verdict = await self.clamd.instream(self._heartbeating_stream(ref))
        except ClamdUnavailable:
            raise  # retryable: never mark a model clean without clamd's answer
        path = ref.object.path
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
        """Walk the pickle opcodes (never unpickling). The object is spooled to a temp file: zip members need seeks."""
        with tempfile.NamedTemporaryFile(prefix="bud-pickle-", suffix=".bin") as spool:
            async for chunk in self._heartbeating_stream(ref):
                spool.write(chunk)
            spool.flush()
            report = await self._heartbeating(asyncio.to_thread(scan_pickle_path, spool.name, ref.object.path),
                                              {"path": ref.object.path, "stage": "walking opcodes"})
        summary = f"{report.format}: {report.pickles_scanned} pickle(s), imports {', '.join(report.globals) or 'none'}"
        return FileScanResult(path=ref.object.path, check="pickle", findings=report.findings, summary=summary[:500])

    @activity.defn
    async def safetensors_check_object(self, ref: FileRef) -> FileScanResult:
        """Validate the header with two range reads; count the real parameters."""
        async def read_range(offset: int, length: int) -> bytes:
            return await self.store.read_range(ref.bucket, ref.object.key, offset, length)

        report = await read_safetensors_header(read_range, ref.object.size, ref.object.path)
        summary = f"{report.tensor_count} tensors, {report.parameter_count} parameters"
        return FileScanResult(path=ref.object.path, check="safetensors", findings=report.findings, summary=summary,
                              parameter_count=report.parameter_count if report.ok else None)

    async def _small_text(self, bucket: str, objects, name: str) -> str | None:
        obj = next((o for o in objects if o.path == name), None)
        if obj is None or obj.size > TEXT_FILE_LIMIT:
            return None
        return (await self.store.get_bytes(bucket, obj.key)).decode("utf-8", errors="replace")

    @activity.defn
    async def analyze_model_config(self, request: AnalyzeConfigInput) -> ConfigAnalysis:
        """config.json -> architecture facts; declared parameter count/context checked; license resolved."""
        raw = await self._small_text(request.bucket, request.objects, "config.json")
        try:
            if raw is None:
                raise ConfigError("config.json", f"config.json is missing or larger than {TEXT_FILE_LIMIT:,} bytes")
            config = load_config_json(raw)
        except ConfigError as error:
            finding = Finding(check="config", code="config_unreadable", file="config.json", message=str(error))
            return ConfigAnalysis(findings=[finding])
        facts, findings = registration_facts(
            config,
            weights_parameter_count=request.weights_parameter_count,
            declared_parameter_count=request.declared_parameter_count,
            declared_context_length=request.declared_context_length,
        )
        license_info = resolve_license(
            requested=request.requested_license,
            config=config,
            readme_text=await self._small_text(request.bucket, request.objects, "README.md"),
            license_text=await self._small_text(request.bucket, request.objects, "LICENSE")
            or await self._small_text(request.bucket, request.objects, "LICENSE.txt"),
        )
        findings += license_info.findings
        return ConfigAnalysis(facts=facts, license_id=license_info.id, license_category=license_info.category,
                              license_source=license_info.source, findings=findings)
