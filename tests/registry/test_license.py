"""License detection from the request, config.json, the model card and LICENSE texts."""

from __future__ import annotations

import pytest

from registry.license import identify_license_text, license_from_model_card, normalize_license, resolve_license

# the opening lines of the real license texts
APACHE = "\n                                 Apache License\n                           Version 2.0, January 2004\n"
MIT = "MIT License\n\nCopyright (c) 2024 Someone\n\nPermission is hereby granted, free of charge, to any person"
LLAMA31 = "LLAMA 3.1 COMMUNITY LICENSE AGREEMENT\nLlama 3.1 Version Release Date: July 23, 2024\n"
LLAMA3 = "META LLAMA 3 COMMUNITY LICENSE AGREEMENT\nMeta Llama 3 Version Release Date: April 18, 2024\n"
GEMMA = "Gemma Terms of Use\n\nLast modified: February 21, 2024\n"
CC_BY_NC = "Attribution-NonCommercial 4.0 International\n\n=======================================\n"
GPL3 = ("GNU GENERAL PUBLIC LICENSE\n Version 3, 29 June 2007\n ... 13. Use with the GNU Affero General Public "
        "License. Notwithstanding any other provision")
QWEN_RESEARCH = "Qwen RESEARCH LICENSE AGREEMENT\n\nQwen RESEARCH LICENSE AGREEMENT Release Date: September 19, 2024"


@pytest.mark.parametrize("text,expected_id,category", [
    (APACHE, "Apache-2.0", "permissive"),
    (MIT, "MIT", "permissive"),
    (LLAMA31, "llama3.1", "custom"),
    (LLAMA3, "llama3", "custom"),
    (GEMMA, "gemma", "custom"),
    (CC_BY_NC, "CC-BY-NC-4.0", "noncommercial"),
    (GPL3, "GPL-3.0", "copyleft"),
    (QWEN_RESEARCH, "qwen-research", "noncommercial"),
])
def test_license_texts_are_recognised(text: str, expected_id: str, category: str):
    found = identify_license_text(text)
    assert found is not None and (found.id, found.category, found.source) == (expected_id, category, "license_file")


def test_unrecognised_text_is_none():
    assert identify_license_text("All rights reserved. Ask us first.") is None


@pytest.mark.parametrize("value,expected_id,category", [
    ("apache-2.0", "Apache-2.0", "permissive"),
    ("Apache 2.0", "Apache-2.0", "permissive"),
    ("MIT", "MIT", "permissive"),
    ("llama3.1", "llama3.1", "custom"),
    ("Llama 3.3 Community License", "llama3.3", "custom"),
    ("cc-by-nc-4.0", "CC-BY-NC-4.0", "noncommercial"),
    ("gpl-3.0", "GPL-3.0", "copyleft"),
    ("bigscience-openrail-m", "openrail", "custom"),
    ("acme-model-license", "acme-model-license", "custom"),
    ("unknown", "unknown", "unknown"),
])
def test_ids_as_people_write_them(value: str, expected_id: str, category: str):
    info = normalize_license(value)
    assert (info.id, info.category) == (expected_id, category)


def test_model_card_front_matter():
    assert license_from_model_card("---\nlicense: apache-2.0\nlanguage: [en]\n---\n# Model") == "apache-2.0"
    assert license_from_model_card("---\nlicense: other\nlicense_name: llama3\n---\n") == "llama3"
    assert license_from_model_card("# no front matter\nlicense: mit") is None


def test_priority_request_then_config_then_card_then_file():
    assert resolve_license(requested="mit", config={"license": "apache-2.0"}).source == "request"
    assert resolve_license(config={"license": "apache-2.0"}, readme_text="---\nlicense: mit\n---\n").id == "Apache-2.0"
    assert resolve_license(readme_text="---\nlicense: mit\n---\n", license_text=MIT).source == "model_card"
    from_file = resolve_license(license_text=LLAMA31)
    assert (from_file.id, from_file.source, from_file.findings) == ("llama3.1", "license_file", [])


def test_disagreement_with_the_license_file_is_a_note():
    info = resolve_license(requested="apache-2.0", license_text=LLAMA31)
    assert info.id == "Apache-2.0"
    assert [(f.code, f.subject, f.blocking) for f in info.findings] == [("license_mismatch", "llama3.1", False)]


def test_no_license_anywhere_is_unknown_with_a_note():
    info = resolve_license()
    assert (info.id, info.category, info.source) == ("unknown", "unknown", "none")
    assert [f.code for f in info.findings] == ["license_unknown"] and not info.findings[0].blocking
