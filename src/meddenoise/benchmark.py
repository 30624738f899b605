"""Methods x images x noise settings -> rows of PSNR, SSIM, MSE and seconds; `report.py` renders.

The protocol (issue #4), written into every report:

- Test images: CR chest `RG1_UNCR` (block-mean downsampled 4 x 4), CT head `693_UNCR`, MR shoulder
  `MR2_UNCR` (downsampled 2 x 2 to 512 x 512), CT abdomen `explicit_VR-UN`; colour: fundus
  `skimage.data.retina()` (1411² JPEG, downsampled 2 x 2, which also averages away its JPEG
  blocking) and histology `skimage.data.immunohistochemistry()`; each mapped to [0, 1] by its own
  0.1-99.9 percentile range (all channels together, clipped), central 256 x 256 crop.
- Noise: grey images: Gaussian sigma 15, 25, 50 / 255; Poisson-Gaussian at 100, 300, 1000 photons
  at full scale with read noise 0.01; low-dose CT at 25 % and 10 % dose for the two CT images
  (sinogram domain on the whole slice with its own DICOM pixel spacing, then cropped).  Colour
  images: Gaussian sigma 15, 25, 50 / 255 per channel.  Fixed seeds.
- Classical methods get the true noise level ("oracle"): sigma for Gaussian; the generalised
  Anscombe transform with the true photons and read noise for Poisson-Gaussian; the standard
  deviation of (noisy - clean) for low-dose CT.  BM3D on colour is CBM3D (`bm3d_rgb`).  Neural
  methods (the shipped models and checkpoint files) run blind; "default" is the grey model on grey
  images and `rgb` on colour ones; `ct-lowdose` runs on the low-dose CT cases only and `rgb` on
  the colour ones only.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from meddenoise import metrics
from meddenoise.arrays import central_crop
from meddenoise.intensity import percentile_range
from meddenoise.io import read_image
from meddenoise.noise import GaussianNoise, PoissonGaussianNoise, fit_to_image, make_noise
from meddenoise.types import Denoiser, NoiseModel

logger = logging.getLogger(__name__)
CROP = 256
READ_NOISE = 0.01


@dataclass(frozen=True)
class TestImage:
    label: str
    file_name: str  # a pydicom-data file, or a scikit-image loader name (source "skimage")
    downsample: int
    modality: str  # "CR", "CT", "MR" or "photo" (colour)
    source: str = "pydicom"  # "pydicom", "skimage", or "entry": a data entry (`--images`)
    # Of a volume (or volumes), the plane at these leading indices (() : the middle slice); then
    # the (top, left, height, width) box of that plane, before downsampling (None: all of it).
    plane: tuple[int, ...] = ()
    box: tuple[int, int, int, int] | None = None

    @property
    def colour(self) -> bool:
        return self.modality == "photo"

    @property
    def entry(self) -> str:
        """The image as a data entry (`meddenoise.data.packaged_image`)."""
        return self.file_name if self.source == "entry" else f"{self.source}:{self.file_name}"


TEST_IMAGES = (
    TestImage("CR chest", "RG1_UNCR.dcm", 4, "CR"),
    TestImage("CT head", "693_UNCR.dcm", 1, "CT"),
    TestImage("MR shoulder", "MR2_UNCR.dcm", 2, "MR"),
    TestImage("CT abdomen", "explicit_VR-UN.dcm", 1, "CT"),
    TestImage("fundus", "retina", 2, "photo", source="skimage"),
    TestImage("histology", "immunohistochemistry", 1, "photo", source="skimage"),
)

_MNI_T1 = "nilearn:datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
HELDOUT_MR = (
    TestImage("MR head sagittal T1", "matplotlib:s1045.ima.gz", 1, "MR", source="entry"),
    *(
        TestImage(
            f"MR brain EPI z{z}", "nibabel:tests/data/example4d.nii.gz", 1, "MR", "entry", (0, z)
        )
        for z in (5, 16)
    ),
    TestImage(
        "MR neck TOF angiogram",
        "nibabel:nicom/tests/data/slicethickness_empty_string.dcm",
        1,
        "MR",
        "entry",
        box=(154, 0, 77, 384),  # the projected slab; the rest of the frame is zero
    ),
    *(TestImage(f"MR brain T1 template z{z}", _MNI_T1, 1, "MR", "entry", (z,)) for z in (56, 108)),
)
"""The held-out MR set (issue 13; docs/heldout.md names each image's source and licence): in
`meddenoise.splits.TEST_SPLIT`, never trained, tuned or selected on.  ``--images heldout-mr``."""
IMAGE_SETS = {"heldout-mr": HELDOUT_MR}


@dataclass(frozen=True)
class NoiseSetting:
    """A benchmark noise setting: a registered noise model (`noise.NOISE_MODELS`) and its
    parameters in [0, 1] image units."""

    label: str
    kind: str
    parameters: tuple[tuple[str, float], ...]
    colour: bool = False  # settings for the colour images; the others are for grey ones

    def applies_to(self, image: TestImage) -> bool:
        if self.colour != image.colour:
            return False
        return self.kind != "low-dose-ct" or image.modality == "CT"

    def model(self) -> NoiseModel:
        return make_noise(self.kind, **dict(self.parameters))


def _gaussian(sigma_255: int, *, colour: bool = False) -> NoiseSetting:
    prefix = "colour " if colour else ""
    label = f"{prefix}gaussian {sigma_255}"
    return NoiseSetting(label, "gaussian", (("sigma", sigma_255 / 255),), colour)


NOISE_SETTINGS = (
    *(_gaussian(sigma) for sigma in (15, 25, 50)),
    *(
        NoiseSetting(
            f"poisson-gaussian {photons}",
            "poisson-gaussian",
            (("photons", float(photons)), ("read_noise", READ_NOISE)),
        )
        for photons in (100, 300, 1000)
    ),
    NoiseSetting("low-dose-ct 25%", "low-dose-ct", (("dose_fraction", 0.25),)),
    NoiseSetting("low-dose-ct 10%", "low-dose-ct", (("dose_fraction", 0.10),)),
    *(_gaussian(sigma, colour=True) for sigma in (15, 25, 50)),
)

# Shipped models made for one kind of case; other methods run on every case.
METHOD_SCOPE: dict[str, Callable[[TestImage, NoiseSetting], bool]] = {
    "ct-lowdose": lambda image, noise: noise.kind == "low-dose-ct",
    "rgb": lambda image, noise: image.colour,
}


def method_applies(method: str, image: TestImage, noise: NoiseSetting) -> bool:
    scope = METHOD_SCOPE.get(method)
    return scope is None or scope(image, noise)


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return image
    height, width = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    blocks = image[:height, :width].reshape(
        height // factor, factor, width // factor, factor, *image.shape[2:]
    )
    return blocks.mean(axis=(1, 3))


@functools.lru_cache(maxsize=8)
def _entry_values(entry: str, plane: tuple[int, ...] = ()) -> tuple[np.ndarray, float | None, str]:
    """A data entry (``pydicom:NAME``, ``skimage:NAME``, a path) as an array in modality units,
    its pixel spacing in mm (None where unknown) and its modality ("photo" for colour); of a
    volume the `plane` at those leading indices, or its middle slice.

    Cached: a run asks for an image's modality, values and spacing separately, and each would
    otherwise read and decode the file again.  The array comes back read-only, so no caller can
    change what the next one gets."""
    from meddenoise.data import packaged_image
    from meddenoise.io import pixel_spacing_mm

    found = packaged_image(entry)
    spacing, modality = None, ""
    if isinstance(found, np.ndarray):
        values = np.asarray(found, dtype=np.float64)
    else:
        loaded = read_image(found if found is not None else Path(entry))
        values = np.asarray(loaded.array, dtype=np.float64)
        if loaded.meta.keep_mask is not None:  # padding: the range floor, as the pipeline does
            values = np.where(loaded.meta.keep_mask, values[~loaded.meta.keep_mask].min(), values)
        spacing = pixel_spacing_mm(loaded)
        if loaded.meta.format == "dicom":
            modality = str(loaded.meta.details.datasets[0].get("Modality", ""))
    if plane:
        values = values[plane]
    colour = values.ndim == 3 and values.shape[-1] == 3
    if values.ndim == 3 and not colour:  # a volume: its middle slice
        values = values[values.shape[0] // 2]
    elif values.ndim > 3:
        raise ValueError(f"{entry}: only 2-D images and volumes can be benchmarked")
    values = np.array(values, dtype=np.float64)  # an array of its own, then frozen (see above)
    values.flags.writeable = False
    return values, spacing, "photo" if colour else (modality or "other")


def entry_image(entry: str) -> TestImage:
    """A benchmark image for `--images ENTRY`: a file or packaged image, whole, not downsampled."""
    _, _, modality = _entry_values(entry)
    return TestImage(entry, entry, 1, modality, source="entry")


def load_test_image(image: TestImage) -> np.ndarray:
    """The whole (downsampled) image in [0, 1] by its own 0.1-99.9 percentile range."""
    values = _entry_values(image.entry, image.plane)[0]
    if image.box is not None:
        top, left, height, width = image.box
        values = values[top : top + height, left : left + width]
    values = block_mean(values, image.downsample)
    return np.clip(percentile_range(values).to_unit(values), 0.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Case:
    """One noisy crop with what an oracle knows about its noise."""

    image: TestImage
    noise: NoiseSetting
    clean: np.ndarray
    noisy: np.ndarray
    sigma: float  # noise std in [0, 1] units (for Poisson-Gaussian: RMS over the crop)
    photons: float | None = None


def test_image_spacing(image: TestImage) -> float | None:
    """In-plane pixel spacing in mm of the (downsampled) test image, from its file's header."""
    spacing = _entry_values(image.entry, image.plane)[1]
    return None if spacing is None else spacing * image.downsample


def make_case(
    image: TestImage,
    whole: np.ndarray,
    noise: NoiseSetting,
    seed: int,
    pixel_spacing_mm: float | None = None,
    crop: int = CROP,
) -> Case:
    rng = np.random.default_rng(seed)
    clean = central_crop(whole, crop)
    model = fit_to_image(noise.model(), {"pixel_spacing_mm": pixel_spacing_mm})
    photons = model.photons if isinstance(model, PoissonGaussianNoise) else None
    if isinstance(model, GaussianNoise):
        return Case(image, noise, clean, model(clean, rng), model.sigma)
    variance = getattr(model, "variance", None)
    if variance is not None:  # pixelwise: noise on the crop, the oracle's std from theory
        noisy = model(clean, rng)
        sigma = float(np.sqrt(np.mean(variance(clean))))
        return Case(image, noise, clean, noisy, sigma, photons=photons)
    # A model of the whole slice (low-dose CT: its noise depends on every ray through it).
    noisy = central_crop(model(whole, rng), crop)
    return Case(image, noise, clean, noisy, float(np.std(noisy - clean)), photons=photons)


LEVELS = ("protocol", "oracle", "blind")
"""Who is told the true noise: "protocol" (the documented one) classical methods, networks blind;
"oracle" every method (networks get the true std, for Poisson-Gaussian its RMS over the crop);
"blind" none (every method estimates the noise itself)."""


def oracle_denoiser(method: str, case: Case) -> Denoiser:
    """A classical method given the true noise (GAT with true parameters for Poisson-Gaussian)."""
    from meddenoise.classical import GeneralizedAnscombe, make_denoiser

    if case.photons is not None:
        read_noise = dict(case.noise.parameters)["read_noise"]
        return GeneralizedAnscombe(inner=method, gain=1.0 / case.photons, sigma=read_noise)
    return make_denoiser(method, sigma=case.sigma)


def case_denoiser(
    method: str, case: Case, *, levels: str, networks: dict[tuple[str, bool], Denoiser]
) -> Denoiser:
    """The denoiser `method` runs on `case` as `levels` says; networks load once (`networks`)."""
    import dataclasses

    from meddenoise.classical import make_denoiser

    if not is_neural(method):
        return (
            make_denoiser(method, sigma=None)
            if levels == "blind"
            else oracle_denoiser(method, case)
        )
    key = (method, case.image.colour)
    if key not in networks:
        networks[key] = neural_denoiser(method, colour=case.image.colour)
    network = networks[key]
    if levels == "oracle" and dataclasses.is_dataclass(network):
        return dataclasses.replace(network, sigma=case.sigma)
    return network


def split_backend(method: str) -> tuple[str, str]:
    """``"grey@onnxruntime"`` -> ("grey", "onnxruntime"): a network on another backend, timed
    and scored as a method of its own; a plain name runs on torch."""
    name, _, backend = method.partition("@")
    return name, backend or "torch"


def neural_denoiser(method: str, *, colour: bool = False, precision: str = "auto") -> Denoiser:
    from meddenoise.methods import resolve

    name, backend = split_backend(method)
    return resolve(name, colour=colour, precision=precision, backend=backend)


@dataclass
class Row:
    method: str
    image: str
    noise: str
    psnr: float
    ssim: float
    mse: float
    seconds: float
    noisy_psnr: float
    pixels: int = CROP * CROP

    @property
    def seconds_per_megapixel(self) -> float:
        return self.seconds / (self.pixels / 1e6)


def is_neural(method: str) -> bool:
    from meddenoise.methods import is_network

    return is_network(split_backend(method)[0])


def run_quality(
    methods: list[str],
    *,
    images: tuple[TestImage, ...] = TEST_IMAGES,
    settings: tuple[NoiseSetting, ...] = NOISE_SETTINGS,
    levels: str = "protocol",
    draws: int = 1,
    crop: int = CROP,
    on_row: Callable[[Row], None] | None = None,
) -> tuple[list[Row], dict[tuple[str, str, str], np.ndarray], list[Case]]:
    """Every method on every (image, noise, draw) case; returns rows, denoised crops (the first
    draw's) and the cases.  `levels` is one of `LEVELS`; each draw has its own fixed seed."""
    if levels not in LEVELS:
        raise ValueError(f"levels must be one of {', '.join(LEVELS)}, got {levels!r}")
    rows: list[Row] = []
    outputs: dict[tuple[str, str, str], np.ndarray] = {}
    cases: list[Case] = []
    networks: dict[tuple[str, bool], Denoiser] = {}
    for image_index, image in enumerate(images):
        whole = load_test_image(image)
        spacing = test_image_spacing(image)
        for noise_index, noise in enumerate(settings):
            if not noise.applies_to(image):
                continue
            for draw in range(draws):
                # Draw 0 keeps the seeds of the single-draw protocol, so its numbers stay put.
                seed = 1000 * image_index + noise_index + 100_000 * draw
                case = make_case(image, whole, noise, seed, pixel_spacing_mm=spacing, crop=crop)
                if draw == 0:
                    cases.append(case)
                noisy_psnr = metrics.psnr(case.clean, case.noisy, data_range=1.0)
                for method in methods:
                    if not method_applies(method, image, noise):
                        continue
                    denoiser = case_denoiser(method, case, levels=levels, networks=networks)
                    started = time.perf_counter()
                    denoised = np.asarray(denoiser(case.noisy), dtype=np.float32)
                    seconds = time.perf_counter() - started
                    scores = metrics.summary(case.clean, denoised, data_range=1.0)
                    label = image.label if draws == 1 else f"{image.label} #{draw}"
                    row = Row(
                        method,
                        label,
                        noise.label,
                        scores["psnr"],
                        scores["ssim"],
                        scores["mse"],
                        seconds,
                        noisy_psnr,
                        pixels=int(np.prod(case.clean.shape[:2])),
                    )
                    rows.append(row)
                    if draw == 0:
                        outputs[(method, image.label, noise.label)] = denoised
                    if on_row is not None:
                        on_row(row)
    return rows, outputs, cases


def select_cases(
    *, images: list[str] | None = None, noise: list[str] | None = None, quick: bool = False
) -> tuple[tuple[TestImage, ...], tuple[NoiseSetting, ...]]:
    """The images and noise settings of a run: the test split and every setting by default;
    `images` (data entries, or the name of a set in `IMAGE_SETS`) instead of the test images;
    `noise` labels to keep; `quick` the CT head and the histology image at Gaussian 25,
    Poisson-Gaussian 300 and colour Gaussian 25."""
    if images:
        # A named set (`IMAGE_SETS`, e.g. "heldout-mr") stands for its images.
        chosen = tuple(
            image for entry in images for image in IMAGE_SETS.get(entry) or (entry_image(entry),)
        )
    elif quick:
        chosen = (TEST_IMAGES[1], TEST_IMAGES[5])
    else:
        chosen = TEST_IMAGES
    settings = tuple(NOISE_SETTINGS[index] for index in (1, 4, 9)) if quick else NOISE_SETTINGS
    if noise:
        labels = [setting.label for setting in NOISE_SETTINGS]
        unknown = [label for label in noise if label not in labels]
        if unknown:
            raise ValueError(
                f"unknown noise setting {unknown[0]!r}; choose from {', '.join(labels)}"
            )
        settings = tuple(setting for setting in settings if setting.label in noise)
    return chosen, settings


# The images as they are, nothing added: the setting of the method-noise rows.
AS_IS = NoiseSetting("as is (method noise)", "none", ())


@dataclass
class MethodNoiseRow:
    """One method on one real image with no noise added: `meddenoise.method_noise` score, the
    residual's RMS in 0-255 units of the image's range, and the level classical methods got."""

    method: str
    image: str
    score: float
    residual_rms_255: float
    level_255: float
    seconds: float


def run_method_noise(
    methods: list[str], *, images: tuple[TestImage, ...] = TEST_IMAGES, crop: int = CROP
) -> tuple[list[MethodNoiseRow], dict[tuple[str, str], np.ndarray], dict[str, np.ndarray]]:
    """Every method on each image's central crop as it is (no noise added), scored by
    `meddenoise.method_noise.method_noise_score`: the structure left in its residual.

    Classical methods get the level the project estimates (`estimate.blind_noise_level` of the
    crop), networks run blind, as users run them; `METHOD_SCOPE` applies (``ct-lowdose`` runs on
    none of these, ``rgb`` on the colour images only).  Returns the rows, the residuals by
    (method, image label) and the crops by image label, for the report's pictures.
    """
    from meddenoise.classical import make_denoiser
    from meddenoise.estimate import blind_noise_level
    from meddenoise.method_noise import method_noise_score

    rows: list[MethodNoiseRow] = []
    residuals: dict[tuple[str, str], np.ndarray] = {}
    crops: dict[str, np.ndarray] = {}
    networks: dict[tuple[str, bool], Denoiser] = {}
    for image in images:
        as_is = central_crop(load_test_image(image), crop)
        crops[image.label] = as_is
        level = blind_noise_level(as_is)
        for method in methods:
            if not method_applies(method, image, AS_IS):
                continue
            if is_neural(method):
                key = (method, image.colour)
                if key not in networks:
                    networks[key] = neural_denoiser(method, colour=image.colour)
                denoiser = networks[key]
            else:  # a level of exactly 0 (a noise-free crop) is refused by some methods
                denoiser = make_denoiser(method, sigma=max(level, 1e-4))
            started = time.perf_counter()
            denoised = np.asarray(denoiser(as_is), dtype=np.float32)
            seconds = time.perf_counter() - started
            residual = as_is - denoised
            residuals[(method, image.label)] = residual
            rows.append(
                MethodNoiseRow(
                    method,
                    image.label,
                    method_noise_score(as_is, denoised),
                    float(np.sqrt(np.mean(residual**2)) * 255),
                    level * 255,
                    seconds,
                )
            )
    return rows, residuals, crops


@dataclass(frozen=True)
class BenchmarkOptions:
    """How a quality run scores: who knows the noise (`LEVELS`), draws per case, crop side."""

    levels: str = "protocol"
    draws: int = 1
    crop: int = CROP

    def __post_init__(self) -> None:
        if self.levels not in LEVELS:
            raise ValueError(f"levels must be one of {', '.join(LEVELS)}, got {self.levels!r}")
        if self.draws < 1 or self.crop < 16:
            raise ValueError(f"draws must be >= 1 and crop >= 16, got {self.draws}, {self.crop}")


def run_benchmark(
    methods: list[str],
    output: Path,
    *,
    images: tuple[TestImage, ...] = TEST_IMAGES,
    settings: tuple[NoiseSetting, ...] = NOISE_SETTINGS,
    options: BenchmarkOptions = BenchmarkOptions(),
    speed: bool = True,
    quick: bool = False,
    command: str = "",
) -> Path:
    """Quality (and speed) of `methods`: writes benchmark.csv, method_noise.csv (`run_method_noise`:
    the images as they are) and benchmark.md into `output`."""
    import datetime
    import os
    import platform

    from meddenoise.report import write_benchmark_report

    rows, outputs, cases = run_quality(
        methods,
        images=images,
        settings=settings,
        levels=options.levels,
        draws=options.draws,
        crop=options.crop,
        on_row=lambda row: logger.info(
            "%s | %s | %s: %.2f dB (noisy %.2f)",
            row.method,
            row.image,
            row.noise,
            row.psnr,
            row.noisy_psnr,
        ),
    )
    method_noise = run_method_noise(methods, images=images, crop=options.crop)
    timings = run_speed(methods, large=not quick, repeats=1 if quick else 3) if speed else []
    output.mkdir(parents=True, exist_ok=True)
    write_csv(output / "benchmark.csv", rows)
    write_method_noise_csv(output / "method_noise.csv", method_noise[0])
    processor = platform.processor() or platform.machine()
    machine = f"{datetime.date.today()}, {processor}, {os.cpu_count()} cores"
    protocol = (__doc__ or "") + (
        f"\nThis run: levels {options.levels}, {options.draws} draw(s), {options.crop}² crops."
    )
    return write_benchmark_report(
        output,
        rows,
        outputs,
        cases,
        timings,
        protocol=protocol,
        machine=machine,
        command=command,
        method_noise=method_noise,
    )


def write_method_noise_csv(path: Path, rows: list[MethodNoiseRow]) -> None:
    """The method-noise rows as method_noise.csv, written atomically."""
    from meddenoise.io.base import atomic_write_csv

    atomic_write_csv(
        path,
        [
            {
                "method": row.method,
                "image": row.image,
                "method_noise_score": f"{row.score:.4f}",
                "residual_rms_255": f"{row.residual_rms_255:.4f}",
                "classical_level_255": f"{row.level_255:.4f}",
                "seconds": f"{row.seconds:.4f}",
            }
            for row in rows
        ],
    )


def timed_denoiser(method: str, *, sigma: float = 25 / 255, precision: str = "auto") -> Denoiser:
    """`method` as the speed rows time it: networks blind, classical methods given `sigma`."""
    from meddenoise.classical import make_denoiser

    if is_neural(method):
        return neural_denoiser(method, precision=precision)
    return make_denoiser(method, sigma=sigma)


def time_denoisers(
    denoisers: dict[str, Denoiser], image: np.ndarray, *, repeats: int = 1
) -> dict[str, float]:
    """Best-of-`repeats` seconds per denoiser on `image`, the repeats interleaved.

    Every denoiser is warmed up first (imports, thread pools, first-call allocations); then each
    round times each denoiser once, so a slow spell of a shared machine falls on all of them
    alike and the ratios between them stay honest.
    """
    for denoiser in denoisers.values():
        denoiser(image[:64, :64])
    best = dict.fromkeys(denoisers, float("inf"))
    for _ in range(repeats):
        for name, denoiser in denoisers.items():
            started = time.perf_counter()
            denoiser(image)
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def time_method(
    method: str,
    image: np.ndarray,
    *,
    repeats: int = 1,
    sigma: float = 25 / 255,
    precision: str = "auto",
) -> float:
    """Best-of-`repeats` seconds to denoise `image` (classical methods given `sigma`)."""
    denoiser = timed_denoiser(method, sigma=sigma, precision=precision)
    return time_denoisers({method: denoiser}, image, repeats=repeats)[method]


def mean_by(rows: list[Row], key: Callable[[Row], tuple[str, ...]]) -> dict[tuple[str, ...], Row]:
    """Mean PSNR/SSIM/MSE/seconds of rows grouped by `key`."""
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(key(row), []).append(row)
    means = {}
    for group_key, members in groups.items():
        means[group_key] = Row(
            members[0].method,
            "mean",
            members[0].noise if len({m.noise for m in members}) == 1 else "all",
            float(np.mean([m.psnr for m in members])),
            float(np.mean([m.ssim for m in members])),
            float(np.mean([m.mse for m in members])),
            float(np.mean([m.seconds for m in members])),
            float(np.mean([m.noisy_psnr for m in members])),
            pixels=int(np.mean([m.pixels for m in members])),
        )
    return means


def write_csv(path: Path, rows: list[Row]) -> None:
    """The rows as benchmark.csv, with seconds per megapixel, written atomically."""
    from meddenoise.io.base import atomic_write_csv

    table = [
        {
            "method": row.method,
            "image": row.image,
            "noise": row.noise,
            "psnr": f"{row.psnr:.4f}",
            "ssim": f"{row.ssim:.5f}",
            "mse": f"{row.mse:.6g}",
            "seconds": f"{row.seconds:.4f}",
            "seconds_per_megapixel": f"{row.seconds_per_megapixel:.4f}",
            "noisy_psnr": f"{row.noisy_psnr:.4f}",
        }
        for row in rows
    ]
    atomic_write_csv(path, table)


# How users' CPUs run: no AVX-512 and no native bf16 (torch's kernels and oneDNN capped at AVX2;
# OpenBLAS, which BM3D's numpy and scipy use, on its Haswell kernels).
AVX2_ENVIRONMENT = {
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "ATEN_CPU_CAPABILITY": "avx2",
    "OPENBLAS_CORETYPE": "Haswell",
}


def cpu_description() -> dict[str, object]:
    """What this process's torch runs on: its kernel capability and whether bf16 is native."""
    import os

    import torch

    from meddenoise.inference import bf16_supported

    capped = os.environ.get("ATEN_CPU_CAPABILITY") == "avx2"
    return {
        "capability": torch.backends.cpu.get_cpu_capability(),
        # Capped to AVX2, oneDNN cannot use AVX512-BF16 even where the silicon has it.
        "native_bf16": bf16_supported("cpu") and not capped,
    }


def speed_case() -> np.ndarray:
    """The 512 x 512 CT head slice with Gaussian noise sigma 25 / 255: every speed row's input."""
    ct = load_test_image(TEST_IMAGES[1])
    return GaussianNoise(sigma=25 / 255)(ct, np.random.default_rng(0))


@dataclass
class Timings:
    """Seconds for the 512² speed case per method, measured in one process on one CPU setting."""

    seconds: dict[str, float]
    precision: str  # what the networks ran at
    capability: str
    native_bf16: bool


def time_methods(methods: list[str], *, precision: str = "auto", repeats: int = 3) -> Timings:
    """Time every method on the speed case in this process ("auto": bf16 only where native)."""
    noisy = speed_case()
    cpu = cpu_description()
    if precision == "auto":
        precision = "bf16" if cpu["native_bf16"] else "fp32"
    denoisers = {method: timed_denoiser(method, precision=precision) for method in methods}
    seconds = time_denoisers(denoisers, noisy, repeats=repeats)
    return Timings(seconds, precision, str(cpu["capability"]), bool(cpu["native_bf16"]))


def time_large(method: str) -> tuple[float, float]:
    """(seconds, peak RSS in GiB) for a 2048² radiograph; run in a fresh process for the RSS."""
    import resource

    from skimage.transform import resize

    image = load_test_image(TEST_IMAGES[0])
    big = np.clip(resize(image, (2048, 2048), order=1), 0, 1).astype(np.float32)
    seconds = time_method(method, big)
    return seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _run_module(arguments: list[str], environment: dict[str, str] | None = None) -> object:
    """`python -m meddenoise.benchmark ARGUMENTS` in a fresh process; its JSON answer."""
    import json
    import os
    import subprocess
    import sys

    output = subprocess.run(
        [sys.executable, "-m", "meddenoise.benchmark", *arguments],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(environment or {})},
    )
    if output.returncode != 0:
        raise RuntimeError(f"speed subprocess failed: {output.stderr.strip()[-500:]}")
    return json.loads(output.stdout.strip().splitlines()[-1])


@dataclass
class SpeedResult:
    """One speed row: a method at one precision on one CPU setting, BM3D timed beside it."""

    method: str
    seconds_512: float
    ratio_to_bm3d: float | None
    seconds_2048: float | None = None
    peak_rss_gib_2048: float | None = None
    setting: str = "native"  # "native" or "AVX2 (capped)"
    precision: str = "fp32"
    capability: str = ""
    native_bf16: bool = False


def run_speed(methods: list[str], *, large: bool = True, repeats: int = 3) -> list[SpeedResult]:
    """512 x 512 seconds per method with BM3D timed in the same process as the reference.

    Rows: every method natively (networks at "auto": bf16 where native); networks again in fp32
    when auto chose bf16; and, in a subprocess capped to AVX2 (`AVX2_ENVIRONMENT`), networks in
    fp32 next to BM3D capped the same way: the speed most users' CPUs see.  For networks the
    2048 x 2048 radiograph's seconds and peak RSS come from a fresh process.

    ``NAME@onnxruntime`` times a network on the onnxruntime backend, interleaved with the torch
    rows: with the fp32 ones (it runs fp32 only), natively.  It has no AVX2 row: ONNX Runtime
    picks its kernels by the CPU's own flags and has no switch to cap them (only a build
    without AVX-512 would), so the capped setting applies to torch alone.
    """
    methods = [method for method in methods if method != "rgb"]  # grey images are timed
    neural = [method for method in methods if is_neural(method)]
    onnx = [method for method in neural if split_backend(method)[1] != "torch"]
    torch_networks = [method for method in neural if method not in onnx]
    bf16 = bool(cpu_description()["native_bf16"])
    results: list[SpeedResult] = []

    def add(timings: Timings, names: list[str], setting: str) -> None:
        reference = timings.seconds.get("bm3d")
        for method in names:
            seconds = timings.seconds[method]
            results.append(
                SpeedResult(
                    method,
                    seconds,
                    None if reference is None else seconds / reference,
                    setting=setting,
                    precision=timings.precision if method in torch_networks else "fp32",
                    capability=timings.capability,
                    native_bf16=timings.native_bf16,
                )
            )

    native_methods = [method for method in methods if not (bf16 and method in onnx)]
    native = time_methods(native_methods, repeats=repeats)
    add(native, native_methods, "native")
    if large:
        for result in results[: len(native_methods)]:
            if result.method in neural:
                seconds, peak = cast(list[float], _run_module(["large", result.method]))
                result.seconds_2048, result.peak_rss_gib_2048 = float(seconds), float(peak)
    if neural and native.precision == "bf16":
        fp32 = time_methods(neural, precision="fp32", repeats=repeats)
        if "bm3d" in native.seconds:  # the same process's BM3D stays the reference
            fp32.seconds["bm3d"] = native.seconds["bm3d"]
        add(fp32, neural, "native")
    if torch_networks:
        reference = ["bm3d"] if "bm3d" in methods else []
        answer = _run_module(
            [
                "speed",
                "--precision",
                "fp32",
                "--repeats",
                str(repeats),
                *torch_networks,
                *reference,
            ],
            AVX2_ENVIRONMENT,
        )
        add(Timings(**answer), torch_networks, "AVX2 (capped)")  # type: ignore[arg-type]
    return results


# --- the low-dose CT robustness grid (issue 14) ------------------------------------------------

CT_GRID_IMAGES = ("pydicom:693_UNCR.dcm", "pydicom:explicit_VR-UN.dcm")
"""CT slices no model in ``ct-lowdose``'s chain trained on: the test split's head and abdomen."""
CT_GRID_METHODS = ("bm3d", "nlm", "ct-lowdose", "grey")
CT_WINDOW = (0.0, 2000.0)
"""Centre and width in HU of the mapping to [0, 1]: -1000..+1000, air 0 and water 0.5, the values
`meddenoise.noise.LowDoseCT` reads as attenuation (and ``ct-lowdose`` trains on)."""


@dataclass(frozen=True)
class CtCell:
    """One acquisition of the grid: pixel spacing, dose (of the calibrated full dose), FBP
    filter and number of views over 180 degrees."""

    spacing_mm: float
    dose: float
    filter_name: str
    views: int = 720

    @property
    def label(self) -> str:
        return f"{self.spacing_mm:g} mm, {self.dose:.0%}, {self.filter_name}, {self.views} views"


def ct_grid_cells(
    spacings: tuple[float, ...] = (0.5, 0.7, 1.0),
    doses: tuple[float, ...] = (0.10, 0.25, 0.50),
    filters: tuple[str, ...] = ("ramp", "shepp-logan", "hann"),
    views: int = 720,
) -> tuple[CtCell, ...]:
    """Spacings x doses x filters at `views` views, plus a row at half the views, 25 % dose and
    0.7 mm (every filter): the issue-14 grid by default."""
    cells = [CtCell(s, d, f, views) for s in spacings for d in doses for f in filters]
    return (*cells, *(CtCell(0.7, 0.25, f, views // 2) for f in filters))


@dataclass
class CtSlice:
    """A real CT slice in [0, 1] (`CT_WINDOW`) as read (`original`, for the no-harm rows) and
    nearly noise-free (`clean`, what the noise is simulated on), with its file's spacing."""

    label: str
    original: np.ndarray
    clean: np.ndarray
    spacing_mm: float | None = None

    @property
    def removed_hu(self) -> float:
        """Std in HU of what the clean-reference step removed from the original."""
        from meddenoise.noise import HU_PER_UNIT

        return float(np.std(self.original - self.clean)) * HU_PER_UNIT


def load_ct_slice(entry: str, *, clean_reference: bool = True) -> CtSlice:
    """A data entry as a `CtSlice`: HU window -1000..+1000 (clipped), made nearly noise-free by
    `meddenoise.data.clean_reference` (BM3D at its blind-estimated level) unless told not to."""
    from meddenoise.data import clean_reference as cleaned
    from meddenoise.intensity import IntensityMapping

    values, spacing, _ = _entry_values(entry)
    unit = IntensityMapping.from_window(*CT_WINDOW).to_unit(values)
    original = np.clip(unit, 0.0, 1.0).astype(np.float32)
    clean = cleaned(original) if clean_reference else original
    return CtSlice(entry, original, clean, spacing)


@dataclass
class CtGridRow:
    """One method on one slice in one cell ("noisy": the input; cell "no added noise": the
    method on the real slice, scored against it)."""

    image: str
    cell: str
    method: str
    psnr: float
    ssim: float
    seconds: float
    noise_hu: float  # std of the added noise in HU (0 in the no-added-noise rows)
    pixels: int

    @property
    def seconds_per_512(self) -> float:
        return self.seconds * 512 * 512 / self.pixels


NO_ADDED_NOISE = "no added noise (real slice)"


def run_ct_grid(
    methods: tuple[str, ...] | list[str] = CT_GRID_METHODS,
    *,
    slices: list[CtSlice],
    cells: tuple[CtCell, ...] = ct_grid_cells(),
    seed: int = 0,
    no_harm: bool = True,
    precision: str = "fp32",
    on_row: Callable[[CtGridRow], None] | None = None,
) -> list[CtGridRow]:
    """Every method on every slice in every cell, whole slices, one draw each.

    The noise is `meddenoise.noise.LowDoseCT` at the cell's settings on the slice's clean
    reference; the reference scored against is the noise-free reconstruction through the same
    views and filter, so only the noise differs.  Classical methods are told the true std of the
    added noise; networks run blind, at `precision` (fp32 by default: at these mild noise levels
    bf16 inference cost the grey model 0.3 dB on a grid cell and 0.9 dB on the real head slice,
    and most users' CPUs run fp32).  With `no_harm`, each method also runs on the real slice
    (classical ones at their blind estimate) and is scored against it: how much it changes a
    full-dose image.
    """
    from meddenoise.classical import make_denoiser
    from meddenoise.noise import HU_PER_UNIT, LowDoseCT

    rows: list[CtGridRow] = []
    networks: dict[str, Denoiser] = {}

    def denoiser(method: str, sigma: float | None) -> Denoiser:
        if not is_neural(method):
            return make_denoiser(method, sigma=sigma)
        if method not in networks:
            networks[method] = neural_denoiser(method, precision=precision)
        return networks[method]

    def score(
        ct: CtSlice,
        cell: str,
        method: str,
        reference: np.ndarray,
        out: np.ndarray,
        seconds: float,
        noise_hu: float,
    ) -> None:
        scores = metrics.summary(reference, out, data_range=1.0)
        row = CtGridRow(
            ct.label,
            cell,
            method,
            scores["psnr"],
            scores["ssim"],
            seconds,
            noise_hu,
            int(reference.size),
        )
        rows.append(row)
        if on_row is not None:
            on_row(row)

    def run_methods(
        ct: CtSlice, cell: str, reference: np.ndarray, noisy: np.ndarray, sigma: float | None
    ) -> None:
        noise_hu = 0.0 if sigma is None else sigma * HU_PER_UNIT
        if sigma is not None:
            score(ct, cell, "noisy", reference, noisy, 0.0, noise_hu)
        for method in methods:
            chosen = denoiser(method, sigma)
            started = time.perf_counter()
            out = np.asarray(chosen(noisy), dtype=np.float32)
            score(ct, cell, method, reference, out, time.perf_counter() - started, noise_hu)

    views = max(cell.views for cell in cells)
    for slice_index, ct in enumerate(slices):
        shape = ct.clean.shape
        unit = LowDoseCT(dose_fraction=1.0, pixel_spacing_mm=1.0, views=views).sinogram(ct.clean)
        references: dict[tuple[str, int], np.ndarray] = {}
        for cell_index, cell in enumerate(cells):
            if views % cell.views:
                raise ValueError(f"{cell.label}: views must divide the grid's largest, {views}")
            model = LowDoseCT(
                dose_fraction=cell.dose,
                pixel_spacing_mm=cell.spacing_mm,
                views=cell.views,
                filter_name=cell.filter_name,
            )
            sinogram = unit[:, :: views // cell.views] * cell.spacing_mm
            key = (cell.filter_name, cell.views)
            if key not in references:  # depends on neither dose nor spacing
                references[key] = model.noise_free_from_sinogram(sinogram, shape)
            rng = np.random.default_rng([seed, slice_index, cell_index])
            noisy = model.noisy_from_sinogram(sinogram, shape, rng)
            sigma = float(np.std(noisy - references[key]))
            run_methods(ct, cell.label, references[key], noisy, sigma)
        if no_harm:
            run_methods(ct, NO_ADDED_NOISE, ct.original, ct.original, None)
    return rows


def _ct_grid_summary(rows: list[CtGridRow], methods: list[str]) -> list[list[object]]:
    """Per method: mean PSNR gain over the noisy input and over BM3D, cells at least 1 dB above
    BM3D, cells below BM3D, cells below the noisy input, and seconds per 512² slice."""
    by_case = {(row.image, row.cell, row.method): row for row in rows}
    cases = sorted({(row.image, row.cell) for row in rows if row.cell != NO_ADDED_NOISE})
    table: list[list[object]] = []
    for method in methods:
        gains, over_bm3d, timed = [], [], []
        for image, cell in cases:
            row = by_case.get((image, cell, method))
            if row is None:
                continue
            gains.append(row.psnr - by_case[(image, cell, "noisy")].psnr)
            timed.append(row.seconds_per_512)
            bm3d = by_case.get((image, cell, "bm3d"))
            if bm3d is not None and method != "bm3d":
                over_bm3d.append(row.psnr - bm3d.psnr)
        if not gains:
            continue
        table.append(
            [
                f"`{method}`",
                float(np.mean(gains)),
                float(np.mean(over_bm3d)) if over_bm3d else "",
                f"{sum(g >= 1.0 for g in over_bm3d)}/{len(over_bm3d)}" if over_bm3d else "",
                f"{sum(g < 0 for g in over_bm3d)}/{len(over_bm3d)}" if over_bm3d else "",
                f"{sum(g < 0 for g in gains)}/{len(gains)}",
                float(np.mean(timed)),
            ]
        )
    return table


def write_ct_grid_report(
    output: Path, rows: list[CtGridRow], slices: list[CtSlice], *, command: str = ""
) -> Path:
    """ct-grid.csv, ct-grid.md (tables per slice, the summary, the protocol) and ct-grid.png (a
    heat map of each method's PSNR gain over the noisy input) in `output`; returns the .md."""
    import datetime
    import os
    import platform

    from meddenoise.io.base import atomic_write_csv
    from meddenoise.report import markdown_table, write_text

    output.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(
        output / "ct-grid.csv",
        [
            {
                "image": row.image,
                "cell": row.cell,
                "method": row.method,
                "psnr": f"{row.psnr:.4f}",
                "ssim": f"{row.ssim:.5f}",
                "seconds": f"{row.seconds:.4f}",
                "seconds_per_512": f"{row.seconds_per_512:.4f}",
                "noise_hu": f"{row.noise_hu:.2f}",
            }
            for row in rows
        ],
    )
    methods = list(dict.fromkeys(row.method for row in rows if row.method != "noisy"))
    by_case = {(row.image, row.cell, row.method): row for row in rows}
    processor = platform.processor() or platform.machine()
    lines = [
        "# Low-dose CT robustness grid",
        "",
        f"{datetime.date.today()}, {processor}, {os.cpu_count()} cores."
        + (f" Command: `{command}`" if command else ""),
        "",
        "Protocol (issue 14): each whole slice, mapped by the HU window -1000..+1000 and made "
        "nearly noise-free (BM3D at its blind-estimated level, `meddenoise.data."
        "clean_reference`), is scanned by `meddenoise.noise.LowDoseCT` (parallel beam, "
        "calibrated dose: docs/ct-physics.md) at each cell's pixel spacing, dose, filter and "
        "views, one draw.  The reference is the noise-free reconstruction through the same views "
        "and filter, so only noise differs; PSNR (dB) / SSIM over the whole slice, [0, 1] = 2000 "
        "HU.  BM3D and NLM are told the true std of the added noise; networks run blind "
        "(fp32 unless the command says otherwise).  "
        f'Rows "{NO_ADDED_NOISE}": each method on the real slice (classical ones at their '
        "blind estimate), scored against it (how much it changes a full-dose image).",
        "",
        markdown_table(
            ["slice", "pixel spacing in file", "clean-reference step removed (HU std)"],
            [
                [
                    ct.label,
                    "" if ct.spacing_mm is None else f"{ct.spacing_mm:.3f} mm",
                    f"{ct.removed_hu:.2f}",
                ]
                for ct in slices
            ],
        ),
        "",
        "## Summary over the cells",
        "",
        markdown_table(
            [
                "method",
                "mean gain over noisy (dB)",
                "mean vs BM3D (dB)",
                "cells >= BM3D + 1 dB",
                "cells below BM3D",
                "cells below noisy",
                "seconds per 512²",
            ],
            _ct_grid_summary(rows, methods),
        ),
    ]
    for ct in slices:
        cells = list(dict.fromkeys(row.cell for row in rows if row.image == ct.label))
        table = []
        for cell in cells:
            noisy = by_case.get((ct.label, cell, "noisy"))
            line: list[object] = [
                cell,
                "" if noisy is None else f"{noisy.noise_hu:.1f}",
                "" if noisy is None else f"{noisy.psnr:.2f} / {noisy.ssim:.4f}",
            ]
            for method in methods:
                row = by_case.get((ct.label, cell, method))
                line.append("" if row is None else f"{row.psnr:.2f} / {row.ssim:.4f}")
            table.append(line)
        lines += [
            "",
            f"## {ct.label}",
            "",
            markdown_table(["cell", "added noise (HU)", "noisy", *methods], table),
        ]
    figure = _ct_grid_figure(output / "ct-grid.png", rows, slices, methods)
    if figure is not None:
        lines += ["", f"![PSNR gain over the noisy input]({figure.name})"]
    report = output / "ct-grid.md"
    write_text(report, "\n".join(lines) + "\n")
    return report


def _ct_grid_figure(
    path: Path, rows: list[CtGridRow], slices: list[CtSlice], methods: list[str]
) -> Path | None:
    """Heat map per slice: cells x methods, PSNR gain over the noisy input in dB."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_case = {(row.image, row.cell, row.method): row for row in rows}
    cells = list(dict.fromkeys(row.cell for row in rows if row.cell != NO_ADDED_NOISE))
    if not cells or not methods:
        return None
    figure, axes = plt.subplots(
        1,
        len(slices),
        figsize=(3.0 + 1.3 * len(methods) * len(slices), 1.5 + 0.32 * len(cells)),
        squeeze=False,
    )
    for axis, ct in zip(axes[0], slices, strict=True):
        gains = np.full((len(cells), len(methods)), np.nan)
        for i, cell in enumerate(cells):
            noisy = by_case.get((ct.label, cell, "noisy"))
            for j, method in enumerate(methods):
                row = by_case.get((ct.label, cell, method))
                if row is not None and noisy is not None:
                    gains[i, j] = row.psnr - noisy.psnr
        limit = max(1.0, float(np.nanmax(np.abs(gains))) if np.isfinite(gains).any() else 1.0)
        axis.imshow(gains, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
        for (i, j), value in np.ndenumerate(gains):
            if np.isfinite(value):
                axis.text(j, i, f"{value:+.1f}", ha="center", va="center", fontsize=7)
        axis.set_xticks(range(len(methods)), methods, rotation=30, ha="right")
        axis.set_yticks(range(len(cells)), cells if axis is axes[0][0] else [""] * len(cells))
        axis.set_title(ct.label, fontsize=9)
    figure.suptitle("PSNR gain over the noisy input (dB)", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def ct_grid(
    methods: list[str] | None = None,
    output: Path = Path("ct-grid"),
    *,
    images: list[str] | None = None,
    cells: tuple[CtCell, ...] | None = None,
    precision: str = "fp32",
    command: str = "",
) -> Path:
    """The grid as run by hand: load the slices, run, write the report; returns its path.

    Raises ValueError for an unknown method (before any slice is loaded)."""
    from meddenoise.classical import METHODS

    unknown = [m for m in methods or () if m not in METHODS and not is_neural(m)]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}: a classical method or a network")
    slices = [load_ct_slice(entry) for entry in images or CT_GRID_IMAGES]
    rows = run_ct_grid(
        tuple(methods or CT_GRID_METHODS),
        slices=slices,
        cells=cells or ct_grid_cells(),
        precision=precision,
        on_row=lambda row: logger.info(
            "%s | %s | %s: %.2f dB (%.1f s)",
            row.image,
            row.cell,
            row.method,
            row.psnr,
            row.seconds,
        ),
    )
    return write_ct_grid_report(output, rows, slices, command=command)


def adapt_benchmark(output: Path) -> Path:
    """``meddenoise benchmark --adapt``: the adaptation benchmark of `meddenoise adapt` with its
    defaults (the final images, every setting, 1 / 3 / 10 minutes; docs/adapt.md), its table
    printed and written to OUTPUT/adapt.md; returns that path."""
    from meddenoise.adapt.benchmark import main as run_adaptation_benchmark

    output.mkdir(parents=True, exist_ok=True)
    report = output / "adapt.md"
    run_adaptation_benchmark(["-o", str(report)])
    return report


def main(arguments: list[str] | None = None) -> None:
    """``python -m meddenoise.benchmark speed|large ...``: the fresh processes `run_speed` needs;
    ``... ct-grid``: the low-dose CT robustness grid, run by hand (`ct_grid`)."""
    import argparse
    import dataclasses
    import json

    parser = argparse.ArgumentParser(prog="python -m meddenoise.benchmark")
    commands = parser.add_subparsers(dest="command", required=True)
    speed = commands.add_parser("speed", help="time methods on the 512² case, print JSON")
    speed.add_argument("methods", nargs="+")
    speed.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    speed.add_argument("--repeats", type=int, default=3)
    large_parser = commands.add_parser("large", help="time one method on 2048², print JSON")
    large_parser.add_argument("method")
    grid = commands.add_parser("ct-grid", help="the low-dose CT robustness grid (issue 14)")
    grid.add_argument(
        "-m", "--method", action="append", help="(repeat) default: " + ", ".join(CT_GRID_METHODS)
    )
    grid.add_argument("--images", action="append", help="(repeat) CT data entries")
    grid.add_argument("-o", "--output", type=Path, default=Path("ct-grid"))
    grid.add_argument("--cells", type=int, help="only the first N cells (a smoke run)")
    grid.add_argument("--precision", default="fp32", choices=["auto", "fp32", "bf16"])
    parsed = parser.parse_args(arguments)
    if parsed.command == "ct-grid":
        import sys

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        cells = ct_grid_cells()[: parsed.cells] if parsed.cells else None
        command = "python -m meddenoise.benchmark " + " ".join(sys.argv[1:])
        report = ct_grid(
            parsed.method,
            parsed.output,
            images=parsed.images,
            cells=cells,
            precision=parsed.precision,
            command=command,
        )
        print(f"report: {report}")
        return
    if parsed.command == "speed":
        answer: object = dataclasses.asdict(
            time_methods(parsed.methods, precision=parsed.precision, repeats=parsed.repeats)
        )
    else:
        answer = list(time_large(parsed.method))
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
