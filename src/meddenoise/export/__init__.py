"""Exports of a meddenoise network for runtimes other than meddenoise: ONNX, torch.export, MONAI.

``export_model(model, format, output)`` writes one of

- ``onnx``: an ONNX graph with dynamic batch, height and width (`meddenoise.export.onnx_graph`);
  its opset and the facts a caller needs (channels, noise-map input, minimum side) are in the
  file's metadata and in a JSON sidecar ``OUTPUT.json``.  The ``onnxruntime`` inference backend
  (``meddenoise denoise --backend onnxruntime``) runs the same graph inside meddenoise's tiling;
- ``torch-export``: a `torch.export.ExportedProgram` saved with `torch.export.save`
  (`meddenoise.export.torch_program`), for C++ (AOTInductor) and Triton users.  TorchScript is
  deprecated and not written; loading a ``.pt2`` file runs code stored in it, so load only files
  you made or trust;
- ``monai-bundle``: a folder following the MONAI bundle specification
  (`meddenoise.export.monai_bundle`) whose ``scripts/`` carry the noise-level estimate and the
  tiling a conditioned network needs, in plain numpy and torch.

Networks that take a noise-level map (``conditioned``, such as the shipped ``cond_unet`` models)
take it as a second graph input: (B, 1, H, W), the noise standard deviation in the image's
[0, 1] units per pixel (docs/scale.md, "Export", says how to make it).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: `meddenoise --help` stays fast
    from torch import nn

__all__ = ["EXPORT_FORMATS", "ExportSource", "export_model", "load_source"]

# The formats `export_model` writes and the file or folder name each is usually given.
EXPORT_FORMATS = {"onnx": ".onnx", "torch-export": ".pt2", "monai-bundle": ""}
EXPORT_FORMAT_VERSION = "1"


@dataclass
class ExportSource:
    """A network to export and what the export records about it."""

    network: nn.Module
    name: str  # the shipped model's name, or the checkpoint's file name
    model: str  # the architecture (`meddenoise.models.MODELS` key)
    arguments: dict[str, Any]
    level_map: str  # inference.LEVEL_MAPS: how the noise map is made
    weights: Path
    weights_sha256: str
    # "ct-physics" networks: the pixel width (mm) their level rule assumes.
    pixel_spacing_mm: float | None = None

    @property
    def conditioned(self) -> bool:
        """Whether the network takes a noise-level map as its second input."""
        return bool(getattr(self.network, "conditioned", False))

    @property
    def channels(self) -> int:
        """Image channels the network takes (1 grey, 3 colour)."""
        from torch import nn

        declared = getattr(self.network, "channels", None)
        if isinstance(declared, int):
            return declared
        first = next(module for module in self.network.modules() if isinstance(module, nn.Conv2d))
        return first.in_channels - (1 if self.conditioned else 0)

    @property
    def min_side(self) -> int:
        """The smallest height and width an exported graph takes: its padding is reflect
        padding to a multiple of ``size_multiple``, which needs sides of at least that."""
        return int(getattr(self.network, "size_multiple", 1))

    def metadata(self, export_format: str) -> dict[str, Any]:
        """What every export records beside the graph (file metadata, sidecar, bundle)."""
        import torch

        from meddenoise import __version__

        inputs = {"image": "(B, C, H, W) float32, intensities mapped to [0, 1]"}
        if self.conditioned:
            inputs["noise_map"] = (
                "(B, 1, H, W) float32, the noise standard deviation in the units of image"
            )
        return {
            "meddenoise_export": EXPORT_FORMAT_VERSION,
            "format": export_format,
            "source": self.name,
            "model": self.model,
            "arguments": self.arguments,
            "channels": self.channels,
            "conditioned": self.conditioned,
            "level_map": self.level_map,
            **({"pixel_spacing_mm": self.pixel_spacing_mm} if self.pixel_spacing_mm else {}),
            "min_side": self.min_side,
            "inputs": inputs,
            "outputs": {"denoised": "(B, C, H, W) float32, the same units as image"},
            "weights_sha256": self.weights_sha256,
            "meddenoise_version": __version__,
            "torch_version": torch.__version__,
        }


def load_source(model: str | os.PathLike[str]) -> ExportSource:
    """The network a shipped model name or a checkpoint path stands for (never unpickled).

    Raises
    ------
    ValueError
        An unknown name, a missing file or a file that is not a meddenoise checkpoint.
    """
    from meddenoise.checkpoint import CheckpointError, load_checkpoint
    from meddenoise.methods import SHIPPED_MODELS, checkpoint_path, file_digest

    name = os.fspath(model)
    if name not in SHIPPED_MODELS and not name.endswith(".safetensors"):
        known = ", ".join(SHIPPED_MODELS)
        raise ValueError(f"{name!r} is neither a shipped model ({known}) nor a .safetensors file")
    path = checkpoint_path(name)
    try:
        checkpoint = load_checkpoint(path)
    except CheckpointError as error:
        raise ValueError(str(error)) from None
    return ExportSource(
        network=checkpoint.network.eval(),
        name=name if name in SHIPPED_MODELS else path.name,
        model=checkpoint.model,
        arguments=checkpoint.arguments,
        level_map=checkpoint.level_map,
        weights=path,
        weights_sha256=file_digest(path),
        pixel_spacing_mm=checkpoint.pixel_spacing_mm,
    )


def write_sidecar(output: Path, metadata: dict[str, Any]) -> Path:
    """``OUTPUT.json`` beside an exported file, written atomically; its path."""
    from meddenoise.io.base import atomic_write_with

    sidecar = output.with_name(output.name + ".json")
    text = json.dumps(metadata, indent=2, sort_keys=True) + "\n"
    atomic_write_with(sidecar, lambda target: target.write_text(text, encoding="utf-8"))
    return sidecar


def export_model(
    model_name_or_checkpoint: str | os.PathLike[str], format: str, output: str | os.PathLike[str]
) -> Path:
    """Export a shipped model or a checkpoint to `format`; returns what was written.

    Parameters
    ----------
    model_name_or_checkpoint : str or path
        A shipped model (``grey``, ``rgb``, ``ct-lowdose``) or a ``.safetensors`` checkpoint.
    format : {"onnx", "torch-export", "monai-bundle"}
        ``torchscript`` is not offered: TorchScript is deprecated (use ``torch-export``).
    output : path
        The file (``.onnx``, ``.pt2``; a ``.json`` sidecar is written beside it) or the bundle
        folder, which must not exist yet.

    Raises
    ------
    ValueError
        An unknown format or model, or an existing bundle folder.
    """
    if format not in EXPORT_FORMATS:
        hint = " (TorchScript is deprecated: use torch-export)" if format == "torchscript" else ""
        raise ValueError(f"unknown format {format!r}{hint}; formats: {', '.join(EXPORT_FORMATS)}")
    output = Path(output)
    if format == "monai-bundle" and output.exists():
        raise ValueError(f"{output} exists; a bundle is written into a new folder")
    source = load_source(model_name_or_checkpoint)
    if format == "onnx":
        from meddenoise.export.onnx_graph import write_onnx

        write_onnx(source, output)
    elif format == "torch-export":
        from meddenoise.export.torch_program import write_torch_export

        write_torch_export(source, output)
    else:
        from meddenoise.export.monai_bundle import write_bundle

        write_bundle(source, output)
    return output
