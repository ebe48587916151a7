"""Schemathesis over the whole OpenAPI, against the real API process: no server error, and no answer the schema does
not document (status codes, content types, bodies). Bounded in examples and time so it fits in `make test`.

Not yet checked here: that every schema-valid request is accepted and every schema-violating one refused (some
bounds live in validators the schema does not show yet)."""

from __future__ import annotations

import asyncio
import subprocess

from core.processes import free_port
from devstack import services

MAX_EXAMPLES = 8
MAX_SECONDS = 75


async def test_the_api_answers_what_its_schema_says(settings, db_pool, state_dir, admin_token, control_worker,
                                                     tmp_path):
    port = free_port()
    process = services.python_service(
        "api-fuzz", ["api"], state_dir, {**settings.as_environment(), "BUD_API_PORT": str(port)},
        health_url=f"http://127.0.0.1:{port}/healthz",
    ).start()
    try:
        await asyncio.to_thread(process.wait_healthy)
        command = [
            str(services.VENV_BIN / "schemathesis"), "run",
            f"http://127.0.0.1:{port}/openapi.json", "-H", f"Authorization: Bearer {admin_token}",
            "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance", "--max-examples", str(MAX_EXAMPLES), "--max-time", str(MAX_SECONDS), "--seed", "7",
            "--phases", "examples,coverage,fuzzing", "--workers", "2",
            # NUL is refused on purpose (PostgreSQL cannot store it): tests/test_request_limits.py covers that.
            "--generation-allow-x00", "false",
            "--report", "junit", "--report-dir", str(tmp_path),
        ]
        result = await asyncio.to_thread(subprocess.run, command, capture_output=True, text=True, cwd=tmp_path,
                                         timeout=MAX_SECONDS + 120)
    finally:
        process.stop()
    assert result.returncode == 0, result.stdout[-12000:] + result.stderr[-2000:]
