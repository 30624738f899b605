"""The scripts of a meddenoise MONAI bundle: plain numpy and torch, no meddenoise needed.

Copied into the bundle's ``scripts/`` folder by ``meddenoise export MODEL --format monai-bundle``
(with ``network.py``, the network's own source, written beside them):

- ``noise_level.py``: the blind noise estimate the network is told (patch PCA; for networks
  trained on per-pixel maps, a Poisson-Gaussian fit and its std map), as meddenoise computes it;
- ``tiling.py``: tiled inference with overlapping, blended tiles;
- ``denoise.py``: `BundleDenoiser` (noise map + tiling + channel handling) and a command,
  ``python -m scripts.denoise INPUT.npy OUTPUT.npy``, run from the bundle's folder.

Inside meddenoise this package is only a template: nothing in meddenoise imports it.
"""
