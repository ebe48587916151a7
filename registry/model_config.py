"""The registry's checks of a model's config.json, on top of the shared facts parser (core.model_facts).

`registration_facts` is what RegisterModel stores and the optimizer later sizes the model from; the checks compare
what the registrant declared (parameter count, context length) with what the files say, and the layers config.json
declares with the layers the safetensors tensor names hold.
"""

from __future__ import annotations

import unicodedata
from typing import Any

from core.model_facts import (
    ConfigError,
    ModelArchitecture,
    architecture_from_config,
    estimate_parameter_count,
    supported_context_length,
    weights_are_packed,
)
from registry.findings import Finding

DEFAULT_PARAMETER_TOLERANCE = 0.10
# Layers present may differ a little from num_hidden_layers (DeepSeek-V3 and GLM-4.5 ship one multi-token-prediction
# layer beyond it); more than this is a config that does not describe its weights.
LAYER_TOLERANCE = 0.10
MIN_LAYER_DIFFERENCE = 2


def registration_facts(
    config: dict[str, Any],
    *,
    weights_parameter_count: int | None,
    declared_parameter_count: int | None = None,
    declared_context_length: int | None = None,
    weights_layers: dict[str, list[int]] | None = None,
) -> tuple[ModelArchitecture | None, list[Finding]]:
    """The facts to store for a model (None when config.json cannot describe it) and every config finding.
    `weights_layers` maps tensor-name stems to the layer indices the safetensors files hold (None: no safetensors)."""
    findings: list[Finding] = []
    facts = None
    try:
        facts = architecture_from_config(config, weights_parameter_count)
        for key, text in [("model_type", facts.model_type), *(("architectures", a) for a in facts.architectures)]:
            if any(unicodedata.category(char) == "Cc" for char in text):  # stored as text, shown in listings
                raise ConfigError(key, f"config.json '{key}' {text[:60]!r} holds control characters")
    except ConfigError as error:
        facts = None
        findings.append(Finding(check="config", code="config_incomplete", file="config.json", subject=error.key,
                                message=str(error)))
    findings += check_declared_facts(
        declared_parameter_count=declared_parameter_count,
        declared_context_length=declared_context_length,
        config=config,
        weights_parameter_count=weights_parameter_count,
    )
    if facts is not None and weights_layers:
        findings += check_layer_count(facts.num_layers, weights_layers)
    return facts, findings


def check_layer_count(declared_layers: int, weights_layers: dict[str, list[int]],
                      file: str = "config.json") -> list[Finding]:
    """A config whose num_hidden_layers no stem of layer names comes close to blocks: deployed, it would be sized
    (and loaded) as a model it is not. Several stems are normal (language model, vision tower, MTP head): one
    matching is enough. No numbered layer names at all (unusual naming) is no finding."""
    counts = {stem: len(indices) for stem, indices in weights_layers.items() if indices}
    if not counts:
        return []
    allowed = max(MIN_LAYER_DIFFERENCE, round(declared_layers * LAYER_TOLERANCE))
    if any(abs(present - declared_layers) <= allowed for present in counts.values()):
        return []
    stem = max(counts, key=lambda name: (counts[name], name))
    indices = weights_layers[stem]
    return [Finding(
        check="config", code="layer_count_mismatch", file=file, subject="num_hidden_layers",
        message=f"config.json declares {declared_layers} layers but the safetensors weights hold {counts[stem]} "
                f"({stem}.{indices[0]} to {stem}.{indices[-1]})",
    )]


def check_declared_facts(
    *,
    declared_parameter_count: int | None,
    declared_context_length: int | None,
    config: dict[str, Any],
    weights_parameter_count: int | None,
    tolerance: float = DEFAULT_PARAMETER_TOLERANCE,
    file: str = "config.json",
) -> list[Finding]:
    """Compare what the registrant declared with what the files say.

    - declared parameter_count vs the weights' real count (safetensors), or the config estimate when the weights
      are pickle-only or packed (quantized): a relative difference above `tolerance` blocks;
    - config estimate vs the weights' count: a difference above `tolerance` is a note (the config may describe only
      the language model of a multimodal checkpoint), not a block;
    - declared context_length above what the model supports (max_position_embeddings, or its rope scaling) blocks;
      a shorter declared context is a note.
    """
    findings: list[Finding] = []
    try:
        estimate: int | None = estimate_parameter_count(config)
        packed = weights_are_packed(config)
    except ConfigError:
        estimate, packed = None, False  # registration_facts reports the bad key; compare with the weights alone
    use_weights = bool(weights_parameter_count) and not (estimate is not None and packed)
    actual = weights_parameter_count if use_weights else estimate
    source = "the weights" if use_weights else "config.json (estimated)"

    if (declared_parameter_count is not None and actual
            and _relative_difference(declared_parameter_count, actual) > tolerance):
        findings.append(Finding(
            check="config", code="parameter_count_mismatch", file=file, subject="parameter_count",
            message=f"declared parameter_count {declared_parameter_count:,} differs from {actual:,} in {source} "
                    f"by {_relative_difference(declared_parameter_count, actual):.0%} (tolerance {tolerance:.0%})",
        ))
    if use_weights and estimate is not None and actual and _relative_difference(estimate, actual) > tolerance:
        findings.append(Finding(
            check="config", code="config_disagrees_with_weights", file=file, blocking=False,
            subject="num_hidden_layers/hidden_size",
            message=f"config.json describes about {estimate:,} parameters but the weights hold {actual:,}",
        ))
    try:
        supported = supported_context_length(config)
    except ConfigError:
        return findings
    if declared_context_length is not None:
        if declared_context_length > supported:
            findings.append(Finding(
                check="config", code="context_length_exceeds_model", file=file, subject="context_length",
                message=f"declared context_length {declared_context_length:,} exceeds the {supported:,} tokens "
                        "config.json supports",
            ))
        elif declared_context_length < supported:
            findings.append(Finding(
                check="config", code="context_length_below_model", file=file, subject="context_length",
                blocking=False,
                message=f"declared context_length {declared_context_length:,} is below the model's {supported:,}",
            ))
    return findings


def _relative_difference(value: int, reference: int) -> float:
    return abs(value - reference) / max(reference, 1)
