"""pix2pix: a U-Net generator and a PatchGAN discriminator for adversarial denoising.

Isola, Zhu, Zhou and Efros, "Image-to-Image Translation with Conditional Adversarial Networks",
CVPR 2017 (arXiv:1611.07004); layer layout as in junyanz/pytorch-CycleGAN-and-pix2pix
(``UnetGenerator``, ``NLayerDiscriminator``).  Trained with an adversarial loss plus L1, as in the
GAN denoiser of dermatology images that meddenoise reproduces.

`UNetGenerator` (``MODELS["unet_gan"]``): ``depth`` 4 x 4 stride-2 convolutions down
(LeakyReLU 0.2, BatchNorm except on the first and the innermost), the same number of 4 x 4
stride-2 transposed convolutions up (ReLU, BatchNorm except on the last), each decoder output
concatenated with the encoder output of its scale.  Widths are ``base_width * min(2**level, 8)``.
Dropout (0.5 in pix2pix) follows the three decoder layers just above the bottleneck; it is active
in training only, unlike pix2pix, so evaluation is deterministic.  Defaults are smaller than
pix2pix (base 32, depth 5 instead of 64, 8) for CPU training.  The generator predicts the clean
image directly with a linear output: pix2pix's final tanh assumes images in [-1, 1], ours are in
[0, 1].  H and W are padded to a multiple of ``2 ** depth``.

`PatchDiscriminator`: the 70 x 70 PatchGAN with ``layers=3``: 4 x 4 convolutions, ``layers``
with stride 2, one more with stride 1 and a 1-channel output, LeakyReLU 0.2 and BatchNorm.  It
sees the noisy input and a clean or denoised image concatenated along the channels and returns
one real/fake logit per overlapping patch.  Training only; not in ``MODELS``.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from meddenoise.models.common import crop_to, pad_to_multiple, positive_int

__all__ = ["PatchDiscriminator", "UNetGenerator"]


class UNetGenerator(nn.Module):
    """(B, C, H, W) noisy image -> (B, C, H, W) clean image, predicted directly."""

    conditioned: ClassVar[bool] = False

    def __init__(
        self, *, channels: int = 1, base_width: int = 32, depth: int = 5, dropout: float = 0.5
    ) -> None:
        super().__init__()
        channels = positive_int("channels", channels)
        base_width = positive_int("base_width", base_width)
        depth = positive_int("depth", depth)
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        if isinstance(dropout, bool) or not isinstance(dropout, int | float):
            raise TypeError(f"dropout must be a float, got {dropout!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.size_multiple = 2**depth
        widths = [base_width * min(2**level, 8) for level in range(depth)]
        innermost = depth - 1

        down: list[nn.Module] = []
        for level, width in enumerate(widths):
            if level == 0:
                down.append(nn.Conv2d(channels, width, 4, stride=2, padding=1))
                continue
            layers: list[nn.Module] = [
                nn.LeakyReLU(0.2),
                nn.Conv2d(widths[level - 1], width, 4, stride=2, padding=1, bias=False),
            ]
            if level != innermost:
                layers.append(nn.BatchNorm2d(width))
            down.append(nn.Sequential(*layers))
        self.down = nn.ModuleList(down)

        up: list[nn.Module] = []  # up[level] undoes down[level]
        for level, width in enumerate(widths):
            in_width = width if level == innermost else 2 * width
            if level == 0:
                up.append(
                    nn.Sequential(
                        nn.ReLU(), nn.ConvTranspose2d(in_width, channels, 4, stride=2, padding=1)
                    )
                )
                continue
            out_width = widths[level - 1]
            layers = [
                nn.ReLU(),
                nn.ConvTranspose2d(in_width, out_width, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out_width),
            ]
            if dropout > 0 and innermost - 3 <= level < innermost:
                layers.append(nn.Dropout(dropout))
            up.append(nn.Sequential(*layers))
        self.up = nn.ModuleList(up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, self.size_multiple)

        skips = []
        out = padded
        for down in self.down:
            out = down(out)
            skips.append(out)

        out = self.up[-1](skips.pop())
        for up in reversed(self.up[:-1]):
            out = up(torch.cat([out, skips.pop()], dim=1))
        return crop_to(out, height, width)


class PatchDiscriminator(nn.Module):
    """(noisy, image), each (B, C, H, W) -> (B, 1, H', W') real/fake logits, one per patch.

    ``layers=3`` is the 70 x 70 PatchGAN (H' = H/8 - 2); its inputs need H, W >= `min_size`.
    """

    def __init__(self, *, channels: int = 1, base_width: int = 64, layers: int = 3) -> None:
        super().__init__()
        channels = positive_int("channels", channels)
        base_width = positive_int("base_width", base_width)
        layers = positive_int("layers", layers)
        self.channels = channels
        self.min_size = 2**layers * 3
        widths = [base_width * min(2**level, 8) for level in range(layers + 1)]

        modules: list[nn.Module] = [
            nn.Conv2d(2 * channels, widths[0], 4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
        ]
        for level in range(1, layers + 1):
            stride = 2 if level < layers else 1
            modules += [
                nn.Conv2d(
                    widths[level - 1], widths[level], 4, stride=stride, padding=1, bias=False
                ),
                nn.BatchNorm2d(widths[level]),
                nn.LeakyReLU(0.2),
            ]
        modules.append(nn.Conv2d(widths[layers], 1, 4, stride=1, padding=1))
        self.body = nn.Sequential(*modules)

    def forward(self, noisy: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        if noisy.shape != image.shape or noisy.shape[1] != self.channels:
            raise ValueError(
                f"expected noisy and image of one shape (B, {self.channels}, H, W), "
                f"got {tuple(noisy.shape)} and {tuple(image.shape)}"
            )
        if min(noisy.shape[-2:]) < self.min_size:
            raise ValueError(
                f"the discriminator needs H, W >= {self.min_size}, got {tuple(noisy.shape[-2:])}"
            )
        return self.body(torch.cat([noisy, image], dim=1))
