"""Convolutional denoising autoencoder of Gondara (2016) for small medical images.

Lovedeep Gondara, "Medical Image Denoising Using Convolutional Denoising Autoencoders",
IEEE ICDM Workshops 2016 (arXiv:1608.04667): trained on 64 x 64 dental X-rays and mammograms.

Encoder: two 3 x 3 Conv+ReLU with 64 filters, each followed by 2 x 2 max pooling (to 1/4
resolution).  Decoder: two 3 x 3 Conv+ReLU, each followed by 2 x 2 nearest-neighbour upsampling
(Keras ``UpSampling2D``), then one 3 x 3 convolution to the output channels with a sigmoid, as in
the paper (trained there with binary cross-entropy on [0, 1] images).  ``sigmoid=False`` gives a
linear output for MSE/L1 training.  The network predicts the clean image directly (no residual).
H and W are padded to a multiple of 4.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from meddenoise.models.common import crop_to, pad_to_multiple, positive_int

__all__ = ["GondaraCDAE"]


def _conv_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(inplace=True))


class GondaraCDAE(nn.Module):
    """(B, C, H, W) noisy image in [0, 1] -> (B, C, H, W) clean image (in (0, 1) with sigmoid)."""

    conditioned: ClassVar[bool] = False

    def __init__(self, *, channels: int = 1, features: int = 64, sigmoid: bool = True) -> None:
        super().__init__()
        channels = positive_int("channels", channels)
        features = positive_int("features", features)
        if not isinstance(sigmoid, bool):
            raise TypeError(f"sigmoid must be a bool, got {sigmoid!r}")
        self.size_multiple = 4
        self.sigmoid = sigmoid
        self.encoder = nn.Sequential(
            _conv_relu(channels, features),
            nn.MaxPool2d(2),
            _conv_relu(features, features),
            nn.MaxPool2d(2),
        )
        self.decoder = nn.Sequential(
            _conv_relu(features, features),
            nn.Upsample(scale_factor=2, mode="nearest"),
            _conv_relu(features, features),
            nn.Upsample(scale_factor=2, mode="nearest"),
        )
        self.output = nn.Conv2d(features, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, self.size_multiple)
        out = self.output(self.decoder(self.encoder(padded)))
        if self.sigmoid:
            out = torch.sigmoid(out)
        return crop_to(out, height, width)
