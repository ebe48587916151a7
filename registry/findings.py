"""One finding type shared by every scanner, so a scan report can list them all the same way.

A finding names the file it concerns, the check that produced it, a machine-readable code, the subject (a virus
signature name, a dangerous global such as `os.system`, a tensor name, a config key) and a sentence for people.
`blocking` findings keep a model out of AVAILABLE; non-blocking ones are notes shown in the report.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

CheckName = Literal["clamav", "pickle", "safetensors", "config", "license", "objects"]


class Finding(BaseModel):
    check: CheckName = Field(description="which scanner produced it")
    code: str = Field(description="machine-readable kind, e.g. 'signature', 'dangerous_global', 'offsets_not_contiguous'")
    message: str = Field(description="one sentence for people")
    file: str | None = Field(default=None, description="object key or file name the finding is about")
    subject: str | None = Field(default=None, description="signature name, global ('os.system'), tensor or config key")
    blocking: bool = Field(default=True, description="True keeps the model QUARANTINED; False is a note")


def blocking(findings: list[Finding]) -> list[Finding]:
    return [finding for finding in findings if finding.blocking]
