"""Checkpoints: one `.safetensors` file whose metadata holds the JSON config; nothing unpickled.

Metadata keys: ``meddenoise`` (format version), ``model`` (name), ``arguments`` (constructor
keyword arguments, JSON), ``config`` (the whole training config, JSON), ``metrics`` (validation
metrics, JSON), ``seed``, ``commit``, ``data``, ``noise`` (summaries).  A checkpoint alone rebuilds
its network.  The resume state (optimizer, scheduler, epoch) sits in a sibling ``.resume.pt``
written with `torch.save` of tensors and plain values and read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from meddenoise.io.base import atomic_write_with

FORMAT_VERSION = "1"
PLAIN_TEXT_KEYS = {"meddenoise", "model", "commit", "inference_precision"}


class CheckpointError(ValueError):
    """A file that is not a usable meddenoise checkpoint; the message names it."""


@dataclass
class Checkpoint:
    network: nn.Module
    model: str
    arguments: dict[str, Any]
    metadata: dict[str, Any]


def current_commit() -> str:
    """The git commit of the source tree, or "unknown" outside a checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def save_checkpoint(
    path: Path,
    network: nn.Module,
    *,
    model: str,
    arguments: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the network's weights and metadata (JSON strings) atomically."""
    metadata = {
        "meddenoise": FORMAT_VERSION,
        "model": model,
        "arguments": json.dumps(arguments),
        "commit": current_commit(),
    }
    for key, value in (extra or {}).items():
        metadata[key] = value if isinstance(value, str) else json.dumps(value)
    tensors = {
        name: value.detach().cpu().contiguous() for name, value in network.state_dict().items()
    }
    atomic_write_with(path, lambda target: save_file(tensors, str(target), metadata=metadata))


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint's metadata with JSON values decoded."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
    except (OSError, SafetensorError, ValueError) as error:
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({error})") from None
    if raw.get("meddenoise") != FORMAT_VERSION or "model" not in raw:
        raise CheckpointError(f"{path}: safetensors file without meddenoise metadata")
    decoded: dict[str, Any] = {}
    for key, value in raw.items():
        if key in PLAIN_TEXT_KEYS:  # a commit like "562e700" would otherwise decode as a number
            decoded[key] = value
            continue
        try:
            decoded[key] = json.loads(value)
        except json.JSONDecodeError:
            decoded[key] = value
    decoded["model"] = raw["model"]
    return decoded


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Rebuild the network from a checkpoint file (never unpickles)."""
    from meddenoise.models import build_model

    path = Path(path)
    metadata = read_metadata(path)
    arguments = metadata.get("arguments") or {}
    network = build_model(metadata["model"], **arguments)
    try:
        state = load_file(str(path))
        network.load_state_dict(state)
    except (OSError, SafetensorError, RuntimeError) as error:
        raise CheckpointError(f"{path}: weights do not fit {metadata['model']}: {error}") from None
    return Checkpoint(network.eval(), metadata["model"], arguments, metadata)


def resume_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name.removesuffix(".safetensors") + ".resume.pt")


def save_resume_state(path: Path, state: dict[str, Any]) -> None:
    atomic_write_with(path, lambda target: torch.save(state, target))


def load_resume_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as error:
        raise CheckpointError(f"{path}: cannot read resume state: {error}") from None
