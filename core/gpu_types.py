"""GPU type names: the catalog's names (nvidia-h100-80gb, ...) are canonical; the performance data's system names
are aliases, and the product names NVIDIA's GPU feature discovery puts on Kubernetes nodes map onto them too.

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


# Every spelling an API field accepts (as its schema's enum), canonical names first.
GPU_TYPE_NAMES: tuple[str, ...] = tuple(_LOOKUP)


def canonical_gpu_type(name: str) -> str:
    """The canonical name for a GPU type or alias (any case); ValueError naming the known types otherwise."""
    key = name.strip().lower()
    if key not in _LOOKUP:
        raise ValueError(f"unknown GPU type {name!r}; known types: {', '.join(CANONICAL_GPU_TYPES)}")
    return _LOOKUP[key]


# NVIDIA GPU feature discovery labels a node `nvidia.com/gpu.product=<NVML product name, spaces as dashes>`, with a
# vendor prefix ("NVIDIA-"; "Tesla-" on older drivers, none on some). Keys here are the names without that prefix;
# the first name of each type is what current drivers report for its usual form (the dev cluster's fake nodes carry
# it). Time-sliced ("-SHARED") and MIG ("-MIG-1g.10gb") products are not whole GPUs and stay unknown on purpose.
GPU_PRODUCT_NAMES: dict[str, tuple[str, ...]] = {
    "nvidia-h100-80gb": ("H100-80GB-HBM3", "H100-SXM5-80GB"),
    "nvidia-h100-pcie": ("H100-PCIe",),
    "nvidia-h200": ("H200",),
    "nvidia-a100-80gb": ("A100-SXM4-80GB", "A100-SXM-80GB", "A100-80GB-PCIe"),
    "nvidia-a100-40gb": ("A100-SXM4-40GB", "A100-PCIE-40GB"),
    "nvidia-l40s": ("L40S",),
    "nvidia-l4": ("L4",),
    "nvidia-a10g": ("A10G",),
    "nvidia-b200": ("B200",),
}
_PRODUCT_VENDOR_PREFIXES = ("nvidia-", "tesla-")
_PRODUCT_LOOKUP = {product.lower(): name for name, products in GPU_PRODUCT_NAMES.items() for product in products}


def gpu_type_from_product(label: str) -> str | None:
    """The canonical type for a `nvidia.com/gpu.product` value, or None for a product this table does not know."""
    key = label.strip().lower()
    for prefix in _PRODUCT_VENDOR_PREFIXES:
        if key.startswith(prefix):
            key = key.removeprefix(prefix)
            break
    return _PRODUCT_LOOKUP.get(key)


def gpu_product_label(gpu_type: str) -> str:
    """The `nvidia.com/gpu.product` value a node with this canonical GPU type usually carries."""
    return "NVIDIA-" + GPU_PRODUCT_NAMES[canonical_gpu_type(gpu_type)][0]
