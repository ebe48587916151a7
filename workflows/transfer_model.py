"""TransferModel (child of DeployEndpoint): the model from the registry's S3 prefix to the cluster's model storage.

Local clusters get a folder per model (STATE/model-cache/<model_id>) filled file by file: resumable from the copied
size, verified against the registry's SHA-256, skipped when a verified copy is cached. On Kubernetes the runtime
chart's init container streams the same objects into a per-model PVC and verifies the same checksums, so the
workflow hands the S3 URI through.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.transfer import TransferActivities
    from control.payloads.deployments import TransferFileInput, TransferModelInput, TransferModelResult
    from workflows.policies import INFRA_RETRY

PARALLEL_FILES = 4


@workflow.defn
class TransferModel:
    def __init__(self) -> None:
        self._done = 0
        self._total = 0

    @workflow.query
    def progress(self) -> dict:
        return {"files_done": self._done, "files_total": self._total}

    @workflow.run
    async def run(self, request: TransferModelInput) -> TransferModelResult:
        source_uri = f"s3://{request.bucket}/{request.prefix}"
        if request.cluster_kind == "kubernetes":
            return TransferModelResult(model_uri=source_uri, bytes_copied=0, files_skipped=0, cached=False)
        self._total = len(request.files)
        slots = asyncio.Semaphore(PARALLEL_FILES)

        async def copy(file: dict):
            async with slots:
                result = await workflow.execute_activity_method(
                    TransferActivities.transfer_model_file,
                    TransferFileInput(bucket=request.bucket, key=f"{request.prefix}/{file['path']}", path=file["path"],
                                      size=file["size"], sha256=file.get("sha256"), model_id=request.model_id),
                    start_to_close_timeout=timedelta(hours=4), heartbeat_timeout=timedelta(seconds=10),
                    retry_policy=INFRA_RETRY,
                )
                self._done += 1
                return result

        results = await asyncio.gather(*(copy(file) for file in request.files))
        skipped = sum(r.skipped for r in results)
        return TransferModelResult(model_uri=results[0].destination, bytes_copied=sum(r.bytes_copied for r in results),
                                   files_skipped=skipped, cached=skipped == len(results))
