"""Networks as denoisers: tiled, batched, blended inference for images of any size.

A network maps (B, C, H, W) to (B, C, H, W); how a 4096 x 4096 radiograph is cut into tiles,
batched and blended back is `tiled_apply`, a separate function tested on its own (MONAI's
SlidingWindowInferer has the same split).  `NeuralDenoiser` wraps a network and its weights into
the `Denoiser` protocol shared with the classical methods.

Blending: tiles overlap by `overlap` pixels.  Each tile's weight is zero over a `margin` next to
any edge that is inside the image (where the network saw zero padding instead of real context),
then rises linearly to one across the rest of the overlap.  Weights are normalised per pixel, so
the result has no seams, and with a margin at least the network's effective receptive radius it
matches the whole-image result.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from meddenoise.estimate import (
    blind_noise_level,
    blind_noise_map,
    ct_noise_std_map,
    flat_window_noise_std,
    local_noise_std_map,
    sub_image_noise_level,
)
from meddenoise.types import PRECISIONS, FloatArray, layout_of

logger = logging.getLogger(__name__)

# Where a network runs: torch itself, or its ONNX export in ONNX Runtime (the `export` extra).
BACKENDS = ("torch", "onnxruntime")
# How a conditioned network is told the noise level (`NeuralDenoiser.level_map`).
LEVEL_MAPS = (
    "scalar",
    "signal-dependent",
    "sub-images",
    "flat-windows",
    "local-flat-windows",
    "ct-physics",
)


def per_pixel_levels(
    level_map: str, pixel_spacing_mm: float | None = None
) -> Callable[[np.ndarray], np.ndarray] | None:
    """The per-pixel level rule a network told `level_map` is given for a grey (H, W) plane
    (`local_noise_std_map`, or `ct_noise_std_map` at `pixel_spacing_mm`), or None where the rule
    gives one level per image (or, "signal-dependent", decides per plane)."""
    if level_map == "local-flat-windows":
        return local_noise_std_map
    if level_map == "ct-physics":
        return lambda plane: ct_noise_std_map(plane, pixel_spacing_mm)
    return None


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length) with at least `overlap` shared."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f"overlap {overlap} must be smaller than the tile size {tile}")
    count = int(np.ceil((length - tile) / stride)) + 1
    # Spread the tiles evenly so the last one ends exactly at the border.
    return [round(index * (length - tile) / (count - 1)) for index in range(count)]


def balanced_tile(length: int, tile: int, overlap: int) -> int:
    """The smallest tile side that covers `length` with as few tiles as `tile` would need.

    A 2048-pixel side cut into 544-pixel tiles needs four; four tiles of 536 do the same job
    with 3 % fewer pixels to compute.  Never larger than `tile` or `length`.
    """
    if length <= tile:
        return length
    stride = tile - overlap
    if stride <= 0:
        raise ValueError(f"overlap {overlap} must be smaller than the tile size {tile}")
    count = int(np.ceil((length - tile) / stride)) + 1
    return min(tile, int(np.ceil((length - overlap) / count)) + overlap)


def edge_ramp(size: int, *, ramp_start: bool, ramp_end: bool, margin: int, ramp: int) -> np.ndarray:
    """1-D weights: 0 over `margin`, rising over `ramp`, 1 inside; an image border gets no ramp."""
    weights = np.ones(size, dtype=np.float32)
    profile = np.concatenate(
        [np.zeros(margin, np.float32), (np.arange(1, ramp + 1, dtype=np.float32) / (ramp + 1))]
    )[: size // 2]
    if ramp_start:
        weights[: profile.size] = profile
    if ramp_end:
        weights[size - profile.size :] = np.minimum(weights[size - profile.size :], profile[::-1])
    return weights


@dataclass(frozen=True)
class TilingOptions:
    """How images are cut: square `tile_size` tiles sharing `overlap` pixels, `batch_size` at once.

    `margin` pixels next to an inner tile edge get zero weight; it must be below overlap / 2.
    """

    # Measured on the shipped cond_unet (docs/models.md): tiles of ~512² keep the activations in
    # cache (a whole 2048² image ran 1.3x slower per pixel); a 32-pixel overlap with an 8-pixel
    # margin changed a 1024² radiograph by 8e-5 RMS (0.002 dB); one tile at a time was faster
    # than batches of four.
    tile_size: int = 544
    overlap: int = 32
    margin: int = 8
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.tile_size < 16 or self.batch_size < 1:
            raise ValueError("tile_size must be >= 16 and batch_size >= 1")
        if not 0 <= self.overlap < self.tile_size:
            raise ValueError(f"overlap must be in [0, tile_size), got {self.overlap}")
        if not 0 <= 2 * self.margin <= self.overlap:
            raise ValueError(f"margin must be at most overlap / 2, got {self.margin}")


def tiled_apply(
    function: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    options: TilingOptions = TilingOptions(),
) -> torch.Tensor:
    """Apply `function` ((B, C, h, w) -> (B, C', h, w)) to `image` (C, H, W) tile by tile.

    Images no larger than one tile go through whole.  Returns (C', H, W) float32 on `image`'s
    device (C' may differ from C: extra input channels, such as a noise map, ride along).
    """
    height, width = image.shape[-2:]
    if height <= options.tile_size and width <= options.tile_size:
        return function(image.unsqueeze(0))[0].float()
    tile_height = balanced_tile(height, options.tile_size, options.overlap)
    tile_width = balanced_tile(width, options.tile_size, options.overlap)
    rows = tile_starts(height, tile_height, options.overlap)
    columns = tile_starts(width, tile_width, options.overlap)
    ramp = max(options.overlap - 2 * options.margin, 0)
    output: torch.Tensor | None = None  # allocated once the output's channel count is known
    total_weight = torch.zeros((1, height, width), dtype=torch.float32, device=image.device)
    positions = [(top, left) for top in rows for left in columns]
    for first in range(0, len(positions), options.batch_size):
        batch_positions = positions[first : first + options.batch_size]
        batch = torch.stack(
            [
                image[:, top : top + tile_height, left : left + tile_width]
                for top, left in batch_positions
            ]
        )
        results = function(batch).float()
        if output is None:
            output = torch.zeros(
                (results.shape[1], height, width), dtype=torch.float32, device=image.device
            )
        for result, (top, left) in zip(results, batch_positions, strict=True):
            vertical = edge_ramp(
                tile_height,
                ramp_start=top > 0,
                ramp_end=top + tile_height < height,
                margin=options.margin,
                ramp=ramp,
            )
            horizontal = edge_ramp(
                tile_width,
                ramp_start=left > 0,
                ramp_end=left + tile_width < width,
                margin=options.margin,
                ramp=ramp,
            )
            weight = torch.from_numpy(np.outer(vertical, horizontal)).to(image.device)[None]
            output[:, top : top + tile_height, left : left + tile_width] += result * weight
            total_weight[:, top : top + tile_height, left : left + tile_width] += weight
    assert output is not None  # at least one tile
    return output / total_weight.clamp_min(1e-12)


def bf16_supported(device: torch.device | str = "cpu") -> bool:
    """Whether `device` runs bf16 natively, so autocast to bf16 is a speed-up and not a slow-down.

    On a CPU only the AVX512-BF16 instructions or AMX tiles make bf16 convolutions fast; every
    other CPU (AVX2 laptops, AVX-512 Skylake and Cascade Lake servers) emulates bf16 at about ten
    times the fp32 cost.  oneDNN's own ``_is_mkldnn_bf16_supported`` answers true on AVX-512
    without BF16, so it is not asked.  On CUDA, the device's own bf16 support decides.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for check in checks:
        probe = getattr(torch.cpu, check, None)
        try:
            if probe is not None and bool(probe()):
                return True
        except RuntimeError:
            continue
    return False


def resolve_precision(requested: str, device: torch.device | str = "cpu") -> str:
    """The precision to run: "bf16" only where `device` runs it natively, otherwise "fp32".

    "auto" picks bf16 where native; "bf16" asked for on a device that would emulate it falls
    back to fp32 with a warning (emulated bf16 is both slower and less exact).
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested == "fp32":
        return "fp32"
    if bf16_supported(device):
        return "bf16"
    if requested == "bf16":
        logger.warning(
            "bf16 asked for, but %s has no native bf16 (AVX512-BF16 or AMX); running fp32",
            torch.device(device).type,
        )
    return "fp32"


def pick_device(device: str | None = None) -> torch.device:
    """The requested device, else a GPU when present, else the CPU."""
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def _precision(device: torch.device, precision: str) -> Iterator[None]:
    if precision == "bf16":
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


@dataclass
class NeuralDenoiser:
    """A network and its weights as a `Denoiser`: [0, 1] float image in, same shape out.

    - `network`: an `nn.Module` mapping (B, C, H, W) -> (B, C, H, W); a network whose class says
      `conditioned = True` also takes a noise map (B, 1, H, W) of the noise std in [0, 1] units.
    - `sigma`: the noise level for conditioned networks; None estimates it from each image.
    - `level_map`: "scalar" (one estimated std per image), "signal-dependent" (for networks
      trained on per-pixel maps: a Poisson-Gaussian fit gives grey images a per-pixel std map) or
      "sub-images" (one std per image measured on the network's ``pd_factor`` pixel-shuffle
      sub-images, `estimate.sub_image_noise_level`: for networks adapted to correlated noise) or
      "flat-windows" (one std per image from the flattest windows, white or correlated noise,
      `estimate.flat_window_noise_std`: for networks trained by `meddenoise adapt` on noise
      synthesised from the user's own, session 7) or "local-flat-windows" (grey images: a
      per-pixel std from the flattest windows near each pixel, `estimate.local_noise_std_map`,
      for noise whose level changes across the image, as CT's; colour: "flat-windows") or
      "ct-physics" (grey CT: `estimate.ct_noise_std_map`, the noise's shape across the slice from
      its own attenuation at `pixel_spacing_mm`, its scale from the flattest places; colour:
      "flat-windows").
    - `pixel_spacing_mm`: the pixel width "ct-physics" assumes (an adapted checkpoint records its
      series'; `estimate.DEFAULT_CT_SPACING_MM` when None).
    - `precision`: "auto" (the default: bf16 where the device runs it natively, fp32 elsewhere),
      "fp32", or "bf16" (still fp32 where bf16 would be emulated; see `resolve_precision`).  Its
      cost against fp32 is measured in docs/models.md.
    - `backend`: "torch", or "onnxruntime": the network exported to ONNX (in memory, once per
      process) and run by ONNX Runtime on the CPU, in fp32, inside the same tiling.
    - Grey networks denoise colour images channel by channel; colour networks see a grey image as
      three equal channels (and return their mean); volumes go slice by slice.
    """

    network: nn.Module
    name: str = "network"
    sigma: float | None = None
    tiling: TilingOptions = field(default_factory=TilingOptions)
    level_map: str = "scalar"
    precision: str = "auto"
    device: str | None = None
    description: dict[str, Any] = field(default_factory=dict)
    backend: str = "torch"
    pixel_spacing_mm: float | None = None

    def __post_init__(self) -> None:
        if self.level_map not in LEVEL_MAPS:
            raise ValueError(
                f"level_map must be one of {', '.join(LEVEL_MAPS)}, got {self.level_map!r}"
            )
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        self._onnx: Callable[..., torch.Tensor] | None = None
        if self.backend == "onnxruntime":
            self._start_onnxruntime()
            return
        self._device = pick_device(self.device)
        self._precision = resolve_precision(self.precision, self._device)
        self.network = self.network.to(self._device).eval()
        if self._device.type == "cpu":
            self.network = self.network.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def _start_onnxruntime(self) -> None:
        """Export the network for ONNX Runtime, which runs it on the CPU in fp32."""
        # meddenoise.export sits above this module; it is imported here, lazily, because this
        # backend is an export of this very network (and needs the optional `export` extra).
        from meddenoise.export.onnx_graph import onnxruntime_network

        if self.device not in (None, "cpu"):
            raise ValueError(f"the onnxruntime backend runs on the CPU, not {self.device}")
        if self.precision == "bf16":
            logger.warning("bf16 asked for, but the onnxruntime backend runs fp32")
        self._device, self._precision = torch.device("cpu"), "fp32"
        self.network = self.network.eval()
        self._onnx = onnxruntime_network(self.network, channels=self.channels)

    @property
    def parameters(self) -> dict[str, object]:
        backend = {} if self.backend == "torch" else {"backend": self.backend}
        return {**self.description, "sigma": self.sigma, "precision": self._precision, **backend}

    @property
    def channels(self) -> int:
        declared = getattr(self.network, "channels", None)
        if isinstance(declared, int):  # e.g. CondUNet, whose first layer sees 8 x channels
            return declared
        first = next(module for module in self.network.modules() if isinstance(module, nn.Conv2d))
        conditioned = bool(getattr(self.network, "conditioned", False))
        return first.in_channels - (1 if conditioned else 0)

    def noise_level(self, plane: np.ndarray) -> float:
        """The one noise std this network is told for `plane` (H, W) or (H, W, C) when no
        per-pixel map applies: `sigma` when given, else measured by the `level_map` rule."""
        if self.sigma is not None:
            return self.sigma
        if self.level_map == "sub-images":
            return sub_image_noise_level(plane, int(getattr(self.network, "pd_factor", 1)))
        if self.level_map in ("flat-windows", "local-flat-windows", "ct-physics"):
            return flat_window_noise_std(plane)
        return blind_noise_level(plane)

    def _noise_map(self, plane: np.ndarray) -> np.ndarray | None:
        """A per-pixel std map for a grey `plane` (signal-dependent or local noise), else None."""
        if self.sigma is not None:
            return None
        per_pixel = per_pixel_levels(self.level_map, self.pixel_spacing_mm)
        if per_pixel is not None:
            return per_pixel(plane)
        if self.level_map != "signal-dependent":
            return None
        return blind_noise_map(plane)

    def _run(self, image: np.ndarray) -> np.ndarray:
        """(H, W, C) float32 with C == network channels -> same shape."""
        conditioned = bool(getattr(self.network, "conditioned", False))
        grey = image.shape[-1] == 1
        noise_map = self._noise_map(image[..., 0]) if conditioned and grey else None
        if noise_map is not None:
            # The map travels through the tiling as one more channel, cut with the image.
            image = np.concatenate([image, noise_map[..., None]], axis=-1)
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).to(self._device)
        level = 0.0
        if conditioned and noise_map is None:
            level = self.noise_level(image[..., 0] if grey else image)

        def forward(batch: torch.Tensor) -> torch.Tensor:
            batch = batch.contiguous(memory_format=torch.channels_last)
            inputs: tuple[torch.Tensor, ...]
            if noise_map is not None:
                inputs = (batch[:, :-1], batch[:, -1:])
            elif conditioned:
                inputs = (batch, torch.full_like(batch[:, :1], level))
            else:
                inputs = (batch,)
            # The exported graph pads by reflection and so needs sides of at least the size
            # multiple; a smaller image (rare: tiles are >= 16) goes through the torch network.
            small = min(batch.shape[-2:]) < int(getattr(self.network, "size_multiple", 1))
            if self._onnx is not None and not small:
                return self._onnx(*inputs)
            return self.network(*inputs)

        with torch.inference_mode(), _precision(self._device, self._precision):
            result = tiled_apply(forward, tensor, self.tiling)
        return result.cpu().numpy().transpose(1, 2, 0)

    def __call__(self, image: FloatArray) -> FloatArray:
        array = np.asarray(image, dtype=np.float32)
        layout = layout_of(array)
        if layout == "volume":
            return np.stack([self(plane) for plane in array]).astype(np.float32)
        channels = self.channels
        if layout == "grey":
            if channels == 3:  # a grey image is a colour image with equal channels
                return self._run(np.repeat(array[..., None], 3, axis=-1)).mean(axis=-1)
            return self._run(array[..., None])[..., 0]
        if channels == 3:
            return self._run(array)
        return np.stack([self._run(array[..., [index]])[..., 0] for index in range(3)], axis=-1)
