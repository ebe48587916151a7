"""GPU type names: the seed's names are canonical; the performance data's system names are aliases.

The hardware figures for each type live in budsim's GPU catalog; this module only answers "which GPU is this name".
"""

from __future__ import annotations

CANONICAL_GPU_TYPES: dict[str, tuple[str, ...]] = {
    "nvidia-a100-40gb": ("a100_40gb", "a100-40gb", "a100_sxm_40gb"),
    "nvidia-a100-80gb": ("a100_sxm", "a100_80gb", "a100-80gb", "a100"),
    "nvidia-h100-80gb": ("h100_sxm", "h100", "h100-sxm", "nvidia-h100-sxm"),
    "nvidia-h100-pcie": ("h100_pcie", "h100-pcie"),
    "nvidia-h200": ("h200_sxm", "h200", "h200-sxm"),
    "nvidia-l40s": ("l40s",),
    "nvidia-l4": ("l4",),
    "nvidia-a10g": ("a10g",),
    "nvidia-b200": ("b200_sxm", "b200", "b200-sxm"),
}

_LOOKUP = {name: name for name in CANONICAL_GPU_TYPES} | {
    alias: name for name, aliases in CANONICAL_GPU_TYPES.items() for alias in aliases
}


def canonical_gpu_type(name: str) -> str:
    """The seed name for a GPU type or alias; ValueError naming the known types otherwise."""
    key = name.strip().lower()
    if key not in _LOOKUP:
        raise ValueError(f"unknown GPU type {name!r}; known types: {', '.join(CANONICAL_GPU_TYPES)}")
    return _LOOKUP[key]
