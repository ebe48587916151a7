"""One finding type shared by every scanner, so a scan report can list them all the same way.

A finding names the file it concerns, the check that produced it, a machine-readable code, the subject (a virus
signature name, a dangerous global such as `os.system`, a tensor name, a config key) and a sentence for people.
`blocking` findings keep a model out of AVAILABLE; non-blocking ones are notes shown in the report.

Findings quote what hostile files hold (tensor names, config keys, file names), which may be megabytes long; every
text field is shortened to a bound here, so no scanner can make a scan result too large to store or to send
through Temporal.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field

CheckName = Literal["clamav", "pickle", "safetensors", "config", "license", "objects"]
MAX_MESSAGE_CHARS = 500
MAX_NAME_CHARS = 300  # file, subject and code


def shortened(text: str | None, limit: int) -> str | None:
    """`text` cut to `limit` characters, ending in '…' when something was cut."""
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def printable(text: str) -> str:
    """Control characters spelled out (a NUL as '\\x00'): PostgreSQL cannot store a NUL, and a newline in a file's
    tensor name must not start a forged line in a report."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _bounded(limit: int):
    return BeforeValidator(lambda value: shortened(printable(value[: limit * 4]), limit)
                           if isinstance(value, str) else value)


class Finding(BaseModel):
    check: CheckName = Field(description="which scanner produced it")
    code: Annotated[str, _bounded(MAX_NAME_CHARS)] = Field(
        description="machine-readable kind, e.g. 'signature', 'dangerous_global', 'offsets_not_contiguous'")
    message: Annotated[str, _bounded(MAX_MESSAGE_CHARS)] = Field(description="one sentence for people")
    file: Annotated[str | None, _bounded(MAX_NAME_CHARS)] = Field(
        default=None, description="object key or file name the finding is about")
    subject: Annotated[str | None, _bounded(MAX_NAME_CHARS)] = Field(
        default=None, description="signature name, global ('os.system'), tensor or config key")
    blocking: bool = Field(default=True, description="True keeps the model QUARANTINED; False is a note")


def blocking(findings: list[Finding]) -> list[Finding]:
    return [finding for finding in findings if finding.blocking]
