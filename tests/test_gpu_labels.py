"""Kubernetes nodes labelled only by NVIDIA's GPU feature discovery (`nvidia.com/gpu.product`) count as catalog GPUs."""

from __future__ import annotations

import pytest
from kubernetes import client as k8s

from clusters.kubernetes import count_gpus, node_gpu_type
from core.gpu_types import CANONICAL_GPU_TYPES, GPU_PRODUCT_NAMES, gpu_product_label, gpu_type_from_product

PRODUCT = "nvidia.com/gpu.product"


@pytest.mark.parametrize("product, gpu_type", [
    ("NVIDIA-H100-80GB-HBM3", "nvidia-h100-80gb"),
    ("NVIDIA-H100-PCIe", "nvidia-h100-pcie"),
    ("NVIDIA-A100-SXM4-80GB", "nvidia-a100-80gb"),
    ("NVIDIA-A100-80GB-PCIe", "nvidia-a100-80gb"),
    ("NVIDIA-A100-SXM4-40GB", "nvidia-a100-40gb"),
    ("NVIDIA-H200", "nvidia-h200"),
    ("NVIDIA-L40S", "nvidia-l40s"),
    ("NVIDIA-L4", "nvidia-l4"),
    ("NVIDIA-A10G", "nvidia-a10g"),
    ("NVIDIA-B200", "nvidia-b200"),
    # Older drivers: a "Tesla-" prefix, or none at all, and "PCIE" in capitals.
    ("Tesla-A100-SXM4-40GB", "nvidia-a100-40gb"),
    ("Tesla-H100-PCIe", "nvidia-h100-pcie"),
    ("A100-PCIE-40GB", "nvidia-a100-40gb"),
    ("A100-SXM-80GB", "nvidia-a100-80gb"),
])
def test_feature_discovery_product_names_map_to_catalog_types(product, gpu_type):
    assert node_gpu_type({PRODUCT: product}) == gpu_type


@pytest.mark.parametrize("product", [
    "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb",  # a MIG slice is not a whole A100
    "NVIDIA-H100-80GB-HBM3-SHARED",      # nor is a time-sliced share of an H100
    "Tesla-T4",                          # no catalog figures for it
    "NVIDIA-H100-NVL",
])
def test_slices_shares_and_unknown_products_are_not_counted(product):
    assert node_gpu_type({PRODUCT: product}) is None


def test_our_label_wins_over_the_product_label():
    assert node_gpu_type({"bud.ai/gpu-type": "h200", PRODUCT: "NVIDIA-H100-80GB-HBM3"}) == "nvidia-h200"
    # An unknown value in ours falls through to the product label.
    assert node_gpu_type({"bud.ai/gpu-type": "mystery", PRODUCT: "NVIDIA-L40S"}) == "nvidia-l40s"


def test_a_cluster_labelled_by_feature_discovery_alone_has_its_gpus_counted():
    def node(name: str, product: str | None, gpus: str) -> k8s.V1Node:
        labels = {"kubernetes.io/hostname": name} | ({PRODUCT: product} if product else {})
        return k8s.V1Node(metadata=k8s.V1ObjectMeta(name=name, labels=labels),
                          status=k8s.V1NodeStatus(allocatable={"nvidia.com/gpu": gpus, "cpu": "96"}))

    nodes = [node("a", "NVIDIA-H100-80GB-HBM3", "8"), node("b", "NVIDIA-H100-80GB-HBM3", "8"),
             node("c", "NVIDIA-L40S", "4"), node("d", "NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", "7"), node("e", None, "0")]
    observed, node_count = count_gpus(nodes)
    assert dict(observed) == {"nvidia-h100-80gb": 16, "nvidia-l40s": 4}
    assert node_count == 5


def test_every_catalog_type_has_a_product_name_that_maps_back():
    assert set(GPU_PRODUCT_NAMES) == set(CANONICAL_GPU_TYPES)
    for gpu_type in CANONICAL_GPU_TYPES:
        assert gpu_type_from_product(gpu_product_label(gpu_type)) == gpu_type
