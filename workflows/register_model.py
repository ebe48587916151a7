"""RegisterModel: list, checksum and scan every file of a model; AVAILABLE only when every check passes.

Any blocking finding moves the objects under a quarantine prefix (nothing is deleted) and marks the model
QUARANTINED with a report naming each file and finding. Infrastructure failures (clamd or S3 down) retry and never
mark a model clean. A model that cannot be scanned is FAILED with the reason: no objects, no config.json, a prefix
over registry.model_objects' limits (objects, size per file, names), or an object gone between listing and reading.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.model_records import ModelRecordActivities
    from activities.object_store import ObjectStoreActivities
    from activities.scanning import ScanningActivities
    from control.payloads.models import (
        AnalyzeConfigInput,
        ChecksumResult,
        FileRef,
        FileReport,
        FileScanResult,
        ListObjectsInput,
        ModelStatus,
        QuarantineInput,
        RecordScanInput,
        RegisterModelInput,
        RegisterModelResult,
        ScanReport,
    )
    from registry.findings import Finding
    from registry.pickle_scan import is_pickle_candidate
    from registry.safetensors_check import merge_layer_indices
    from workflows.policies import INFRA_RETRY, failure_reason

LARGE_FILE_POLICY = (
    "Files up to clamd's StreamMaxLength are scanned in one INSTREAM session; larger files are scanned as "
    "consecutive overlapping windows of at most that size, so every byte is scanned and any signature shorter than "
    "the overlap lies whole inside one window. Whole-file hashes are covered by the SHA-256 checksums; pickle files "
    "are additionally walked opcode by opcode and safetensors headers validated against the file size."
)
# Reading or moving whole objects: a 100 GB shard at ~20 MB/s; heartbeats catch a stuck worker much sooner.
STREAMING = dict(start_to_close_timeout=timedelta(hours=2), heartbeat_timeout=timedelta(seconds=30),
                 retry_policy=INFRA_RETRY)
# Listing a prefix; reading config.json, README and LICENSE.
SMALL_READ = dict(start_to_close_timeout=timedelta(minutes=2), retry_policy=INFRA_RETRY)
# Each file's findings are bounded by its scanner; a model of many bad files lists this many in its report (the
# model's status counts them all), so the report stays small enough to store and to send through Temporal.
MAX_REPORTED_FINDINGS = 200
# Temporal refuses a workflow more than 2,000 pending activities; a model of 1,000 files needs 2-3 per file.
MAX_ACTIVITIES_IN_FLIGHT = 256


def quarantine_prefix(model_id) -> str:
    return f"quarantine/{model_id}"


@workflow.defn
class RegisterModel:
    def __init__(self) -> None:
        self._step = "starting"
        self._files_done = 0
        self._files_total = 0
        self._slots = asyncio.Semaphore(MAX_ACTIVITIES_IN_FLIGHT)

    @workflow.query
    def progress(self) -> dict:
        return {"step": self._step, "files_done": self._files_done, "files_total": self._files_total}

    async def _per_file(self, method, refs: list[FileRef]) -> list:
        async def one(ref: FileRef):
            async with self._slots:
                result = await workflow.execute_activity_method(method, ref, **STREAMING)
            self._files_done += 1
            return result

        return await asyncio.gather(*(one(ref) for ref in refs))

    async def _record(self, outcome: RecordScanInput) -> None:
        await workflow.execute_activity_method(
            ModelRecordActivities.record_model_scan, outcome,
            start_to_close_timeout=timedelta(seconds=60), retry_policy=INFRA_RETRY,
        )

    @workflow.run
    async def run(self, request: RegisterModelInput) -> RegisterModelResult:
        try:
            return await self._scan(request)
        except ActivityError as error:
            reason = failure_reason(error)
            self._step = "failed"
            report = ScanReport(status=ModelStatus.FAILED, large_file_policy=LARGE_FILE_POLICY, finished_at=workflow.now())
            await self._record(RecordScanInput(model_id=request.model_id, status=ModelStatus.FAILED, report=report,
                                               error=reason))
            raise ApplicationError(f"model registration failed: {reason}", non_retryable=True) from error

    async def _scan(self, request: RegisterModelInput) -> RegisterModelResult:
        self._step = "listing"
        listing = await workflow.execute_activity_method(
            ObjectStoreActivities.list_model_objects, ListObjectsInput(bucket=request.bucket, prefix=request.prefix),
            **SMALL_READ,
        )
        refs = [FileRef(bucket=request.bucket, object=obj) for obj in listing.objects]
        pickles = [ref for ref in refs if is_pickle_candidate(ref.object.path)]
        safetensors = [ref for ref in refs if ref.object.path.endswith(".safetensors")]
        self._files_total = 2 * len(refs) + len(pickles) + len(safetensors)

        self._step = "scanning"
        checksums, clamav, pickle_results, safetensors_results = await asyncio.gather(
            self._per_file(ObjectStoreActivities.checksum_object, refs),
            self._per_file(ScanningActivities.clamav_scan_object, refs),
            self._per_file(ScanningActivities.pickle_scan_object, pickles),
            self._per_file(ScanningActivities.safetensors_check_object, safetensors),
        )
        weights_parameters = None
        if safetensors_results and all(r.parameter_count is not None for r in safetensors_results):
            weights_parameters = sum(r.parameter_count for r in safetensors_results)

        weights_layers = merge_layer_indices([r.layers for r in safetensors_results]) if safetensors_results else None

        self._step = "analyzing config"
        analysis = await workflow.execute_activity_method(
            ScanningActivities.analyze_model_config,
            AnalyzeConfigInput(bucket=request.bucket, objects=listing.objects,
                               declared_parameter_count=request.declared_parameter_count,
                               declared_context_length=request.declared_context_length,
                               requested_license=request.requested_license, weights_parameter_count=weights_parameters,
                               weights_layers=weights_layers),
            **SMALL_READ,
        )

        scans: list[FileScanResult] = [*clamav, *pickle_results, *safetensors_results]
        findings = [finding for scan in scans for finding in scan.findings] + analysis.findings
        blocked = [finding for finding in findings if finding.blocking]
        status = ModelStatus.QUARANTINED if blocked else ModelStatus.AVAILABLE
        moved_to = None
        if blocked:
            self._step = "quarantining"
            moved_to = quarantine_prefix(request.model_id)
            await workflow.execute_activity_method(
                ObjectStoreActivities.quarantine_objects,
                QuarantineInput(bucket=request.bucket, objects=listing.objects, quarantine_prefix=moved_to),
                **STREAMING,
            )

        self._step = "recording"
        report = ScanReport(
            status=status, files=file_reports(listing.objects, checksums, scans), findings=reported(findings),
            large_file_policy=LARGE_FILE_POLICY, quarantine_prefix=f"s3://{request.bucket}/{moved_to}/" if moved_to else None,
            finished_at=workflow.now(),
        )
        await self._record(RecordScanInput(
            model_id=request.model_id, status=status, report=report, facts=analysis.facts,
            real_parameter_count=weights_parameters or (analysis.facts.parameter_count if analysis.facts else None),
            license_id=analysis.license_id, license_category=analysis.license_category, checksums=checksums,
        ))
        self._step = "done"
        return RegisterModelResult(model_id=request.model_id, status=status, blocking_findings=len(blocked))


def reported(findings: list[Finding]) -> list[Finding]:
    """The findings a report lists: blocking ones first, at most MAX_REPORTED_FINDINGS, then a count of the rest."""
    if len(findings) <= MAX_REPORTED_FINDINGS:
        return findings
    ordered = sorted(findings, key=lambda finding: not finding.blocking)  # stable: file order within each group
    rest = ordered[MAX_REPORTED_FINDINGS:]
    return ordered[:MAX_REPORTED_FINDINGS] + [Finding(
        check="objects", code="more_findings", blocking=any(finding.blocking for finding in rest),
        message=f"{len(rest)} more findings not listed ({sum(finding.blocking for finding in rest)} blocking)",
    )]


def file_reports(objects, checksums: list[ChecksumResult], scans: list[FileScanResult]) -> list[FileReport]:
    sha = {c.path: c.sha256 for c in checksums}
    reports = {obj.path: FileReport(path=obj.path, size=obj.size, sha256=sha.get(obj.path)) for obj in objects}
    for scan in scans:
        reports[scan.path].checks[scan.check] = scan.summary
    return list(reports.values())
