"""Training losses on (B, C, H, W) tensors in [0, 1]: L1, MSE, SSIM, their mixtures, adversarial.

A loss is written as a string so configs stay plain: ``"l1"``, ``"mse"``, ``"ssim"`` or a
weighted sum such as ``"0.84*ssim+0.16*l1"`` (the mix of Zhao et al., IEEE TCI 2017).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as functional

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# A built loss: (prediction, target) or (prediction, target, levels) for level weighting.
WeightedLossFunction = Callable[..., torch.Tensor]


def _gaussian_window(size: int, sigma: float, channels: int, device: torch.device) -> torch.Tensor:
    coordinates = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    profile = torch.exp(-(coordinates**2) / (2 * sigma**2))
    profile = profile / profile.sum()
    window = torch.outer(profile, profile)
    return window.expand(channels, 1, size, size).contiguous()


def ssim_map(
    prediction: torch.Tensor, target: torch.Tensor, *, data_range: float = 1.0, window: int = 7
) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004) with a Gaussian window (sigma 1.5), valid region only."""
    channels = prediction.shape[1]
    size = min(window, prediction.shape[-1], prediction.shape[-2])
    kernel = _gaussian_window(size, 1.5, channels, prediction.device).to(prediction.dtype)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    def blur(values: torch.Tensor) -> torch.Tensor:
        return functional.conv2d(values, kernel, groups=channels)

    mean_prediction = blur(prediction)
    mean_target = blur(target)
    variance_prediction = blur(prediction * prediction) - mean_prediction**2
    variance_target = blur(target * target) - mean_target**2
    covariance = blur(prediction * target) - mean_prediction * mean_target
    numerator = (2 * mean_prediction * mean_target + c1) * (2 * covariance + c2)
    denominator = (mean_prediction**2 + mean_target**2 + c1) * (
        variance_prediction + variance_target + c2
    )
    return numerator / denominator


def l1_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return functional.l1_loss(prediction, target)


def mse_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return functional.mse_loss(prediction, target)


def ssim_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 1.0 - ssim_map(prediction, target).mean()


LOSSES: dict[str, LossFunction] = {"l1": l1_loss, "mse": mse_loss, "ssim": ssim_loss}
TERM = re.compile(r"^\s*(?:(\d+(?:\.\d*)?(?:e-?\d+)?)\s*\*\s*)?([a-z0-9]+)\s*$")


def parse_loss_terms(text: str) -> list[tuple[float, str]]:
    """``"0.8*l1+0.2*ssim"`` -> [(0.8, "l1"), (0.2, "ssim")]; a clear error for anything else."""
    terms = []
    for part in text.split("+"):
        match = TERM.match(part.lower())
        if match is None or match.group(2) not in LOSSES:
            raise ValueError(
                f"cannot read loss {text!r}: write e.g. l1, mse, ssim or 0.8*l1+0.2*ssim"
            )
        terms.append((float(match.group(1) or 1.0), match.group(2)))
    return terms


# loss_weighting "noise-level": errors in units of the patch's level relative to this one, the
# level floored so that nearly noise-free patches are not weighted without bound.
WEIGHTING_REFERENCE_LEVEL = 25 / 255
WEIGHTING_LEVEL_FLOOR = 5 / 255
# `TrainConfig.loss_weighting` (config.py names the same values: it must not import torch).
LossWeighting = Literal["none", "noise-level"]


def level_weights(levels: torch.Tensor) -> torch.Tensor:
    """(N, 1, 1, 1) factors reference / max(level, floor) for levels (N,) or maps (N, 1, H, W)
    (a map counts by its mean)."""
    per_patch = levels.reshape(len(levels), -1).float().mean(dim=1)
    return (WEIGHTING_REFERENCE_LEVEL / per_patch.clamp(min=WEIGHTING_LEVEL_FLOOR)).view(
        -1, 1, 1, 1
    )


def build_loss(text: str, *, weighting: LossWeighting = "none") -> WeightedLossFunction:
    """The weighted sum the loss string describes, called as ``loss(prediction, target)`` or
    ``loss(prediction, target, levels)``.  With ``weighting="noise-level"`` (training's
    ``loss_weighting``) and levels given, both sides are first scaled by `level_weights`: an L1
    error is then divided by its patch's level, an MSE by its square."""
    terms = parse_loss_terms(text)

    def loss(
        prediction: torch.Tensor, target: torch.Tensor, levels: torch.Tensor | None = None
    ) -> torch.Tensor:
        if weighting == "noise-level" and levels is not None:
            weights = level_weights(levels)
            prediction, target = prediction * weights, target * weights
        total = prediction.new_zeros(())
        for weight, name in terms:
            total = total + weight * LOSSES[name](prediction, target)
        return total

    return loss


def adversarial_loss(logits: torch.Tensor, *, real: bool) -> torch.Tensor:
    """Binary cross-entropy of PatchGAN logits against all-real or all-fake labels (pix2pix)."""
    labels = torch.ones_like(logits) if real else torch.zeros_like(logits)
    return functional.binary_cross_entropy_with_logits(logits, labels)


def neighbour_subsample(
    images: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Neighbor2Neighbor's sub-sampler (Huang et al., CVPR 2021).

    In every 2 x 2 cell pick one pixel at random for the first sub-image and one of its two
    horizontal/vertical neighbours for the second: two half-size images with independent noise
    and nearly the same signal.
    """
    batch, channels, height, width = images.shape
    height, width = height // 2 * 2, width // 2 * 2
    cells = images[..., :height, :width].reshape(batch, channels, height // 2, 2, width // 2, 2)
    cells = cells.permute(0, 1, 2, 4, 3, 5).reshape(batch, channels, height // 2, width // 2, 4)
    first = torch.randint(0, 4, (batch, 1, height // 2, width // 2, 1), generator=generator)
    # Neighbours in the cell laid out [0 1; 2 3]: 0-1, 0-2, 1-3, 2-3.
    neighbours = torch.tensor([[1, 2], [0, 3], [0, 3], [1, 2]])
    pick = torch.randint(0, 2, first.shape, generator=generator)
    second = neighbours[first.squeeze(-1), pick.squeeze(-1)].unsqueeze(-1)
    expand = (-1, channels, -1, -1, -1)
    sub_first = torch.gather(cells, 4, first.expand(*expand)).squeeze(-1)
    sub_second = torch.gather(cells, 4, second.expand(*expand)).squeeze(-1)
    return sub_first, sub_second
