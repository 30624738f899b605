"""DnCNN: a plain 17-layer CNN that predicts the noise (residual learning).

Zhang, Zuo, Chen, Meng and Zhang, "Beyond a Gaussian Denoiser: Residual Learning of Deep CNN for
Image Denoising", IEEE Transactions on Image Processing 26(7):3142-3155, 2017 (arXiv:1608.03981);
layout as in cszn/KAIR ``models/network_dncnn.py``.

Conv+ReLU, then ``depth - 2`` times Conv+BatchNorm+ReLU, then Conv; all 3 x 3 with ``features``
channels and no pooling.  The network estimates the noise and the output is ``x - noise``.  Any
H x W works without padding (size multiple 1).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from meddenoise.models.common import positive_int

__all__ = ["DnCNN"]


class DnCNN(nn.Module):
    """(B, C, H, W) noisy image in [0, 1] -> (B, C, H, W) denoised (``x - predicted noise``)."""

    conditioned: ClassVar[bool] = False

    def __init__(self, *, channels: int = 1, depth: int = 17, features: int = 64) -> None:
        super().__init__()
        channels = positive_int("channels", channels)
        depth = positive_int("depth", depth)
        features = positive_int("features", features)
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        self.size_multiple = 1
        layers: list[nn.Module] = [
            nn.Conv2d(channels, features, 3, padding=1),
            nn.ReLU(inplace=True),
        ]
        for _ in range(depth - 2):
            layers += [
                nn.Conv2d(features, features, 3, padding=1, bias=False),
                nn.BatchNorm2d(features),
                nn.ReLU(inplace=True),
            ]
        layers.append(nn.Conv2d(features, channels, 3, padding=1))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = self.body(x)
        return x - noise
