"""Self-supervised objectives for adapting a conditioned network to a user's own noisy images.

Both are Neighbor2Neighbor (Huang, Wu, Wang and Yu, "Neighbor2Neighbor: Self-Supervised
Denoising from Single Noisy Images", CVPR 2021): the network denoises one random pixel of every
2 x 2 cell and is scored against a neighbouring pixel of the same cell, plus the regulariser that
ties this to the network's output on the whole image.  The target's noise must be independent
of the input's, or the network learns to keep it.

- ``"n2n"`` pairs neighbours one pixel apart: right for white noise, wrong for noise that is
  correlated over a few pixels (after a CT reconstruction kernel, k-space filtering or detector
  blur), where the network learns to keep the correlated part.
- ``"pd-n2n"`` first splits every patch into the ``pd_factor²`` pixel-shuffle sub-images
  (`meddenoise.models.pd_cond_unet.pd_split`, AP-BSN, Lee et al., CVPR 2022), so the pairs lie
  ``pd_factor`` pixels apart in the image, where such noise is nearly independent; the network
  is then run on the same sub-images at inference (`PDCondUNet`).  With ``pd_factor=1`` the two
  are the same.
"""

from __future__ import annotations

import torch

from meddenoise.losses import neighbour_subsample
from meddenoise.models.pd_cond_unet import PDCondUNet, pd_split

__all__ = ["OBJECTIVES", "neighbour_loss"]

# "synthetic" (the default of `adapt`) is supervised, not self-supervised: see
# `meddenoise.adapt.synthetic`.
OBJECTIVES = ("synthetic", "pd-n2n", "n2n")
# Neighbor2Neighbor's regulariser weight; 1.0 as `meddenoise.train`'s self-supervised mode.
REGULARISATION = 1.0


def neighbour_loss(
    network: PDCondUNet,
    patches: torch.Tensor,
    level_maps: torch.Tensor,
    generator: torch.Generator,
    *,
    regularisation: float = REGULARISATION,
) -> torch.Tensor:
    """Neighbor2Neighbor's loss on the network's own sub-images (its ``pd_factor``).

    Parameters
    ----------
    network : PDCondUNet
        The network being adapted; its ``pd_factor`` decides the sub-images (1: none).
    patches : torch.Tensor
        (B, C, P, P) noisy patches in [0, 1]; P a multiple of ``2 * pd_factor``.
    level_maps : torch.Tensor
        (B, 1, P, P) the noise level the network is told for each pixel at inference.
    generator : torch.Generator
        The only source of randomness (the sub-sampler's cells).
    regularisation : float
        Weight of the consistency term.

    Returns
    -------
    torch.Tensor
        The scalar loss.
    """
    factor = network.pd_factor
    sub_images = pd_split(patches, factor)
    sub_levels = pd_split(level_maps, factor)
    state = generator.get_state()
    first, second = neighbour_subsample(sub_images, generator)
    generator.set_state(state)  # the same cells for the level maps and the full output
    first_levels, _ = neighbour_subsample(sub_levels, generator)
    with torch.no_grad():
        full = network.denoise_sub_images(sub_images, sub_levels)
    generator.set_state(state)
    full_first, full_second = neighbour_subsample(full, generator)
    prediction = network.denoise_sub_images(first, first_levels)
    difference = prediction - second
    consistency = difference - (full_first - full_second)
    return torch.mean(difference**2) + regularisation * torch.mean(consistency**2)
