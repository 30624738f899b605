"""ResNet-18 encoder with a U-Net decoder, predicting the noise (residual learning).

Encoder: ResNet-18 as in He, Zhang, Ren and Sun, "Deep Residual Learning for Image Recognition",
CVPR 2016 (arXiv:1512.03385): a 7 x 7 stride-2 convolution and a 3 x 3 stride-2 max pool, then four
stages of two BasicBlocks with 64, 128, 256 and 512 channels, the last three starting with stride
2 (1/32 resolution at the bottom).  Written here, without torchvision; no ImageNet weights (the
input is one or three channels of medical intensities, not ImageNet RGB statistics).

Decoder: U-Net (Ronneberger, Fischer and Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015): at each scale, 2 x bilinear upsampling, concatenation with the
encoder features of that scale (1/16, 1/8, 1/4, the 1/2 stem, and a small full-resolution
convolution of the input), then two 3 x 3 Conv+BatchNorm+ReLU.  After the low-dose X-ray project
that pairs the two (PyTorch, ResNet-18 + U-Net, MSE/L1 with Adam).

Output: a 1 x 1 convolution predicts the noise and the network returns ``x - noise`` (residual
learning as in DnCNN: it starts near the identity and trains faster than predicting the image).
H and W are padded to a multiple of 32.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from meddenoise.models.common import crop_to, pad_to_multiple, positive_int, positive_ints

__all__ = ["BasicBlock", "ResNet18UNet"]


class BasicBlock(nn.Module):
    """ResNet basic block: two 3 x 3 Conv+BN with an identity (or 1 x 1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class _DecoderBlock(nn.Module):
    """Upsample 2 x, concatenate the skip features, two Conv+BN+ReLU."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.convs = nn.Sequential(
            *_conv_bn_relu(in_channels + skip_channels, out_channels),
            *_conv_bn_relu(out_channels, out_channels),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.convs(torch.cat([x, skip], dim=1))


class ResNet18UNet(nn.Module):
    """(B, C, H, W) noisy image -> (B, C, H, W) denoised image (``x - predicted noise``).

    ``encoder_widths`` and ``blocks`` are the four ResNet stages (64-128-256-512, 2-2-2-2 is
    ResNet-18); ``decoder_widths`` are the five decoder outputs from 1/16 up to full resolution;
    ``full_resolution_width`` is the width of the input convolution used as the last skip.
    """

    conditioned: ClassVar[bool] = False

    def __init__(
        self,
        *,
        channels: int = 1,
        encoder_widths: tuple[int, ...] = (64, 128, 256, 512),
        blocks: tuple[int, ...] = (2, 2, 2, 2),
        decoder_widths: tuple[int, ...] = (256, 128, 64, 64, 32),
        full_resolution_width: int = 32,
    ) -> None:
        super().__init__()
        channels = positive_int("channels", channels)
        encoder_widths = positive_ints("encoder_widths", encoder_widths, length=4)
        blocks = positive_ints("blocks", blocks, length=4)
        decoder_widths = positive_ints("decoder_widths", decoder_widths, length=5)
        full_resolution_width = positive_int("full_resolution_width", full_resolution_width)
        self.size_multiple = 32

        self.full_resolution = nn.Sequential(*_conv_bn_relu(channels, full_resolution_width))
        stem_width = encoder_widths[0]
        self.stem = nn.Sequential(
            nn.Conv2d(channels, stem_width, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(stem_width),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        in_width = stem_width
        for index, (width, count) in enumerate(zip(encoder_widths, blocks, strict=True)):
            stride = 1 if index == 0 else 2
            layers = [BasicBlock(in_width, width, stride=stride)]
            layers += [BasicBlock(width, width) for _ in range(count - 1)]
            stages.append(nn.Sequential(*layers))
            in_width = width
        self.stages = nn.ModuleList(stages)

        # Skips from the bottom up: stages 3, 2, 1 (1/16, 1/8, 1/4), the stem (1/2), the input.
        skip_widths = (*encoder_widths[2::-1], stem_width, full_resolution_width)
        decoder_inputs = (encoder_widths[3], *decoder_widths[:-1])
        self.decoder = nn.ModuleList(
            _DecoderBlock(in_width, skip_width, out_width)
            for in_width, skip_width, out_width in zip(
                decoder_inputs, skip_widths, decoder_widths, strict=True
            )
        )
        self.noise = nn.Conv2d(decoder_widths[-1], channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        padded = pad_to_multiple(x, self.size_multiple)

        full = self.full_resolution(padded)  # 1
        stem = self.stem(padded)  # 1/2
        out = self.pool(stem)  # 1/4
        encoded = []
        for stage in self.stages:
            out = stage(out)
            encoded.append(out)
        stage1, stage2, stage3, bottom = encoded  # 1/4, 1/8, 1/16, 1/32

        out = bottom
        for block, skip in zip(self.decoder, (stage3, stage2, stage1, stem, full), strict=True):
            out = block(out, skip)
        noise = self.noise(out)
        return crop_to(padded - noise, height, width)
