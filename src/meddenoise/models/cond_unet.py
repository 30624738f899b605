"""A fast noise-level-conditioned residual U-Net for CPUs (meddenoise's own design).

Built from three published ideas, chosen for quality per millisecond on a CPU (the measurements
behind them are in the project's research notes and docs/models.md):

- the noise level as an input map and a half-resolution body: FFDNet (Zhang, Zuo and Zhang,
  "FFDNet: Toward a Fast and Flexible Solution for CNN-Based Image Denoising", IEEE TIP
  27(9):4608-4622, 2018).  Pixel-unshuffle x 2 costs about 0.03 dB for 4.6 x fewer operations;
  one network serves every noise level, and runs blind with an estimated level;
- a U-Net body of residual blocks joined by strided convolutions, transposed convolutions and
  additive skips: DRUNet (Zhang, Li, Zuo, Zhang, Van Gool and Timofte, "Plug-and-Play Image
  Restoration with Deep Denoiser Prior", IEEE TPAMI 44(10), 2022), made smaller;
- no additive constants anywhere (bias-free convolutions, no normalisation): Mohan, Kadkhodaie,
  Simoncelli and Fernandez-Granda, "Robust and Interpretable Blind Image Denoising via Bias-Free
  Convolutional Neural Networks", ICLR 2020.  Such networks generalise beyond the noise levels seen
  in training, and this one is exactly homogeneous: ``net(a * x, a * sigma) == a * net(x, sigma)``
  for a > 0.

Layout: [x, noise_map] -> pixel-unshuffle by ``unshuffle`` (f, 2 by default) -> 3 x 3 conv to
``widths[0]`` -> per level, ``blocks`` residual blocks (conv-ReLU-conv plus identity) then a 2 x 2
stride-2 conv to the next width; at the bottom ``blocks[-1]`` blocks; back up with 2 x 2 stride-2
transposed convs, adding the encoder output of that level, then ``blocks`` blocks again -> 3 x 3
conv to f² C channels -> pixel-shuffle f = the predicted noise; the output is ``x - noise``.  With
the default widths (64, 128, 256), blocks (2, 2, 2) and f = 2 the body works at 1/2, 1/4 and 1/8
of the input resolution and costs about 190k multiply-accumulates per pixel; f = 4 with 1.5 x the
widths (`grey-fast`, issue 13) works at 1/4, 1/8, 1/16 for about 100k.  H and W are padded to a
multiple of ``f * 2 ** (len(widths) - 1)``.
"""

from __future__ import annotations

from itertools import pairwise
from typing import ClassVar

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from meddenoise.models.common import crop_to, pad_to_multiple, positive_int, positive_ints

__all__ = ["CondUNet"]


class ResidualBlock(nn.Module):
    """x + conv(relu(conv(x))), 3 x 3, bias-free."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return x + self.conv2(torch.relu(self.conv1(x)))
        # Inference: in place, the same values without two allocations per block (about 5 % of
        # an AVX2 CPU's time for grey-fast, where the elementwise passes are memory-bound).
        return self.conv2(torch.relu_(self.conv1(x))).add_(x)


def _blocks(width: int, count: int) -> nn.Sequential:
    return nn.Sequential(*(ResidualBlock(width) for _ in range(count)))


class CondUNet(nn.Module):
    """(B, C, H, W) noisy image and its noise level -> (B, C, H, W) denoised (``x - noise``).

    ``forward(x, noise_map)``: ``noise_map`` is the standard deviation of the noise in the units of
    ``x`` ([0, 1] for meddenoise), shaped (B, 1, H, W) or (B, C, H, W) per pixel, or (B, 1, 1, 1)
    or (B, C, 1, 1) per image; one channel is shared by all image channels.
    ``widths[i]`` and ``blocks[i]`` are the width and the number of residual blocks at level i
    (1/2, 1/4, 1/8, ... of the input resolution); the encoder and the decoder each get
    ``blocks[i]`` blocks at level i, the bottom level gets ``blocks[-1]`` once.
    """

    conditioned: ClassVar[bool] = True

    def __init__(
        self,
        *,
        channels: int = 1,
        widths: tuple[int, ...] = (64, 128, 256),
        blocks: tuple[int, ...] = (2, 2, 2),
        unshuffle: int = 2,
    ) -> None:
        super().__init__()
        channels = positive_int("channels", channels)
        widths = positive_ints("widths", widths)
        blocks = positive_ints("blocks", blocks, length=len(widths))
        self.unshuffle = positive_int("unshuffle", unshuffle)
        self.channels = channels
        self.size_multiple = self.unshuffle * 2 ** (len(widths) - 1)
        cells = self.unshuffle**2  # pixels of one input channel folded into the first level

        self.head = nn.Conv2d(cells * 2 * channels, widths[0], 3, padding=1, bias=False)
        levels = list(zip(widths[:-1], blocks[:-1], strict=True))
        self.encoder = nn.ModuleList(_blocks(width, count) for width, count in levels)
        self.downsample = nn.ModuleList(
            nn.Conv2d(width, next_width, 2, stride=2, bias=False)
            for width, next_width in pairwise(widths)
        )
        self.bottom = _blocks(widths[-1], blocks[-1])
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(next_width, width, 2, stride=2, bias=False)
            for width, next_width in pairwise(widths)
        )
        self.decoder = nn.ModuleList(_blocks(width, count) for width, count in levels)
        self.tail = nn.Conv2d(widths[0], cells * channels, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, noise_map: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        noise_map = self._expand_noise_map(noise_map, x)
        padded = pad_to_multiple(torch.cat([x, noise_map], dim=1), self.size_multiple)

        out = self.head(F.pixel_unshuffle(padded, self.unshuffle))
        skips = []
        for blocks, downsample in zip(self.encoder, self.downsample, strict=True):
            out = blocks(out)
            skips.append(out)
            out = downsample(out)
        out = self.bottom(out)
        for upsample, blocks in zip(reversed(self.upsample), reversed(self.decoder), strict=True):
            out = blocks(upsample(out) + skips.pop())
        noise = F.pixel_shuffle(self.tail(out), self.unshuffle)

        return x - crop_to(noise, height, width)

    def _expand_noise_map(self, noise_map: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """`noise_map` broadcast to the shape and dtype of `x`, after checking its shape."""
        batch, channels, height, width = x.shape
        if torch.compiler.is_exporting():
            # An exported graph declares its inputs' shapes instead (one symbolic size each):
            # these Python comparisons of sizes would each become a guard that fixes a size.
            return noise_map.to(x.dtype).expand(batch, channels, height, width)
        if channels != self.channels:
            raise ValueError(f"expected {self.channels} image channels, got {channels}")
        shape = tuple(noise_map.shape)
        if (
            len(shape) != 4
            or shape[0] not in (1, batch)
            or shape[1] not in (1, channels)
            or shape[2:] not in ((height, width), (1, 1))
        ):
            raise ValueError(
                f"noise_map must be (B, 1 or {channels}, H, W) or (B, 1 or {channels}, 1, 1) "
                f"for an image of shape {(batch, channels, height, width)}, got {shape}"
            )
        return noise_map.to(x.dtype).expand(batch, channels, height, width)


def widen_grey_weights(state: dict[str, torch.Tensor], channels: int) -> dict[str, torch.Tensor]:
    """Weights of a grey (1-channel) CondUNet turned into a `channels`-channel one.

    A warm start for a colour model: the head sees each image channel and each copy of the noise
    map with the grey weights divided by `channels` (so it first sees the channel mean, as the
    grey network saw its one channel), and the tail predicts the same noise for every channel.
    Everything between is unchanged.  Fine-tuning then learns what differs between channels.
    """
    grey_head, grey_tail = state["head.weight"], state["tail.weight"]
    if grey_head.shape[1] != 8 or grey_tail.shape[0] != 4:
        raise ValueError("widen_grey_weights takes the weights of a 1-channel CondUNet")
    widened = dict(state)
    # pixel_unshuffle puts input channel c's four sub-positions at 4c .. 4c + 3; the input is the
    # image's channels followed by as many copies of the noise map.
    image_part = grey_head[:, :4].repeat(1, channels, 1, 1) / channels
    noise_part = grey_head[:, 4:].repeat(1, channels, 1, 1) / channels
    widened["head.weight"] = torch.cat([image_part, noise_part], dim=1).contiguous()
    widened["tail.weight"] = grey_tail.repeat(channels, 1, 1, 1).contiguous()
    return widened
