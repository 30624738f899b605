"""Training data: images in [0, 1] from any supported format, patches, noise, paired folders.

Three ways to train (``DataConfig.mode``):

- ``synthetic``: clean images plus a noise model, fresh noise every epoch (seeded);
- ``paired``: ROOT/{train,val}/{low,high}/ matched by file name (the layout of the low-dose X-ray
  reference), both mapped to [0, 1] with the *high* image's range so their relation is kept;
- ``self-supervised``: noisy images only (Neighbor2Neighbor, in `train.py`).

Volumes (DICOM multi-frame or series, NIfTI) are cut into 2-D slices; near-constant slices are
dropped.  Images come in as float32 arrays (H, W, C) with C = 1 or 3.
"""

from __future__ import annotations

import glob
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from meddenoise.arrays import central_crop
from meddenoise.config import DataConfig, NoiseConfig, TrainConfig
from meddenoise.intensity import IntensityMapping, percentile_range
from meddenoise.io import Image, ImageError, format_for_suffix, read_image

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """Training data that cannot be used; the message names the file or field."""


def packaged_image(entry: str) -> np.ndarray | Path | None:
    """Images shipped by installed packages: ``pydicom:NAME``, ``skimage:NAME`` and
    ``matplotlib:NAME`` (its sample data, e.g. grace_hopper.jpg)."""
    if entry.startswith("pydicom:"):
        from pydicom.data import get_testdata_file

        path = get_testdata_file(entry.split(":", 1)[1], download=False)
        if path is None:
            raise DataError(f"{entry}: not installed (pip install pydicom-data)")
        return Path(path)
    if entry.startswith("skimage:"):
        import skimage.data

        name = entry.split(":", 1)[1]
        loader = getattr(skimage.data, name, None)
        if loader is None:
            raise DataError(f"{entry}: scikit-image has no image {name!r}")
        try:
            loaded = loader()
        except Exception as error:  # loaders that need a download fail offline
            raise DataError(f"{entry}: cannot load offline ({error})") from None
        # stereo_motorcycle gives (left, right, disparity): the left view is the image.
        return np.asarray(loaded[0] if isinstance(loaded, tuple) else loaded)
    if entry.startswith("matplotlib:"):
        from matplotlib import cbook

        name = entry.split(":", 1)[1]
        sample = Path(str(cbook.get_sample_data(name, asfileobj=False)))
        if not sample.is_file():
            raise DataError(f"{entry}: matplotlib has no sample image {name!r}")
        return sample
    return None


def _files(entry: str) -> list[Path]:
    path = Path(entry)
    if path.is_dir():
        return sorted(
            candidate
            for candidate in path.rglob("*")
            if candidate.is_file() and format_for_suffix(candidate) is not None
        )
    if path.is_file():
        return [path]
    # glob.glob, not Path().glob: the latter refuses absolute patterns such as /data/ct/*.dcm.
    matches = sorted(map(Path, glob.glob(entry))) if any(char in entry for char in "*?[") else []
    if not matches:
        raise DataError(f"{entry}: no such file, folder or packaged image")
    return matches


def _read_quietly(path: Path) -> Image:
    """`read_image` with pydicom's logger (it logs what it warns) held at ERROR meanwhile."""
    pydicom_logger = logging.getLogger("pydicom")
    level = pydicom_logger.level
    pydicom_logger.setLevel(logging.ERROR)
    try:
        return read_image(path)
    finally:
        pydicom_logger.setLevel(level)


def _planes(array: np.ndarray, layout: str) -> list[np.ndarray]:
    """2-D (H, W) or (H, W, 3) planes of an array of any layout."""
    if layout in ("grey", "colour"):
        return [array]
    if layout in ("volume", "colour_frames"):
        return list(array)
    if layout == "volumes":
        return [plane for volume in array for plane in volume]
    raise DataError(f"unsupported layout {layout}")


def to_unit_plane(
    plane: np.ndarray, *, mapping: IntensityMapping | None, channels: int
) -> np.ndarray:
    """Map one plane to [0, 1] (window or 0.1-99.9 percentile range, clipped) as (H, W, C)."""
    values = np.asarray(plane, dtype=np.float64)
    if channels == 1 and values.ndim == 3:
        values = values.mean(axis=-1)  # colour to grey: equal weights, no colour-space guess
    if channels == 3 and values.ndim == 2:
        raise DataError("a grey image was given to a 3-channel (RGB) training set")
    used = mapping or percentile_range(values)
    unit = np.clip(used.to_unit(values), 0.0, 1.0).astype(np.float32)
    return unit[..., None] if unit.ndim == 2 else unit


def _resize(unit: np.ndarray, side: int | None) -> np.ndarray:
    if side is None or unit.shape[:2] == (side, side):
        return unit
    from skimage.transform import resize

    return resize(unit, (side, side, unit.shape[-1]), anti_aliasing=True).astype(np.float32)


def _rescale(unit: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from skimage.transform import resize

    shape = (*size, unit.shape[-1])
    return np.clip(resize(unit, shape, anti_aliasing=True), 0, 1).astype(np.float32)


def load_images(entries: list[str], data: DataConfig) -> list[np.ndarray]:
    """Every plane of every entry as float32 (H, W, C) in [0, 1]."""
    mapping = IntensityMapping.from_window(*data.window) if data.window else None
    images: list[np.ndarray] = []
    for entry in entries:
        packaged = packaged_image(entry)
        if isinstance(packaged, np.ndarray):
            sources: list[tuple[str, np.ndarray, str]] = [
                (entry, packaged, "colour" if packaged.ndim == 3 else "grey")
            ]
        else:
            sources = []
            for path in [packaged] if isinstance(packaged, Path) else _files(entry):
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        # pydicom warns once per malformed element (bad_sequence.dcm: dozens of
                        # over-long UIDs) and would bury the training log: one line instead.
                        warnings.simplefilter("always")
                        image = _read_quietly(path)
                except ImageError as error:
                    raise DataError(str(error)) from None
                if caught:
                    logger.info(
                        "%s: %d reader warnings (first: %s)",
                        path.name,
                        len(caught),
                        caught[0].message,
                    )
                sources.append((str(path), image.array, image.meta.layout))
        for name, array, layout in sources:
            for plane in _planes(array, layout):
                if float(np.ptp(plane)) == 0.0:
                    continue  # blank slices teach nothing
                unit = _resize(
                    to_unit_plane(plane, mapping=mapping, channels=data.channels), data.resize
                )
                if min(unit.shape[:2]) < data.patch_size:
                    raise DataError(
                        f"{name}: {unit.shape[0]} x {unit.shape[1]} is smaller than "
                        f"data.patch_size {data.patch_size}"
                    )
                images.append(unit)
                for scale in data.scales:
                    side = (round(unit.shape[0] * scale), round(unit.shape[1] * scale))
                    if scale < 1 and min(side) >= data.patch_size:
                        images.append(_rescale(unit, side))
    if not images:
        raise DataError(f"no usable images in {entries}")
    return images


@dataclass
class PairedImages:
    low: list[np.ndarray]
    high: list[np.ndarray]
    names: list[str]


def load_paired(root: Path, split: str, data: DataConfig) -> PairedImages:
    """ROOT/SPLIT/{low,high}/ matched by name; a clear error for unmatched or mis-sized pairs."""
    low_folder, high_folder = root / split / "low", root / split / "high"
    for folder in (low_folder, high_folder):
        if not folder.is_dir():
            raise DataError(f"data.root: missing folder {folder}")
    low_names = {path.name for path in low_folder.iterdir() if path.is_file()}
    high_names = {path.name for path in high_folder.iterdir() if path.is_file()}
    unmatched = sorted(low_names ^ high_names)
    if unmatched:
        raise DataError(
            f"{root / split}: files without a partner in low/ or high/: {unmatched[:5]}"
        )
    if not low_names:
        raise DataError(f"{root / split}: no images")
    window = IntensityMapping.from_window(*data.window) if data.window else None
    pairs = PairedImages([], [], [])
    for name in sorted(low_names):
        try:
            low = read_image(low_folder / name)
            high = read_image(high_folder / name)
        except ImageError as error:
            raise DataError(str(error)) from None
        if low.array.shape != high.array.shape:
            raise DataError(
                f"{root / split}: {name} differs in size: low {low.array.shape}, "
                f"high {high.array.shape}"
            )
        for low_plane, high_plane in zip(
            _planes(low.array, low.meta.layout), _planes(high.array, high.meta.layout), strict=True
        ):
            mapping = window or percentile_range(np.asarray(high_plane, dtype=np.float64))
            pairs.low.append(
                _resize(
                    to_unit_plane(low_plane, mapping=mapping, channels=data.channels), data.resize
                )
            )
            pairs.high.append(
                _resize(
                    to_unit_plane(high_plane, mapping=mapping, channels=data.channels), data.resize
                )
            )
            pairs.names.append(name)
            if min(pairs.low[-1].shape[:2]) < data.patch_size:
                raise DataError(
                    f"{root / split}: {name} is {pairs.low[-1].shape[0]} x "
                    f"{pairs.low[-1].shape[1]}, smaller than data.patch_size {data.patch_size}"
                )
    return pairs


def dihedral(patch: np.ndarray, index: int) -> np.ndarray:
    """One of the 8 flips/rotations of a (H, W, C) patch."""
    rotated = np.rot90(patch, k=index % 4, axes=(0, 1))
    return np.ascontiguousarray(rotated[:, ::-1] if index >= 4 else rotated)


def sample_patches(
    images: list[np.ndarray],
    count: int,
    size: int,
    rng: np.random.Generator,
    *,
    augment: bool,
    partners: list[np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """`count` random patches (N, C, size, size), images chosen in proportion to their area.

    With `partners` (paired data), the same window and transform is cut from each partner.
    Returns (patches, partner patches or None, index of the source image of each patch).
    """
    areas = np.array([image.shape[0] * image.shape[1] for image in images], dtype=np.float64)
    choices = rng.choice(len(images), size=count, p=areas / areas.sum())
    channels = images[0].shape[-1]
    patches = np.empty((count, channels, size, size), dtype=np.float32)
    partner_patches = np.empty_like(patches) if partners is not None else None
    for slot, index in enumerate(choices):
        image = images[index]
        top = int(rng.integers(0, image.shape[0] - size + 1))
        left = int(rng.integers(0, image.shape[1] - size + 1))
        transform = int(rng.integers(0, 8)) if augment else 0
        window = (slice(top, top + size), slice(left, left + size))
        patches[slot] = dihedral(image[window], transform).transpose(2, 0, 1)
        if partners is not None and partner_patches is not None:
            partner_patches[slot] = dihedral(partners[index][window], transform).transpose(2, 0, 1)
    return patches, partner_patches, choices


def add_noise(
    clean: np.ndarray, noise: NoiseConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy copies of clean patches (N, C, H, W) and their noise levels in [0, 1] units.

    Gaussian sigma is drawn uniformly from `sigma_range`; Poisson-Gaussian photons log-uniformly
    from `photons_range` and read noise uniformly; "mixed" draws one of the two per patch.  The
    levels are (N,) noise stds (for Poisson-Gaussian, at the patch's mean intensity), or with
    ``noise.level_map == "signal-dependent"`` (N, 1, H, W) maps: constant for Gaussian noise, and
    for Poisson-Gaussian the std read from the smoothed noisy patch with the true parameters, as
    inference reads it with fitted ones (`meddenoise.estimate.poisson_gaussian_std_map`), or for
    a ``noise.constant_map_fraction`` of them the blind scalar estimate inference falls back to.
    """
    from meddenoise.estimate import poisson_gaussian_std_map
    from meddenoise.noise import make_noise

    noisy = np.empty_like(clean)
    maps = noise.level_map == "signal-dependent"
    shape = (len(clean), 1, *clean.shape[2:]) if maps else (len(clean),)
    levels = np.empty(shape, dtype=np.float32)
    for index, patch in enumerate(clean):
        kind = noise.kind
        if kind == "mixed":
            kind = "gaussian" if rng.random() < 0.5 else "poisson-gaussian"
        if kind == "gaussian":
            sigma = rng.uniform(*noise.sigma_range) / 255.0
            noisy[index] = make_noise("gaussian", sigma=sigma)(patch, rng)
            levels[index] = sigma
        elif kind == "poisson-gaussian":
            photons = float(np.exp(rng.uniform(*np.log(noise.photons_range))))
            read_noise = rng.uniform(*noise.read_noise_range)
            model = make_noise("poisson-gaussian", photons=photons, read_noise=read_noise)
            noisy[index] = model(patch, rng)
            if (
                maps
                and noise.constant_map_fraction > 0
                and (rng.random() < noise.constant_map_fraction)
            ):
                # What inference falls back to where the image is too small to fit a map.
                from meddenoise.estimate import blind_noise_level

                levels[index, 0] = blind_noise_level(noisy[index].mean(axis=0))
            elif maps:
                levels[index, 0] = poisson_gaussian_std_map(
                    noisy[index].mean(axis=0), 1.0 / photons, read_noise
                )
            else:
                levels[index] = np.sqrt(float(patch.mean()) / photons + read_noise**2)
        else:
            raise DataError(f"noise.kind {kind!r} is made per image, not per patch")
    return noisy, levels


def sample_blindly_levelled(
    images: list[np.ndarray],
    count: int,
    size: int,
    noise: NoiseConfig,
    rng: np.random.Generator,
    *,
    augment: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Noisy and clean patches (N, C, size, size) with the level inference would tell the network.

    Each patch is cut from a noisy window of ``noise.estimate_context`` pixels (smaller images:
    their short side), and its level is `meddenoise.estimate.blind_noise_level` of that window,
    not the true std.  The estimate reads fine texture as noise and is noisy itself on small
    windows; a network trained on it learns what a given estimate means, instead of
    over-smoothing textured images whose estimate is too high.  Returns (noisy, clean, levels).
    """
    from meddenoise.estimate import blind_noise_level

    areas = np.array([image.shape[0] * image.shape[1] for image in images], dtype=np.float64)
    choices = rng.choice(len(images), size=count, p=areas / areas.sum())
    channels = images[0].shape[-1]
    clean = np.empty((count, channels, size, size), dtype=np.float32)
    noisy = np.empty_like(clean)
    levels = np.empty(count, dtype=np.float32)
    for slot, index in enumerate(choices):
        image = images[index]
        side = min(noise.estimate_context, *image.shape[:2])
        top = int(rng.integers(0, image.shape[0] - side + 1))
        left = int(rng.integers(0, image.shape[1] - side + 1))
        transform = int(rng.integers(0, 8)) if augment else 0
        window = dihedral(image[top : top + side, left : left + side], transform)
        noisy_window = add_noise(window.transpose(2, 0, 1)[None], noise, rng)[0][0]
        levels[slot] = blind_noise_level(
            noisy_window[0] if channels == 1 else noisy_window.transpose(1, 2, 0)
        )
        inner_top = int(rng.integers(0, side - size + 1))
        inner_left = int(rng.integers(0, side - size + 1))
        rows, columns = slice(inner_top, inner_top + size), slice(inner_left, inner_left + size)
        inner = (slice(None), rows, columns)
        noisy[slot] = noisy_window[inner]
        clean[slot] = window.transpose(2, 0, 1)[inner]
    return noisy, clean, levels


# --- what one training run sees: the images, each epoch's batches, the validation set ---------

VALIDATION_STREAM = 1_000_003  # a fixed, separate random stream for validation noise


@dataclass
class TrainingData:
    """What one run trains and validates on (all float32 in [0, 1])."""

    mode: str
    train_images: list[np.ndarray]
    train_partners: list[np.ndarray] | None  # paired mode: the clean partner of each image
    val_noisy: list[np.ndarray]  # (C, H, W)
    val_clean: list[np.ndarray] | None  # None: no clean reference (self-supervised)
    val_levels: Sequence[float | np.ndarray]  # what the network is told: a std or a (1, H, W) map
    summary: dict[str, Any] = field(default_factory=dict)
    # The true noise std of each validation crop, std(noisy - clean), for the classical baselines
    # (the network's level can be a blind estimate or a map); empty: use the levels' RMS.
    val_sigmas: list[float] = field(default_factory=list)
    # Self-supervised: the noise level estimated once per training image (for conditioned nets).
    train_levels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    # Low-dose CT: the clean sinogram of each training image, computed on first use.
    sinograms: list[np.ndarray] = field(default_factory=list)


def _ct_noisy(
    clean: np.ndarray,
    config: TrainConfig,
    rng: np.random.Generator,
    unit_sinogram: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """A low-dose reconstruction of `clean` (H, W, 1) and its blind noise estimate.

    Dose and pixel spacing are drawn from the config's ranges.  The noise-free sinogram is
    dose-independent and linear in the spacing: pass a cached one computed at 1 mm spacing
    (`unit_sinogram`) to skip the forward projection.  The level handed to a conditioned network
    is the same blind estimate inference makes on the whole slice (FBP noise is correlated, so the
    estimate is not the noise std; training on it keeps training and use consistent).
    """
    from meddenoise.estimate import blind_noise_level
    from meddenoise.noise import LowDoseCT

    model = LowDoseCT(
        dose_fraction=rng.uniform(*config.noise.dose_fraction_range),
        pixel_spacing_mm=rng.uniform(*config.noise.pixel_spacing_range),
    )
    if unit_sinogram is None:
        sinogram = model.sinogram(clean[..., 0])
    else:
        sinogram = unit_sinogram * model.pixel_spacing_mm
    noisy = model.noisy_from_sinogram(sinogram, clean.shape[:2], rng)
    noisy = np.asarray(noisy, dtype=np.float32)
    return noisy[..., None], blind_noise_level(noisy)


def prepare_data(config: TrainConfig) -> TrainingData:
    """Load and map the images; build the fixed validation set."""
    from meddenoise.estimate import blind_noise_level

    data = config.data
    if data.mode == "paired":
        assert data.root is not None
        train = load_paired(data.root, "train", data)
        val = load_paired(data.root, "val", data)
        val_noisy = [central_crop(image, data.val_size).transpose(2, 0, 1) for image in val.low]
        val_clean = [central_crop(image, data.val_size).transpose(2, 0, 1) for image in val.high]
        levels = [
            float(np.std(noisy - clean)) for noisy, clean in zip(val_noisy, val_clean, strict=True)
        ]
        return TrainingData(
            "paired",
            train.low,
            train.high,
            val_noisy,
            val_clean,
            levels,
            {"train_pairs": len(train.low), "val_pairs": len(val.low), "root": str(data.root)},
        )
    train_images = load_images(data.train, data)
    val_sources = load_images(data.val, data) if data.val else []
    if data.mode == "self-supervised":
        from meddenoise.estimate import estimate_sigma

        val_noisy = [central_crop(image, data.val_size).transpose(2, 0, 1) for image in val_sources]
        return TrainingData(
            "self-supervised",
            train_images,
            None,
            val_noisy,
            None,
            [float(estimate_sigma(image[0])) for image in val_noisy],
            {"train_images": len(train_images), "val_images": len(val_noisy), "train": data.train},
            train_levels=np.array(
                [
                    estimate_sigma(image[..., 0] if image.shape[-1] == 1 else image)
                    for image in train_images
                ],
                dtype=np.float32,
            ),
        )
    if not val_sources:
        raise DataError("data.val: synthetic training needs validation images")
    wholes = [image for image in val_sources for _ in range(data.val_draws)]
    val_clean = [central_crop(image, data.val_size) for image in wholes]
    val_noisy, levels = [], []
    for index, clean in enumerate(val_clean):
        rng = np.random.default_rng([config.seed, VALIDATION_STREAM, index])
        if config.noise.kind == "low-dose-ct":
            # CT noise depends on the whole slice (every ray crosses it): simulate it, then crop,
            # as the benchmark does.
            noisy_whole, level = _ct_noisy(wholes[index], config, rng)
            noisy = central_crop(noisy_whole, data.val_size)
        else:
            noisy_batch, level_batch = add_noise(clean.transpose(2, 0, 1)[None], config.noise, rng)
            noisy, level = noisy_batch[0].transpose(1, 2, 0), level_batch[0]
            level = float(level) if level.ndim == 0 else level  # a (1, H, W) map
            if config.noise.level_source == "estimate":  # what inference tells the network
                level = blind_noise_level(noisy[..., 0] if noisy.shape[-1] == 1 else noisy)
        val_noisy.append(noisy.transpose(2, 0, 1))
        levels.append(level)
    return TrainingData(
        "synthetic",
        train_images,
        None,
        val_noisy,
        [clean.transpose(2, 0, 1) for clean in val_clean],
        levels,
        {
            "train_images": len(train_images),
            "val_images": len(val_sources),
            "val_draws": data.val_draws,
            "train": data.train,
            "val": data.val,
        },
        val_sigmas=[
            float(np.std(noisy - clean.transpose(2, 0, 1)))
            for noisy, clean in zip(val_noisy, val_clean, strict=True)
        ],
    )


def epoch_batches(
    data: TrainingData, config: TrainConfig, epoch: int
) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray]]:
    """(noisy, clean or None, levels) float32 batches for one epoch, seeded by the epoch.

    Levels are what a conditioned network is told: (B,) stds (per patch, true or with
    ``noise.level_source: estimate`` the blind estimate on a window around it; per slice for CT,
    where it is the blind estimate) or (B, 1, H, W) maps (``noise.level_map: signal-dependent``).
    """
    rng = np.random.default_rng([config.seed, epoch])
    size = config.data.patch_size
    count = config.data.patches_per_epoch
    augment = config.data.augment
    if data.mode == "paired":
        assert data.train_partners is not None
        noisy, clean, _ = sample_patches(
            data.train_images, count, size, rng, augment=augment, partners=data.train_partners
        )
        assert clean is not None
        levels = np.std(noisy - clean, axis=(1, 2, 3)).astype(np.float32)
    elif data.mode == "self-supervised":
        noisy, clean, sources = sample_patches(data.train_images, count, size, rng, augment=augment)
        levels = data.train_levels[sources]
    elif config.noise.kind == "low-dose-ct":
        if not data.sinograms:  # computed once per run: a pool of clean sinograms at 1 mm
            from meddenoise.noise import LowDoseCT

            projector = LowDoseCT(dose_fraction=1.0, pixel_spacing_mm=1.0)
            data.sinograms = [projector.sinogram(image[..., 0]) for image in data.train_images]
        draws = [
            _ct_noisy(image, config, rng, sinogram)
            for image, sinogram in zip(data.train_images, data.sinograms, strict=True)
        ]
        noisy, clean, sources = sample_patches(
            [noisy for noisy, _ in draws],
            count,
            size,
            rng,
            augment=augment,
            partners=data.train_images,
        )
        assert clean is not None
        levels = np.array([level for _, level in draws], dtype=np.float32)[sources]
    elif config.noise.level_source == "estimate":
        noisy, clean, levels = sample_blindly_levelled(
            data.train_images, count, size, config.noise, rng, augment=augment
        )
    else:
        clean, _, _ = sample_patches(data.train_images, count, size, rng, augment=augment)
        noisy, levels = add_noise(clean, config.noise, rng)
    if config.noise.level_jitter > 0:
        # The network is told a slightly wrong level, as a blind estimate would be.
        factors = np.exp(rng.normal(0.0, config.noise.level_jitter, len(levels)))
        levels = (levels * factors.reshape(-1, *[1] * (levels.ndim - 1))).astype(np.float32)
    order = rng.permutation(count)
    for first in range(0, count, config.batch_size):
        chosen = order[first : first + config.batch_size]
        yield noisy[chosen], None if clean is None else clean[chosen], levels[chosen]


def channels_last(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W) for one channel, (H, W, 3) for three (the metrics' layouts)."""
    return image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)


def oracle_sigma(data: TrainingData, index: int) -> float:
    """The true noise std of validation crop `index` (for classical methods), else the RMS of
    the level the network is given."""
    if data.val_sigmas:
        return data.val_sigmas[index]
    return float(np.sqrt(np.mean(np.square(data.val_levels[index]))))
