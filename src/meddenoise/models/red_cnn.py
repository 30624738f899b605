"""RED-CNN: residual encoder-decoder CNN for low-dose CT.

Chen, Zhang, Kalra, Lin, Chen, Liao, Zhou and Wang, "Low-Dose CT With a Residual Encoder-Decoder
Convolutional Neural Network", IEEE Transactions on Medical Imaging 36(12):2524-2535, 2017
(arXiv:1702.00288); layer order as in the authors' PyTorch port SSinyu/RED-CNN.

Five unpadded 5 x 5 convolutions with 96 filters (each shrinks the image by 4 pixels), then five
5 x 5 transposed convolutions that grow it back, no pooling.  Three shortcuts add the input, the
2nd and the 4th encoder outputs to the matching decoder outputs; the last one makes the whole
network residual (``output = relu(x + decoder(x))``), the final ReLU as in the paper (the output is
non-negative, as attenuation values and [0, 1] intensities are).  The unpadded convolutions need
at least 21 x 21 pixels: smaller inputs are padded to that and cropped back (size multiple 1).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from meddenoise.models.common import crop_to, pad_to_multiple, positive_int

__all__ = ["REDCNN"]


class REDCNN(nn.Module):
    """(B, C, H, W) low-dose image -> (B, C, H, W) restored image (residual, non-negative)."""

    conditioned: ClassVar[bool] = False

    def __init__(self, *, channels: int = 1, features: int = 96, kernel_size: int = 5) -> None:
        super().__init__()
        channels = positive_int("channels", channels)
        features = positive_int("features", features)
        kernel_size = positive_int("kernel_size", kernel_size)
        self.size_multiple = 1
        self.min_size = 5 * (kernel_size - 1) + 1
        self.encoder = nn.ModuleList(
            nn.Conv2d(channels if index == 0 else features, features, kernel_size)
            for index in range(5)
        )
        self.decoder = nn.ModuleList(
            nn.ConvTranspose2d(features, channels if index == 4 else features, kernel_size)
            for index in range(5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, 1, min_size=self.min_size)
        conv1, conv2, conv3, conv4, conv5 = self.encoder
        deconv1, deconv2, deconv3, deconv4, deconv5 = self.decoder

        out = torch.relu(conv1(padded))
        shortcut2 = out = torch.relu(conv2(out))
        out = torch.relu(conv3(out))
        shortcut4 = out = torch.relu(conv4(out))
        out = torch.relu(conv5(out))

        out = deconv1(out) + shortcut4
        out = deconv2(torch.relu(out))
        out = deconv3(torch.relu(out)) + shortcut2
        out = deconv4(torch.relu(out))
        out = deconv5(torch.relu(out)) + padded
        return crop_to(torch.relu(out), height, width)
