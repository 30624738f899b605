"""The X-ray encoder-decoder: a plain convolutional autoencoder without skip connections.

After the TensorFlow X-ray denoising project whose README gives the encoder filters
[64, 124, 256, 512, 1024] and the mirrored decoder [1024, 512, 256, 124, 64] (the 124 is the
reference's and is kept); the layer types are not stated there, so the usual Keras pattern is used
(a convolutional autoencoder as in Masci et al., "Stacked Convolutional Auto-Encoders for
Hierarchical Feature Extraction", ICANN 2011):

- encoder stage: 3 x 3 Conv+BatchNorm+ReLU, then 2 x 2 max pooling;
- decoder stage: 2 x upsampling (bilinear), then 3 x 3 Conv+BatchNorm+ReLU;
- a final 3 x 3 convolution to the output channels, linear.

Each width halves the resolution once, so H and W are padded to a multiple of
``2 ** len(widths)`` (32 by default).  Everything passes through the 1/32-resolution bottleneck,
which limits fine detail; the network predicts the clean image directly, as the reference does.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from meddenoise.models.common import crop_to, pad_to_multiple, positive_int, positive_ints

__all__ = ["EncoderDecoder"]


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class EncoderDecoder(nn.Module):
    """(B, C, H, W) noisy image -> (B, C, H, W) clean image, predicted directly."""

    conditioned: ClassVar[bool] = False

    def __init__(
        self, *, channels: int = 1, widths: tuple[int, ...] = (64, 124, 256, 512, 1024)
    ) -> None:
        super().__init__()
        channels = positive_int("channels", channels)
        widths = positive_ints("widths", widths)
        self.size_multiple = 2 ** len(widths)
        encoder_inputs = (channels, *widths[:-1])
        self.encoder = nn.Sequential(
            *(
                nn.Sequential(_conv_bn_relu(in_width, out_width), nn.MaxPool2d(2))
                for in_width, out_width in zip(encoder_inputs, widths, strict=True)
            )
        )
        decoder_widths = widths[::-1]
        decoder_inputs = (widths[-1], *decoder_widths[:-1])
        self.decoder = nn.Sequential(
            *(
                nn.Sequential(
                    nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                    _conv_bn_relu(in_width, out_width),
                )
                for in_width, out_width in zip(decoder_inputs, decoder_widths, strict=True)
            )
        )
        self.output = nn.Conv2d(widths[0], channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, self.size_multiple)
        code = self.encoder(padded)
        out = self.output(self.decoder(code))
        return crop_to(out, height, width)
