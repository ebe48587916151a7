"""A model's license: from the registration request, config.json, the model card's front matter or a LICENSE file.

Every source is reduced to an SPDX-style id (Apache-2.0, MIT, CC-BY-NC-4.0, or a Hugging Face id such as llama3.1
or gemma for model-specific licenses) and a category the browse filter uses:

- permissive: use, modify and ship, keeping notices (Apache-2.0, MIT, BSD, CC-BY, CC0);
- copyleft: derivatives must keep the license (GPL family, CC-BY-SA);
- noncommercial: research or non-commercial use only (CC-BY-NC*, Qwen research, Mistral research);
- custom: a vendor's own terms with use restrictions or thresholds (Llama community licenses, Gemma, OpenRAIL,
  Qwen, DeepSeek model license) - read before commercial use;
- unknown: nothing recognisable was found.

Priority: the request (the registrant's statement), then config.json's `license`, then the model card, then the
LICENSE file. When the LICENSE file says something else than the chosen source, a non-blocking finding says so.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

from registry.findings import Finding

LicenseCategory = Literal["permissive", "copyleft", "noncommercial", "custom", "unknown"]
LicenseSource = Literal["request", "config", "model_card", "license_file", "none"]
MAX_LICENSE_ID_CHARS = 200  # as ModelRegistration.license


@dataclass(frozen=True)
class _Known:
    id: str
    name: str
    category: LicenseCategory
    aliases: tuple[str, ...] = ()
    text_pattern: str | None = None  # regex identifying the license text (case-insensitive)


_KNOWN: tuple[_Known, ...] = (
    _Known("Apache-2.0", "Apache License 2.0", "permissive", ("apache-2.0", "apache 2.0", "apache2", "apache-2",
           "apache license 2.0", "apache license, version 2.0", "apache"), r"apache license\s+version 2\.0"),
    _Known("MIT", "MIT License", "permissive", ("mit", "mit license", "expat"),
           r"permission is hereby granted, free of charge"),
    _Known("BSD-3-Clause", "BSD 3-Clause License", "permissive", ("bsd-3-clause", "bsd 3-clause", "bsd", "new bsd"),
           r"redistribution and use in source and binary forms.*neither the name"),
    _Known("BSD-2-Clause", "BSD 2-Clause License", "permissive", ("bsd-2-clause", "bsd 2-clause", "simplified bsd"),
           r"redistribution and use in source and binary forms"),
    _Known("CC0-1.0", "Creative Commons Zero 1.0", "permissive", ("cc0-1.0", "cc0"), r"cc0 1\.0 universal"),
    _Known("CC-BY-4.0", "Creative Commons Attribution 4.0", "permissive", ("cc-by-4.0", "cc by 4.0"),
           r"attribution 4\.0 international(?!.*noncommercial)(?!.*sharealike)"),
    _Known("CC-BY-SA-4.0", "Creative Commons Attribution-ShareAlike 4.0", "copyleft", ("cc-by-sa-4.0",),
           r"attribution-sharealike 4\.0"),
    _Known("CC-BY-NC-4.0", "Creative Commons Attribution-NonCommercial 4.0", "noncommercial",
           ("cc-by-nc-4.0", "cc by-nc 4.0", "cc-by-nc"), r"attribution-noncommercial 4\.0 international"),
    _Known("CC-BY-NC-SA-4.0", "Creative Commons Attribution-NonCommercial-ShareAlike 4.0", "noncommercial",
           ("cc-by-nc-sa-4.0",), r"attribution-noncommercial-sharealike 4\.0"),
    _Known("CC-BY-NC-ND-4.0", "Creative Commons Attribution-NonCommercial-NoDerivatives 4.0", "noncommercial",
           ("cc-by-nc-nd-4.0",), r"attribution-noncommercial-noderivatives 4\.0"),
    _Known("AGPL-3.0", "GNU Affero General Public License v3.0", "copyleft", ("agpl-3.0", "agpl"),
           r"gnu affero general public license"),
    _Known("LGPL-3.0", "GNU Lesser General Public License v3.0", "copyleft", ("lgpl-3.0", "lgpl"),
           r"gnu lesser general public license"),
    _Known("GPL-3.0", "GNU General Public License v3.0", "copyleft", ("gpl-3.0", "gpl-3", "gplv3", "gpl"),
           r"gnu general public license\s+version 3"),
    _Known("GPL-2.0", "GNU General Public License v2.0", "copyleft", ("gpl-2.0", "gplv2"),
           r"gnu general public license\s+version 2"),
    _Known("llama2", "Llama 2 Community License", "custom", ("llama2", "llama-2", "llama 2"),
           r"llama 2 community license"),
    _Known("llama3", "Meta Llama 3 Community License", "custom", ("llama3", "llama-3", "llama 3"),
           r"meta llama 3 community license"),
    _Known("llama3.1", "Llama 3.1 Community License", "custom", ("llama3.1", "llama-3.1", "llama 3.1"),
           r"llama 3\.1 community license"),
    _Known("llama3.2", "Llama 3.2 Community License", "custom", ("llama3.2", "llama-3.2", "llama 3.2"),
           r"llama 3\.2 community license"),
    _Known("llama3.3", "Llama 3.3 Community License", "custom", ("llama3.3", "llama-3.3", "llama 3.3"),
           r"llama 3\.3 community license"),
    _Known("llama4", "Llama 4 Community License", "custom", ("llama4", "llama-4", "llama 4"),
           r"llama 4 community license"),
    _Known("gemma", "Gemma Terms of Use", "custom", ("gemma", "gemma terms of use"), r"gemma terms of use"),
    _Known("qwen-research", "Qwen Research License", "noncommercial", ("qwen-research",),
           r"qwen research license agreement"),
    _Known("qwen", "Tongyi Qianwen License", "custom", ("qwen", "tongyi-qianwen"),
           r"tongyi qianwen license agreement|qwen license agreement"),
    _Known("deepseek", "DeepSeek License Agreement", "custom", ("deepseek", "deepseek-license"),
           r"deepseek license agreement"),
    _Known("mistral-research", "Mistral AI Research License", "noncommercial", ("mrl", "mistral-research"),
           r"mistral ai research license"),
    _Known("openrail", "OpenRAIL", "custom", ("openrail", "openrail++", "bigscience-openrail-m",
           "creativeml-openrail-m", "bigcode-openrail-m", "bigscience-bloom-rail-1.0"), r"responsible ai license"),
)
_BY_ALIAS = {alias: known for known in _KNOWN for alias in (known.id.lower(), *known.aliases)}


class LicenseInfo(BaseModel):
    id: str = Field(description="SPDX-style id, e.g. Apache-2.0, MIT, llama3.1, gemma, CC-BY-NC-4.0, or 'unknown'")
    name: str
    category: LicenseCategory
    source: LicenseSource
    findings: list[Finding] = Field(default_factory=list)


def normalize_license(value: str, source: LicenseSource = "request") -> LicenseInfo:
    """A license id or name as people write it ('apache-2.0', 'Apache 2.0', 'llama3.1', 'cc-by-nc-4.0'). A value no
    id looks like (over MAX_LICENSE_ID_CHARS, or holding control characters) is unknown: it is stored as the id."""
    if len(value) > MAX_LICENSE_ID_CHARS or any(unicodedata.category(char) == "Cc" for char in value):
        return LicenseInfo(id="unknown", name="unknown", category="unknown", source=source)
    key = " ".join(value.strip().lower().replace("_", "-").split())
    known = _BY_ALIAS.get(key)
    if known is None and key.startswith("llama") and "community" in key:
        version = re.search(r"llama[ -]?(\d(?:\.\d)?)", key)
        known = _BY_ALIAS.get(f"llama{version.group(1)}") if version else None
    if known is not None:
        return LicenseInfo(id=known.id, name=known.name, category=known.category, source=source)
    if key in ("", "unknown", "none", "unlicensed"):
        return LicenseInfo(id="unknown", name="unknown", category="unknown", source=source)
    # a vendor-specific id (e.g. Hugging Face 'other' + license_name): keep it, treat as custom terms
    return LicenseInfo(id=value.strip(), name=value.strip(), category="custom", source=source)


def identify_license_text(text: str) -> LicenseInfo | None:
    """Recognise a LICENSE file's text; None when it matches nothing known.

    The license whose identifying phrase appears first wins (ties: the more specific entry, listed first), since
    texts name other licenses further down (GPL-3.0 mentions the Affero GPL, LGPL cites the GPL).
    """
    head = " ".join(text[:20_000].lower().split())  # the identifying sentences sit at the top
    best: tuple[int, int, _Known] | None = None
    for order, known in enumerate(_KNOWN):
        match = re.search(known.text_pattern, head) if known.text_pattern else None
        if match and (best is None or (match.start(), order) < best[:2]):
            best = (match.start(), order, known)
    if best is None:
        return None
    known = best[2]
    return LicenseInfo(id=known.id, name=known.name, category=known.category, source="license_file")


def license_from_model_card(readme_text: str) -> str | None:
    """The `license:` (or `license_name:` when license is 'other') of a README.md's YAML front matter."""
    match = re.match(r"\A---\s*\n(.*?)\n---\s*(\n|\Z)", readme_text, re.DOTALL)
    if not match:
        return None
    try:
        front = yaml.safe_load(match.group(1))
    except (yaml.YAMLError, RecursionError):  # RecursionError: front matter nested too deep to parse
        return None
    if not isinstance(front, dict):
        return None
    value = front.get("license")
    if value == "other" and isinstance(front.get("license_name"), str):
        value = front["license_name"]
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) else None


def resolve_license(
    *,
    requested: str | None = None,
    config: dict[str, Any] | None = None,
    readme_text: str | None = None,
    license_text: str | None = None,
    license_file: str = "LICENSE",
) -> LicenseInfo:
    """Pick the license by priority (request, config.json, model card, LICENSE file) and note disagreements."""
    from_file = identify_license_text(license_text) if license_text else None
    candidates: list[tuple[str | None, LicenseSource]] = [
        (requested, "request"),
        (config.get("license") if isinstance(config, dict) and isinstance(config.get("license"), str) else None,
         "config"),
        (license_from_model_card(readme_text) if readme_text else None, "model_card"),
    ]
    chosen: LicenseInfo | None = None
    for value, source in candidates:
        if value and value.strip():
            chosen = normalize_license(value, source)
            break
    if chosen is None:
        chosen = from_file or LicenseInfo(id="unknown", name="unknown", category="unknown", source="none")
    if chosen.category == "unknown":
        chosen.findings.append(Finding(check="license", code="license_unknown", blocking=False, file=license_file,
                                       message="no license found in the request, config.json, README.md or LICENSE"))
    elif license_text and chosen.source != "license_file":
        if from_file is None:
            chosen.findings.append(Finding(
                check="license", code="license_file_unrecognised", blocking=False, file=license_file,
                message=f"{license_file} does not match a known license text; using {chosen.id} from the {chosen.source}",
            ))
        elif from_file.id != chosen.id:
            chosen.findings.append(Finding(
                check="license", code="license_mismatch", blocking=False, file=license_file, subject=from_file.id,
                message=f"the {chosen.source} says {chosen.id} but {license_file} reads as {from_file.id}",
            ))
    return chosen
