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
from typing import TYPE_CHECKING, Any

import numpy as np

from meddenoise.arrays import central_crop
from meddenoise.config import DataConfig, NoiseConfig, TrainConfig
from meddenoise.intensity import IntensityMapping, percentile_range
from meddenoise.io import Image, ImageError, format_for_suffix, pixel_spacing_mm, read_image
from meddenoise.splits import PACKAGE_FILE_PREFIXES

if TYPE_CHECKING:
    from meddenoise.noise import LowDoseCT

logger = logging.getLogger(__name__)


PHANTOM_STREAM = 1_000_033  # phantom:abdomen:SEED draws from its own stream, apart from noise


class DataError(ValueError):
    """Training data that cannot be used; the message names the file or field."""


def noise_free(entry: str) -> bool:
    """Whether a data entry is exactly noise-free (a digital phantom), so that no clean-reference
    step may touch it: BM3D told a blind level reads fine anatomy as noise (on the abdomen
    phantom of seed 101 the level read 18 HU and BM3D changed it by up to 53 HU)."""
    return entry.startswith("phantom:")


def packaged_image(entry: str) -> np.ndarray | Path | None:
    """Images shipped by installed packages: ``pydicom:NAME``, ``skimage:NAME``,
    ``matplotlib:NAME`` (its sample data, e.g. grace_hopper.jpg, or the raw MR slice
    s1045.ima.gz) and ``nibabel:PATH`` / ``nilearn:PATH`` / ``dipy:PATH`` (a file inside the
    installed package, PATH relative to its folder, e.g. ``nibabel:tests/data/example4d.nii.gz``;
    a ``.npy`` file is returned as its array, read without unpickling), and
    ``phantom:abdomen:SEED``, a digital abdomen CT phantom in HU (`meddenoise.phantoms`)."""
    prefix = entry.split(":", 1)[0]
    if prefix in PACKAGE_FILE_PREFIXES and ":" in entry:
        import importlib.util

        spec = importlib.util.find_spec(prefix)  # locates the package without importing it
        folders = list(spec.submodule_search_locations or []) if spec is not None else []
        path = Path(folders[0], entry.split(":", 1)[1]) if folders else None
        if path is None or not path.is_file():
            raise DataError(f"{entry}: not installed (pip install {prefix}, or meddenoise[dev])")
        if path.suffix == ".npy":  # dipy's T1 slice: a bare array, no image format to read
            try:
                array = np.load(path, allow_pickle=False)
            except ValueError as error:  # an object array would need unpickling: refused
                raise DataError(f"{entry}: not a plain numeric array ({error})") from None
            if array.ndim != 2 or not np.issubdtype(array.dtype, np.number):
                raise DataError(f"{entry}: expected a 2-D numeric image, got {array.shape}")
            return array
        return path
    if entry == "matplotlib:s1045.ima.gz":  # raw big-endian 16-bit, 256 x 256, no header
        import gzip

        from matplotlib import cbook

        sample = Path(str(cbook.get_sample_data("s1045.ima.gz", asfileobj=False)))
        raw = gzip.decompress(sample.read_bytes())
        return np.frombuffer(raw, dtype=">u2").reshape(256, 256).astype(np.uint16)
    if noise_free(entry):  # phantom:abdomen[-detailed]:SEED, a digital phantom in HU
        from meddenoise.phantoms import abdomen_phantom

        kind, _, seed = entry.split(":", 1)[1].partition(":")
        if kind not in ("abdomen", "abdomen-detailed") or not seed.isdigit():
            raise DataError(
                f"{entry}: expected phantom:abdomen:SEED or phantom:abdomen-detailed:SEED "
                "(SEED a whole number)"
            )
        detail = (
            np.random.default_rng([PHANTOM_STREAM, int(seed), 1])
            if kind == "abdomen-detailed"
            else None
        )
        phantom = abdomen_phantom(np.random.default_rng([PHANTOM_STREAM, int(seed)]), detail=detail)
        return phantom.astype(np.float64)
    if entry.startswith("pydicom:"):
        from pydicom.data import get_testdata_file

        found = get_testdata_file(entry.split(":", 1)[1], download=False)
        if not isinstance(found, str):
            raise DataError(f"{entry}: not installed (pip install pydicom-data)")
        return Path(found)
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
    return load_images_with_spacing(entries, data)[0]


def load_images_with_spacing(
    entries: list[str], data: DataConfig
) -> tuple[list[np.ndarray], list[float | None]]:
    """`load_images` and each image's pixel spacing in mm as it is used (after `data.resize` and
    `data.scales`), None where the file records none (low-dose CT's own-spacing draws)."""
    mapping = IntensityMapping.from_window(*data.window) if data.window else None
    images: list[np.ndarray] = []
    spacings: list[float | None] = []
    for entry in entries:
        packaged = packaged_image(entry)
        if isinstance(packaged, np.ndarray):
            sources: list[tuple[str, np.ndarray, str, float | None]] = [
                (entry, packaged, "colour" if packaged.ndim == 3 else "grey", None)
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
                spacing = pixel_spacing_mm(image)
                sources.append((str(path), image.array, image.meta.layout, spacing))
        for name, array, layout, spacing in sources:
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
                if spacing is not None:  # a resized plane's pixels cover more (or less)
                    spacing *= plane.shape[0] / unit.shape[0]
                images.append(unit)
                spacings.append(spacing)
                for scale in data.scales:
                    side = (round(unit.shape[0] * scale), round(unit.shape[1] * scale))
                    if scale < 1 and min(side) >= data.patch_size:
                        images.append(_rescale(unit, side))
                        spacings.append(None if spacing is None else spacing / scale)
    if not images:
        raise DataError(f"no usable images in {entries}")
    return images, spacings


def clean_reference(image: np.ndarray) -> np.ndarray:
    """`image` made nearly noise-free before noise is simulated on it: BM3D, once, told the
    blind-estimated noise level of the image (`meddenoise.estimate.blind_noise_level`).

    Real slices carry their own (full-dose) noise; a simulation that adds noise of the same size
    on top scores a network that removes both against a reference that still holds one
    (docs/ct-physics.md).  `image` is (H, W) or (H, W, C) float in [0, 1]; the result has its
    shape, float32.  The caller keeps the original for the no-harm check (a method applied to
    the real, unsimulated image).  Needs the ``bm3d`` extra.
    """
    from meddenoise.classical import make_denoiser
    from meddenoise.estimate import blind_noise_level

    array = np.asarray(image, dtype=np.float32)
    plane = array[..., 0] if array.ndim == 3 and array.shape[-1] == 1 else array
    sigma = blind_noise_level(plane)
    if not sigma > 0:
        return array.copy()
    cleaned = make_denoiser("bm3d", sigma=sigma)(plane)
    return np.asarray(cleaned, dtype=np.float32).reshape(array.shape)


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
    partner_patches = (
        None
        if partners is None
        else np.empty((count, partners[0].shape[-1], size, size), dtype=np.float32)
    )
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
    # Low-dose CT: each training image's own pixel spacing in mm (None: unknown), and the
    # noise-free reconstructions (`noise.ct_target: noise-free-fbp`) by (image, filter, views).
    train_spacings: list[float | None] = field(default_factory=list)
    ct_targets: dict[tuple[int, str, int], np.ndarray] = field(default_factory=dict)


def ct_noise_model(
    noise: NoiseConfig, rng: np.random.Generator, own_spacing: float | None = None
) -> LowDoseCT:
    """One low-dose CT draw from the config's ranges: dose, pixel spacing (the slice's own for
    a fraction `noise.own_spacing_fraction` of draws where it is known), filter and views.

    Draws beyond dose and spacing are made only where the config offers a choice, so configs
    written before them draw the same numbers as before.
    """
    from meddenoise.noise import LowDoseCT

    dose = rng.uniform(*noise.dose_fraction_range)
    spacing = rng.uniform(*noise.pixel_spacing_range)
    fraction = noise.own_spacing_fraction
    if own_spacing is not None and fraction > 0 and rng.random() < fraction:
        spacing = own_spacing
    filters, views = noise.ct_filters, noise.ct_views
    return LowDoseCT(
        dose_fraction=dose,
        pixel_spacing_mm=spacing,
        full_dose_photons=noise.ct_full_dose_photons,
        filter_name=filters[int(rng.integers(len(filters)))] if len(filters) > 1 else filters[0],
        views=int(views[int(rng.integers(len(views)))] if len(views) > 1 else views[0]),
    )


def _ct_noisy(
    clean: np.ndarray,
    config: TrainConfig,
    rng: np.random.Generator,
    unit_sinogram: np.ndarray | None = None,
    own_spacing: float | None = None,
    targets: dict[tuple[str, int], np.ndarray] | None = None,
) -> tuple[np.ndarray, float | np.ndarray, np.ndarray]:
    """A low-dose reconstruction of `clean` (H, W, 1), its blind noise estimate and its target.

    The draw comes from `ct_noise_model`.  The noise-free sinogram is dose-independent and
    linear in the spacing: pass a cached one computed at 1 mm spacing and the config's largest
    number of views (`unit_sinogram`) to skip the forward projection.  The level handed to a
    conditioned network is the same blind estimate inference makes on the whole slice (FBP noise
    is correlated, so the estimate is not the noise std; training on it keeps training and use
    consistent); with ``noise.level_map: local-flat-windows`` it is the (H, W) map
    `local_noise_std_map` reads on the noisy slice, as inference does.  The target is `clean`,
    or with ``noise.ct_target: noise-free-fbp`` the noise-free reconstruction through the same
    views and filter (it depends on neither dose nor spacing: `targets` caches it by filter and
    views).
    """
    from meddenoise.estimate import blind_noise_level

    model = ct_noise_model(config.noise, rng, own_spacing)
    if unit_sinogram is None:
        sinogram = model.sinogram(clean[..., 0])
    else:
        step = unit_sinogram.shape[1] // model.views
        sinogram = unit_sinogram[:, ::step] * model.pixel_spacing_mm
    noisy = model.noisy_from_sinogram(sinogram, clean.shape[:2], rng)
    noisy = np.asarray(noisy, dtype=np.float32)
    target = clean
    if config.noise.ct_target == "noise-free-fbp":
        key = (model.filter_name, model.views)
        cached = None if targets is None else targets.get(key)
        if cached is None:
            cached = model.noise_free_from_sinogram(sinogram, clean.shape[:2])[..., None]
            cached = np.asarray(cached, dtype=np.float32)
            if targets is not None:
                targets[key] = cached
        target = cached
    if config.noise.level_map == "local-flat-windows":
        from meddenoise.estimate import local_noise_std_map

        return noisy[..., None], local_noise_std_map(noisy), target
    return noisy[..., None], blind_noise_level(noisy), target


# Water ellipse (mm, across x down) that a CT validation crop smaller than a body is placed in:
# 32 x 24 cm has about the attenuation of the 30 cm water cylinder the dose is calibrated on
# (an average adult abdomen, docs/ct-physics.md).
BODY_MM = (320.0, 240.0)


def in_body(image: np.ndarray, spacing_mm: float | None, window: tuple[float, float]) -> np.ndarray:
    """A CT crop (H, W, 1) physically smaller than `BODY_MM`, centred in a water ellipse of that
    size at its own pixel spacing (air around it), so that its rays cross a body's worth of
    tissue as they did in the scan it was cut from; unchanged when larger or its spacing unknown.

    Calibrated CT noise depends on the whole slice: CT_small (128 px at 0.66 mm, a crop around
    the spine of a 34 cm body field) simulated alone is 8.5 cm of tissue and shows 0.6-4 HU, far
    milder than any grid cell.  `central_crop` of the result to the crop's size returns it.
    """
    height, width = image.shape[:2]
    if spacing_mm is None or (
        width * spacing_mm >= BODY_MM[0] and height * spacing_mm >= BODY_MM[1]
    ):
        return image
    across, down = (mm / spacing_mm for mm in BODY_MM)
    side = int(np.ceil(max(across, down, height, width))) + 2
    side += (side - height) % 2  # central_crop finds the crop where it was put
    grid_y, grid_x = np.mgrid[:side, :side] - (side - 1) / 2
    inside = (grid_x / (across / 2)) ** 2 + (grid_y / (down / 2)) ** 2 <= 1
    water = float(IntensityMapping.from_window(*window).to_unit(np.zeros(1))[0])
    field = np.where(inside, np.float32(water), np.float32(0.0))[..., None]
    top, left = (side - height) // 2, (side - width) // 2
    field[top : top + height, left : left + width] = image
    return field


def _references(
    entries: list[str], data: DataConfig
) -> tuple[list[np.ndarray], list[float | None]]:
    """`load_images_with_spacing`, each real image made nearly noise-free first when
    `data.clean_reference` asks (the simulated noise is then the only noise); phantoms, already
    noise-free, are left as drawn."""
    cleaning = data.mode == "synthetic" and data.clean_reference == "bm3d"
    images: list[np.ndarray] = []
    spacings: list[float | None] = []
    for entry in entries:
        loaded, loaded_spacings = load_images_with_spacing([entry], data)
        if cleaning and not noise_free(entry):
            loaded = [clean_reference(image) for image in loaded]
        images += loaded
        spacings += loaded_spacings
    return images, spacings


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
    train_images, train_spacings = _references(data.train, data)
    val_sources, val_spacings = _references(data.val, data) if data.val else ([], [])
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
    whole_spacings = [spacing for spacing in val_spacings for _ in range(data.val_draws)]
    val_clean = [central_crop(image, data.val_size) for image in wholes]
    val_noisy, val_levels = [], []
    for index, clean in enumerate(val_clean):
        rng = np.random.default_rng([config.seed, VALIDATION_STREAM, index])
        if config.noise.kind == "low-dose-ct":
            # CT noise depends on the whole slice (every ray crosses it): simulate it, then crop,
            # as the benchmark does.
            whole = wholes[index]
            if config.noise.ct_full_dose_photons is None and data.window is not None:
                whole = in_body(whole, whole_spacings[index], data.window)  # calibrated physics
            noisy_whole, level, target = _ct_noisy(
                whole, config, rng, own_spacing=whole_spacings[index]
            )
            noisy = central_crop(noisy_whole, data.val_size)
            val_clean[index] = central_crop(target, data.val_size)
            if isinstance(level, np.ndarray):  # a per-pixel map: (1, H, W), cut as the crop
                level = central_crop(level, data.val_size)[None]
        else:
            noisy_batch, level_batch = add_noise(clean.transpose(2, 0, 1)[None], config.noise, rng)
            noisy, level = noisy_batch[0].transpose(1, 2, 0), level_batch[0]
            level = float(level) if level.ndim == 0 else level  # a (1, H, W) map
            if config.noise.level_source == "estimate":  # what inference tells the network
                level = blind_noise_level(noisy[..., 0] if noisy.shape[-1] == 1 else noisy)
        val_noisy.append(noisy.transpose(2, 0, 1))
        val_levels.append(level)
    return TrainingData(
        "synthetic",
        train_images,
        None,
        val_noisy,
        [clean.transpose(2, 0, 1) for clean in val_clean],
        val_levels,
        {
            "train_images": len(train_images),
            "val_images": len(val_sources),
            "val_draws": data.val_draws,
            "train": data.train,
            "val": data.val,
        },
        train_spacings=train_spacings,
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
        if not data.sinograms:  # computed once per run: clean sinograms at 1 mm, all views
            from meddenoise.noise import LowDoseCT

            views = max(config.noise.ct_views)
            projector = LowDoseCT(dose_fraction=1.0, pixel_spacing_mm=1.0, views=views)
            data.sinograms = [projector.sinogram(image[..., 0]) for image in data.train_images]
        spacings = data.train_spacings or [None] * len(data.train_images)
        draws = []
        for index, (image, sinogram) in enumerate(
            zip(data.train_images, data.sinograms, strict=True)
        ):
            targets = {key[1:]: value for key, value in data.ct_targets.items() if key[0] == index}
            draws.append(_ct_noisy(image, config, rng, sinogram, spacings[index], targets))
            data.ct_targets.update({(index, *key): value for key, value in targets.items()})
        maps = config.noise.level_map == "local-flat-windows"
        # A per-pixel level map travels with its slice as a second channel, cut and flipped
        # with each patch.
        noisy, clean, sources = sample_patches(
            [np.concatenate([noisy, np.asarray(level)[..., None]], axis=-1) if maps else noisy
             for noisy, level, _ in draws],
            count,
            size,
            rng,
            augment=augment,
            partners=[target for _, _, target in draws],
        )  # fmt: skip
        assert clean is not None
        if maps:
            noisy, levels = np.ascontiguousarray(noisy[:, :1]), np.ascontiguousarray(noisy[:, 1:])
        else:
            levels = np.array([level for _, level, _ in draws], dtype=np.float32)[sources]
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
