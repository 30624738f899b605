"""The noise level a conditioned meddenoise network is told, in numpy alone.

The same computation as meddenoise's ``estimate.blind_noise_level`` and ``blind_noise_map``
(meddenoise uses scipy for two filters; they are written out here with numpy):

- `blind_noise_level`: the standard deviation of white Gaussian noise by patch PCA (Chen, Zhu &
  Heng, "An Efficient Statistical Method for Image Noise Level Estimation", ICCV 2015) on at
  most 512 x 512 pixels of the image (four windows of a larger one);
- `blind_noise_map`: for networks trained on per-pixel maps (``level_map: signal-dependent``), a
  Poisson-Gaussian fit ``variance = gain * signal + sigma**2`` (after Foi et al., IEEE TIP 2008)
  and its per-pixel std map; None when the noise is white (the caller then uses the scalar).

Images are float arrays in the network's units ([0, 1] for meddenoise).
"""

from __future__ import annotations

import numpy as np

PATCH_SIZE = 8
MAX_PATCHES = 200_000
ESTIMATE_PIXELS = 512 * 512
MIN_RESIDUALS_PER_BIN = 256
SIGNAL_SMOOTHING = 2.0
_LAPLACIAN = np.array([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]]) / np.sqrt(20.0)


def _tail_variance(eigenvalues: np.ndarray) -> float:
    """Mean of the longest prefix of ascending `eigenvalues` whose mean is also its median."""
    for count in range(eigenvalues.size, 0, -1):
        prefix = eigenvalues[:count]
        mean = prefix.mean()
        if np.count_nonzero(prefix > mean) == np.count_nonzero(prefix < mean):
            return float(mean)
    return float(eigenvalues[0])


def _window_sum(counts: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    """Exact sums of integer `counts` over every `window`-sized block."""
    table = np.zeros((counts.shape[0] + 1, counts.shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = counts.cumsum(axis=0).cumsum(axis=1)
    rows, columns = window
    return (
        table[rows:, columns:]
        - table[:-rows, columns:]
        - table[rows:, :-columns]
        + table[:-rows, :-columns]
    )


def _varying_windows(plane: np.ndarray, patch_size: int) -> np.ndarray:
    """Which patch windows of `plane` are not constant (constant ones are noise-free padding)."""
    horizontal = _window_sum(plane[:, 1:] != plane[:, :-1], (patch_size, patch_size - 1))
    vertical = _window_sum(plane[1:, :] != plane[:-1, :], (patch_size - 1, patch_size))
    return (horizontal + vertical) > 0


def pca_sigma(planes: list[np.ndarray], patch_size: int = PATCH_SIZE) -> float:
    """Noise std of 2-D float64 `planes` (patches pooled) by patch PCA; 0.0 if all constant."""
    patch_count = sum(
        (plane.shape[0] - patch_size + 1) * (plane.shape[1] - patch_size + 1) for plane in planes
    )
    stride = max(1, int(np.ceil(np.sqrt(patch_count / MAX_PATCHES))))
    blocks = []
    for plane in planes:
        height = plane.shape[0] - patch_size + 1
        width = plane.shape[1] - patch_size + 1
        patches = np.empty(
            (patch_size * patch_size, len(range(0, height, stride)) * len(range(0, width, stride)))
        )
        for row in range(patch_size):
            for column in range(patch_size):
                offset = plane[row : row + height : stride, column : column + width : stride]
                patches[row * patch_size + column] = offset.ravel()
        if stride == 1:
            varying = _varying_windows(plane, patch_size).ravel()
        else:
            varying = np.ptp(patches, axis=0) > 0
        blocks.append(patches if varying.all() else patches[:, varying])
    patches = np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]
    patches = patches - patches[0].mean() if patches.size else patches
    count = patches.shape[1]
    if count < 2:
        return 0.0
    mean = patches.mean(axis=1)
    covariance = patches @ patches.T / count - np.outer(mean, mean)
    eigenvalues = np.clip(np.linalg.eigvalsh(covariance), 0.0, None)
    return float(np.sqrt(_tail_variance(eigenvalues)))


def estimate_windows(image: np.ndarray, pixels: int = ESTIMATE_PIXELS) -> np.ndarray:
    """At most `pixels` of `image` (H, W) or (H, W, C): whole, its middle, or four windows."""
    height, width = image.shape[:2]
    if height * width <= pixels:
        return image
    side = int(np.sqrt(pixels / 4))
    if min(height, width) < 2 * side:
        if height < width:
            keep = max(pixels // height, 1)
            start = (width - keep) // 2
            return image[:, start : start + keep]
        keep = max(pixels // width, 1)
        start = (height - keep) // 2
        return image[start : start + keep]
    planes: list[np.ndarray] = []
    for row in (height // 4, 3 * height // 4):
        for column in (width // 4, 3 * width // 4):
            top = min(max(row - side // 2, 0), height - side)
            left = min(max(column - side // 2, 0), width - side)
            window = image[top : top + side, left : left + side]
            planes.extend([window] if window.ndim == 2 else np.moveaxis(window, -1, 0))
    return np.stack(planes)


def _planes(windows: np.ndarray, colour: bool) -> list[np.ndarray]:
    windows = windows.astype(np.float64, copy=False)
    if windows.ndim == 2:
        return [windows]
    if colour and windows.ndim == 3 and windows.shape[-1] == 3:
        return [windows[..., channel] for channel in range(3)]
    return list(windows)


def blind_noise_level(image: np.ndarray) -> float:
    """The noise std for `image` (H, W) or (H, W, 3): PCA on `estimate_windows` (sides >= 8)."""
    image = np.asarray(image)
    if not np.all(np.isfinite(image)):
        raise ValueError("image contains NaN or Inf")
    windows = estimate_windows(image)
    colour = image.ndim == 3 and windows.ndim == 3 and windows.shape[-1] == image.shape[-1]
    planes = _planes(windows, colour)
    if min(planes[0].shape) < PATCH_SIZE:
        raise ValueError(f"image too small for the noise estimate (sides >= {PATCH_SIZE})")
    return pca_sigma(planes)


def _reflect_filter(plane: np.ndarray, kernel: np.ndarray, axis: int) -> np.ndarray:
    """1-D correlation of float64 `plane` with `kernel` along `axis`, edges mirrored (d c b a |
    a b c d), as scipy.ndimage's mode "reflect"."""
    radius = kernel.size // 2
    padding = [(0, 0), (0, 0)]
    padding[axis] = (radius, radius)
    padded = np.pad(plane, padding, mode="symmetric")
    length = plane.shape[axis]
    result = np.zeros(plane.shape, dtype=np.float64)
    for index, weight in enumerate(kernel):
        result += weight * np.take(padded, range(index, index + length), axis=axis)
    return result


def smoothed_signal(noisy: np.ndarray) -> np.ndarray:
    """A Gaussian blur (std 2 px, radius 8) of a 2-D image, float32 after each axis."""
    radius = int(4.0 * SIGNAL_SMOOTHING + 0.5)
    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * offsets**2 / SIGNAL_SMOOTHING**2)
    kernel /= kernel.sum()
    plane = np.asarray(noisy, dtype=np.float32)
    for axis in (0, 1):
        plane = _reflect_filter(plane.astype(np.float64), kernel, axis).astype(np.float32)
    return plane


def _laplacian(plane: np.ndarray) -> np.ndarray:
    padded = np.pad(plane, 1, mode="symmetric")
    height, width = plane.shape
    result = np.zeros(plane.shape, dtype=np.float64)
    for row in range(3):
        for column in range(3):
            weight = _LAPLACIAN[row, column]
            if weight != 0.0:
                result += weight * padded[row : row + height, column : column + width]
    return result


def poisson_gaussian_fit(image: np.ndarray, bins: int = 16) -> tuple[float, float]:
    """(gain, sigma) of ``variance = gain * signal + sigma**2`` fitted to a 2-D image's noise."""
    plane = np.asarray(image, dtype=np.float64)
    residual = _laplacian(plane)[2:-2, 2:-2].ravel()
    signal = smoothed_signal(plane)[2:-2, 2:-2].ravel().astype(np.float64)
    keep = residual != 0.0
    residual, signal = residual[keep], signal[keep]
    if residual.size < MIN_RESIDUALS_PER_BIN * bins:
        raise ValueError("too few varying pixels to fit signal-dependent noise")
    order = np.argsort(signal)
    means, variances, counts = [], [], []
    for chunk in np.array_split(order, bins):
        values = residual[chunk]
        spread = 1.4826 * np.median(np.abs(values - np.median(values)))
        means.append(signal[chunk].mean())
        variances.append(spread**2)
        counts.append(chunk.size)
    means_array, variances_array = np.array(means), np.array(variances)
    counts_array = np.array(counts, dtype=np.float64)
    design = np.stack([means_array, np.ones_like(means_array)], axis=1)
    expected = variances_array
    gain, offset = 0.0, float(np.mean(variances_array))
    for _ in range(3):
        weights = counts_array / np.maximum(expected, 1e-20) ** 2
        root = np.sqrt(weights)
        gain, offset = np.linalg.lstsq(design * root[:, None], variances_array * root, rcond=None)[
            0
        ]
        if gain < 0:
            gain, offset = 0.0, float(np.average(variances_array, weights=weights))
        elif offset < 0:
            offset = 0.0
            leverage = float(np.sum(weights * means_array**2))
            gain = (
                float(np.sum(weights * means_array * variances_array)) / leverage
                if leverage > 0
                else 0.0
            )
        expected = np.maximum(gain * means_array + offset, 1e-20)
    return float(gain), float(np.sqrt(offset))


def blind_noise_map(plane: np.ndarray) -> np.ndarray | None:
    """A per-pixel noise std map (float32) for a grey 2-D `plane` with signal-dependent noise.

    None where the signal-dependent part is under 5 % of the variance at the mean intensity, or
    the image is too small to fit: the scalar `blind_noise_level` is then the better input.
    """
    windows = estimate_windows(plane)
    strip = np.concatenate(list(windows), axis=1) if windows.ndim == 3 else windows
    if strip.ndim != 2 or min(strip.shape) < 8:
        return None
    try:
        gain, sigma = poisson_gaussian_fit(strip)
    except ValueError:
        return None
    signal_variance = gain * max(float(np.mean(plane)), 0.0)
    if signal_variance <= 0.05 * (signal_variance + sigma**2):
        return None
    signal = np.clip(smoothed_signal(plane), 0.0, None)
    return np.sqrt(gain * signal + sigma**2).astype(np.float32)
