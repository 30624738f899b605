"""`CondUNet` run on pixel-shuffle-downsampled sub-images: the network `meddenoise adapt` writes.

Pixel-shuffle downsampling (PD) with stride ``s`` splits an image into ``s²`` sub-images, the
pixels ``x[i::s, j::s]`` for each offset ``(i, j)``; neighbouring pixels of a sub-image lie ``s``
pixels apart in the image, so noise that is spatially correlated over fewer than ``s`` pixels
(CT reconstruction kernels, k-space filtering, detector blur) is nearly independent from pixel
to pixel inside a sub-image.  Lee, Son and Lee, "AP-BSN: Self-Supervised Denoising for
Real-World Images via Asymmetric PD and Blind-Spot Network", CVPR 2022, train and run a
denoiser on such sub-images.  `PDCondUNet` does the same at inference: PD, the `CondUNet` on
every sub-image (as a batch, the noise map split with it), the inverse PD.  A network adapted
with `meddenoise.adapt` learns on the sub-images, so it must see sub-images at inference too;
with ``pd_factor=1`` it is exactly `CondUNet`.  The weights have `CondUNet`'s names, so a
shipped model's weights load into it unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

from meddenoise.models.common import crop_to, positive_int
from meddenoise.models.cond_unet import CondUNet

__all__ = ["PDCondUNet", "pd_join", "pd_split"]


def pd_split(images: torch.Tensor, factor: int) -> torch.Tensor:
    """(B, C, H, W) with H, W multiples of `factor` -> (B * factor², C, H / f, W / f) sub-images.

    Sub-image ``b * factor² + i * factor + j`` holds ``images[b, :, i::factor, j::factor]``.
    A permutation of the pixels; `pd_join` is its inverse.
    """
    batch, channels, height, width = images.shape
    if height % factor or width % factor:
        raise ValueError(f"sides {height} x {width} are not multiples of the PD factor {factor}")
    if factor == 1:
        return images
    # pixel_unshuffle puts offset (i, j) of channel c at channel c * f² + i * f + j.
    unshuffled = F.pixel_unshuffle(images, factor)
    grouped = unshuffled.reshape(batch, channels, factor * factor, height // factor, -1)
    return grouped.transpose(1, 2).reshape(batch * factor * factor, channels, height // factor, -1)


def pd_join(sub_images: torch.Tensor, factor: int) -> torch.Tensor:
    """The inverse of `pd_split`: (B * factor², C, h, w) -> (B, C, h * f, w * f)."""
    if factor == 1:
        return sub_images
    count, channels, height, width = sub_images.shape
    batch = count // (factor * factor)
    grouped = sub_images.reshape(batch, factor * factor, channels, height, width).transpose(1, 2)
    return F.pixel_shuffle(
        grouped.reshape(batch, channels * factor * factor, height, width), factor
    )


class PDCondUNet(CondUNet):
    """A `CondUNet` applied to the ``pd_factor²`` pixel-shuffle sub-images of its input.

    ``forward(x, noise_map)`` as `CondUNet`'s: the map (per pixel or per image) is split with
    the image.  Sides that are not multiples of ``pd_factor`` are padded by reflection (by
    replication where the image is too small to reflect) and the result cropped back.
    """

    def __init__(
        self,
        *,
        channels: int = 1,
        widths: tuple[int, ...] = (64, 128, 256),
        blocks: tuple[int, ...] = (2, 2, 2),
        pd_factor: int = 2,
    ) -> None:
        super().__init__(channels=channels, widths=widths, blocks=blocks)
        self.pd_factor = positive_int("pd_factor", pd_factor)

    def denoise_sub_images(self, x: torch.Tensor, noise_map: torch.Tensor) -> torch.Tensor:
        """The plain `CondUNet` forward, on images that are already sub-images."""
        return super().forward(x, noise_map)

    def forward(self, x: torch.Tensor, noise_map: torch.Tensor) -> torch.Tensor:
        factor = self.pd_factor
        if factor == 1:
            return super().forward(x, noise_map)
        height, width = x.shape[-2:]
        noise_map = self._expand_noise_map(noise_map, x)[:, :1]
        pad_height, pad_width = (-height) % factor, (-width) % factor
        joined = torch.cat([x, noise_map], dim=1)
        if pad_height or pad_width:
            mode = "reflect" if pad_height < height and pad_width < width else "replicate"
            joined = F.pad(joined, (0, pad_width, 0, pad_height), mode=mode)
        sub_images = pd_split(joined, factor)
        denoised = super().forward(sub_images[:, :-1], sub_images[:, -1:])
        return crop_to(pd_join(denoised, factor), height, width)
