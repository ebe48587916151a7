"""The checks a real runtime fails on while loading a model, in three categories: resources, compatibility and
configuration.

Only file names and sizes are looked at: nothing from the model is ever deserialized.
"""

from __future__ import annotations

import json
from pathlib import Path

# vLLM loads safetensors, PyTorch .bin/.pt checkpoints and GGUF files.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")


class ModelLoadError(RuntimeError):
    """A load failure; `reason` is one of path_not_accessible, format_not_supported, insufficient_gpu_memory,
    load_error."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"model load failed [{reason}]: {message}")
        self.reason = reason
        self.message = message


def looks_like_path(model: str) -> bool:
    """`vllm serve` takes a local path or a hub id (`org/name`); paths start with /, ./, ../ or ~."""
    return model.startswith(("/", "./", "../", "~"))


def weight_files(model_dir: Path) -> list[Path]:
    return sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def check_model_source(model: str) -> Path | None:
    """The model directory (or GGUF file) when `model` is a path, None for a hub name; raises ModelLoadError."""
    path = Path(model).expanduser()
    if not looks_like_path(model) and not path.exists():
        return None
    if not path.exists():
        raise ModelLoadError("path_not_accessible", f"{path} does not exist")
    if path.is_file():
        if path.suffix == ".gguf":
            return path
        raise ModelLoadError("format_not_supported", f"{path} is a file but not a GGUF model")
    try:
        has_config = (path / "config.json").is_file()
        weights = weight_files(path)
    except PermissionError as exc:
        raise ModelLoadError("path_not_accessible", f"{path} cannot be read: {exc}") from exc
    if not has_config:
        raise ModelLoadError("format_not_supported", f"no config.json in {path}: not a Hugging Face model folder")
    if not weights:
        raise ModelLoadError(
            "format_not_supported",
            f"no weights in a supported format ({', '.join('*' + s for s in WEIGHT_SUFFIXES)}) under {path}",
        )
    return path


def max_position_embeddings(model_dir: Path | None) -> int | None:
    """The context length the model's config.json declares, used when --max-model-len is not given."""
    if model_dir is None or not model_dir.is_dir():
        return None
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return None
    value = config.get("max_position_embeddings") if isinstance(config, dict) else None
    return value if isinstance(value, int) and value > 0 else None


def check_weights_fit(model_dir: Path | None, gpu_memory_gb: float, utilization: float, gpus: int) -> None:
    """Weights split over `gpus` must fit the usable memory of one GPU, or loading fails like a CUDA OOM."""
    if model_dir is None:
        return
    weights = [model_dir] if model_dir.is_file() else weight_files(model_dir)
    per_gpu_gb = sum(p.stat().st_size for p in weights) / gpus / 1e9
    usable_gb = gpu_memory_gb * utilization
    if per_gpu_gb > usable_gb:
        raise ModelLoadError(
            "insufficient_gpu_memory",
            f"weights need {per_gpu_gb:.2f} GB per GPU over {gpus} GPU(s); only {usable_gb:.2f} GB usable "
            f"({gpu_memory_gb:g} GB x gpu_memory_utilization {utilization:g}); CUDA out of memory",
        )
