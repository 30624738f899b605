"""A meddenoise network as a denoiser of 2-D images, and the bundle's command.

Run from the bundle's folder, with numpy and torch installed (safetensors optional)::

    python -m scripts.denoise noisy.npy denoised.npy            # noise level estimated
    python -m scripts.denoise noisy.npy denoised.npy --sigma 0.02

The input is an (H, W) grey or (H, W, 3) colour float array with intensities mapped to [0, 1]
(meddenoise maps a file's own value range, padding excluded, or a window); the output has the
same shape and units.  Volumes: denoise slice by slice.  This runs fp32: meddenoise's own
``--precision auto`` runs bf16 on CPUs with native bf16, which differs by about 1e-3.
"""

from __future__ import annotations

import argparse
import importlib
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .noise_level import blind_noise_level, blind_noise_map
from .tiling import tiled_apply

BUNDLE_ROOT = Path(__file__).resolve().parents[1]


def load_network(bundle_root: str | Path = BUNDLE_ROOT) -> tuple[nn.Module, dict[str, object]]:
    """The bundle's network with its weights, and the ``meddenoise`` part of its metadata.

    The weights come from ``models/model.safetensors`` where safetensors is installed (no
    unpickling), else from ``models/model.pt`` with ``torch.load(weights_only=True)``.
    """
    # network.py is written beside this file by the export (the network's own source).
    networks = importlib.import_module(".network", __package__)
    root = Path(bundle_root)
    metadata = json.loads((root / "configs" / "metadata.json").read_text(encoding="utf-8"))
    facts = metadata["meddenoise"]
    network = getattr(networks, facts["class"])(**facts["arguments"])
    try:
        from safetensors.torch import load_file

        state = load_file(str(root / "models" / "model.safetensors"))
    except ImportError:
        state = torch.load(root / "models" / "model.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(state)
    return network.eval(), facts


class BundleDenoiser:
    """A network as a denoiser: [0, 1] float image (H, W) or (H, W, 3) in, same shape out.

    Parameters
    ----------
    network : nn.Module
        The bundle's network; ``network.conditioned`` says whether it takes a noise map.
    level_map : {"scalar", "signal-dependent"}
        What the network was trained on: one estimated std per image, or per-pixel std maps
        (a Poisson-Gaussian fit of each grey image; white noise falls back to the scalar).
    sigma : float, optional
        The noise std in [0, 1] units; None estimates it from each image.
    tile_size, overlap, margin : int
        The tiling (see `tiling.tiled_apply`).
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        level_map: str = "scalar",
        sigma: float | None = None,
        tile_size: int = 544,
        overlap: int = 32,
        margin: int = 8,
    ) -> None:
        # channels_last: the layout oneDNN's CPU convolutions run fastest in.
        self.network = network.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.level_map = level_map
        self.sigma = sigma
        self.tiling = {"tile_size": tile_size, "overlap": overlap, "margin": margin}
        self.channels = int(getattr(network, "channels", 1))
        self.conditioned = bool(getattr(network, "conditioned", False))

    def _run(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) float32 with C == the network's channels -> same shape."""
        grey = image.shape[-1] == 1
        noise_map = None
        if (
            self.conditioned
            and grey
            and self.level_map == "signal-dependent"
            and self.sigma is None
        ):
            noise_map = blind_noise_map(image[..., 0])
        if noise_map is not None:
            image = np.concatenate([image, noise_map[..., None]], axis=-1)
        level = 0.0
        if self.conditioned and noise_map is None:
            level = (
                self.sigma
                if self.sigma is not None
                else blind_noise_level(image[..., 0] if grey else image)
            )
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))

        def forward(batch: torch.Tensor) -> torch.Tensor:
            batch = batch.contiguous(memory_format=torch.channels_last)
            if noise_map is not None:
                return self.network(batch[:, :-1], batch[:, -1:])
            if self.conditioned:
                return self.network(batch, torch.full_like(batch[:, :1], level))
            return self.network(batch)

        with torch.inference_mode():
            result = tiled_apply(forward, tensor, **self.tiling)
        return result.numpy().transpose(1, 2, 0)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        array = np.asarray(image, dtype=np.float32)
        if array.ndim == 2:
            if self.channels == 3:  # a grey image is a colour image with equal channels
                return self._run(np.repeat(array[..., None], 3, axis=-1)).mean(axis=-1)
            return self._run(array[..., None])[..., 0]
        if array.ndim != 3 or array.shape[-1] != 3:
            raise ValueError(f"expected (H, W) or (H, W, 3), got {array.shape}")
        if self.channels == 3:
            return self._run(array)
        return np.stack([self._run(array[..., [index]])[..., 0] for index in range(3)], axis=-1)


def denoise_file(denoiser: BundleDenoiser, source: str | Path, target: str | Path) -> None:
    """Denoise the array in `source` (.npy) and save it to `target` (.npy)."""
    image = np.load(source, allow_pickle=False)
    np.save(target, denoiser(image).astype(np.float32), allow_pickle=False)


def main(arguments: list[str] | None = None) -> None:
    """``python -m scripts.denoise INPUT.npy OUTPUT.npy [--sigma S]`` from the bundle folder."""
    parser = argparse.ArgumentParser(prog="python -m scripts.denoise")
    parser.add_argument("input", type=Path, help="(H, W) or (H, W, 3) float array in [0, 1]")
    parser.add_argument("output", type=Path)
    parser.add_argument("--sigma", type=float, help="noise std in [0, 1] units; default: estimated")
    parser.add_argument("--tile-size", type=int, default=544)
    parsed = parser.parse_args(arguments)
    network, facts = load_network()
    denoiser = BundleDenoiser(
        network,
        level_map=str(facts["level_map"]),
        sigma=parsed.sigma,
        tile_size=parsed.tile_size,
    )
    denoise_file(denoiser, parsed.input, parsed.output)


if __name__ == "__main__":
    main()
