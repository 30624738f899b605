"""Checkpoints and resume states: safetensors files with JSON metadata; nothing is unpickled.

Checkpoint metadata keys: ``meddenoise`` (format version), ``model`` (name), ``arguments``
(constructor keyword arguments, JSON), ``config`` (the whole training config, JSON), ``metrics``
(validation metrics, JSON), ``seed``, ``commit`` and ``dirty`` (the source tree when the run
started), ``sessions`` (commit and tree state of each start and resume), ``lineage`` (the
``init`` chain's data lists, recorded when the run started), ``data``, ``noise`` (summaries).
A checkpoint alone rebuilds its network.

The resume state (optimizer, scheduler, epoch, the random generators' states) sits in a sibling
``.resume.safetensors``: every tensor stored by safetensors, the structure around them (nesting,
numbers, tuples, numpy arrays) as JSON in its metadata.  Reading it runs no unpickler, restricted
or not.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from meddenoise.io.base import atomic_write_with

FORMAT_VERSION = "1"
RESUME_FORMAT_VERSION = "2"  # 1 was a torch.save pickle (.resume.pt)
PLAIN_TEXT_KEYS = {"meddenoise", "model", "commit", "inference_precision"}


class CheckpointError(ValueError):
    """A file that is not a usable meddenoise checkpoint; the message names it."""


@dataclass
class Checkpoint:
    network: nn.Module
    model: str
    arguments: dict[str, Any]
    metadata: dict[str, Any]

    @property
    def level_map(self) -> str:
        """How the network is told noise levels: "signal-dependent" when it trained on per-pixel
        noise maps, "sub-images", "flat-windows", "local-flat-windows" or "ct-physics" when it
        was adapted to correlated noise (`meddenoise.adapt`), else "scalar"."""
        config = self.metadata.get("config")
        noise = config.get("noise") if isinstance(config, dict) else None
        level_map = noise.get("level_map", "scalar") if isinstance(noise, dict) else "scalar"
        known = (
            "signal-dependent",
            "sub-images",
            "flat-windows",
            "local-flat-windows",
            "ct-physics",
        )
        return level_map if level_map in known else "scalar"

    @property
    def pixel_spacing_mm(self) -> float | None:
        """The pixel width (mm) a "ct-physics" network assumes: its adaptation series', or None."""
        config = self.metadata.get("config")
        noise = config.get("noise") if isinstance(config, dict) else None
        value = noise.get("pixel_spacing_mm") if isinstance(noise, dict) else None
        if isinstance(value, int | float) and math.isfinite(value) and value > 0:
            return float(value)
        return None


def _git(*arguments: str) -> str | None:
    """The output of a git command run in the package's folder, or None outside a checkout."""
    try:
        result = subprocess.run(
            ["git", *arguments],
            capture_output=True,
            text=True,
            check=False,
            cwd=Path(__file__).parent,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 else None


def current_commit() -> str:
    """The git commit of the source tree, or "unknown" outside a checkout."""
    output = _git("rev-parse", "--short", "HEAD")
    return (output or "").strip() or "unknown"


def source_state() -> tuple[str, bool | None]:
    """(commit, dirty) of the source tree now: dirty when tracked files differ from the commit
    or untracked files that git does not ignore exist (either could change what runs); None
    outside a checkout."""
    commit = current_commit()
    status = _git("status", "--porcelain")
    return commit, None if status is None or commit == "unknown" else bool(status.strip())


def save_checkpoint(
    path: Path,
    network: nn.Module,
    *,
    model: str,
    arguments: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> None:
    """Write the network's weights and metadata (JSON strings) atomically.

    ``commit`` is the source tree's commit now unless `extra` gives one: training passes the
    commit recorded when the run started, which is what the weights come from.
    """
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
    """The resume state beside `checkpoint`: last.safetensors -> last.resume.safetensors."""
    return checkpoint.with_name(
        checkpoint.name.removesuffix(".safetensors") + ".resume.safetensors"
    )


def _encode(value: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    """`value` as JSON, its tensors moved into `tensors` under their dotted place in it.

    What JSON cannot say is tagged by a one-key object: ``{"$tensor": name}``, ``{"$tuple": [..]}``
    (Python's random state must come back as tuples), ``{"$ndarray": {..}}`` (numpy's generator
    state) and ``{"$dict": [[key, value], ..]}`` for dicts with keys other than strings (the
    optimizer's per-parameter state is keyed by integers).
    """
    if isinstance(value, torch.Tensor):
        tensors[name] = value.detach().cpu().contiguous().clone()  # safetensors: no shared memory
        return {"$tensor": name}
    if isinstance(value, np.ndarray):
        return {
            "$ndarray": {
                "dtype": str(value.dtype),
                "shape": list(value.shape),
                "values": value.ravel().tolist(),
            }
        }
    if isinstance(value, tuple):
        return {
            "$tuple": [
                _encode(item, f"{name}.{index}", tensors) for index, item in enumerate(value)
            ]
        }
    if isinstance(value, list):
        return [_encode(item, f"{name}.{index}", tensors) for index, item in enumerate(value)]
    if isinstance(value, dict):
        if all(isinstance(key, str) and not key.startswith("$") for key in value):
            return {key: _encode(item, f"{name}.{key}", tensors) for key, item in value.items()}
        return {
            "$dict": [
                [_encode(key, f"{name}.key", tensors), _encode(item, f"{name}.{key}", tensors)]
                for key, item in value.items()
            ]
        }
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"resume state: cannot store {type(value).__name__} at {name or 'top'}")


def _decode(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """The inverse of `_encode`."""
    if isinstance(value, list):
        return [_decode(item, tensors) for item in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1:
        ((tag, content),) = value.items()
        if tag == "$tensor":
            return tensors[content]
        if tag == "$tuple":
            return tuple(_decode(item, tensors) for item in content)
        if tag == "$ndarray":
            flat = np.array(content["values"], dtype=content["dtype"])
            return flat.reshape(content["shape"])
        if tag == "$dict":
            return {_decode(key, tensors): _decode(item, tensors) for key, item in content}
    return {key: _decode(item, tensors) for key, item in value.items()}


def seed_global_generators(seed: int) -> None:
    """Seed torch's, numpy's and Python's global generators (what `fit` does once, at start)."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)  # numpy's legacy seeding takes 0 <= seed < 2**32 only
    random.seed(seed)


def global_random_states() -> dict[str, Any]:
    """The states of the global generators, for the resume state: torch's (the GAN generator's
    dropout draws from it), numpy's and Python's (nothing in training draws from them, but a
    loss, model or library may)."""
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(legacy=False),
        "python": random.getstate(),
    }


def restore_global_random_states(states: dict[str, Any]) -> None:
    """Put back what `global_random_states` returned."""
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])


def save_resume_state(path: Path, state: dict[str, Any]) -> None:
    """Write `state` (nested dicts, lists, tuples, numbers, strings, tensors, numpy arrays)
    atomically as safetensors plus JSON metadata."""
    tensors: dict[str, torch.Tensor] = {}
    structure = _encode(state, "state", tensors)
    metadata = {"meddenoise_resume": RESUME_FORMAT_VERSION, "state": json.dumps(structure)}
    atomic_write_with(path, lambda target: save_file(tensors, str(target), metadata=metadata))


def load_resume_state(path: Path) -> dict[str, Any]:
    """The state `save_resume_state` wrote; `CheckpointError` naming the file otherwise."""
    if not path.is_file():
        older = path.with_name(path.name.removesuffix(".safetensors") + ".pt")
        if older.is_file():
            raise CheckpointError(
                f"{older}: a resume state from an older meddenoise (a pickle, no longer read); "
                "resume it with the version that wrote it, or start the run again"
            )
        raise CheckpointError(f"{path}: no resume state (was the run started with this output?)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        if metadata.get("meddenoise_resume") != RESUME_FORMAT_VERSION:
            raise CheckpointError(f"{path}: not a meddenoise resume state")
        structure = json.loads(metadata["state"])
        tensors = load_file(str(path))
        state = _decode(structure, tensors)
    except (OSError, SafetensorError, ValueError, KeyError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"{path}: cannot read resume state: {error}") from None
    return state
