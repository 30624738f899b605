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

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meddenoise import metrics
from meddenoise.intensity import percentile_range
from meddenoise.io import read_image
from meddenoise.noise import GaussianNoise, LowDoseCT, PoissonGaussianNoise
from meddenoise.types import Denoiser

logger = logging.getLogger(__name__)
CROP = 256
READ_NOISE = 0.01


@dataclass(frozen=True)
class TestImage:
    label: str
    file_name: str  # a pydicom-data file, or a scikit-image loader name (source "skimage")
    downsample: int
    modality: str  # "CR", "CT", "MR" or "photo" (colour)
    source: str = "pydicom"

    @property
    def colour(self) -> bool:
        return self.modality == "photo"


TEST_IMAGES = (
    TestImage("CR chest", "RG1_UNCR.dcm", 4, "CR"),
    TestImage("CT head", "693_UNCR.dcm", 1, "CT"),
    TestImage("MR shoulder", "MR2_UNCR.dcm", 2, "MR"),
    TestImage("CT abdomen", "explicit_VR-UN.dcm", 1, "CT"),
    TestImage("fundus", "retina", 2, "photo", source="skimage"),
    TestImage("histology", "immunohistochemistry", 1, "photo", source="skimage"),
)


@dataclass(frozen=True)
class NoiseSetting:
    label: str
    kind: str  # "gaussian", "poisson-gaussian", "low-dose-ct"
    value: float  # sigma (0-255 units), photons, or dose fraction

    colour: bool = False  # settings for the colour images; the others are for grey ones

    def applies_to(self, image: TestImage) -> bool:
        if self.colour != image.colour:
            return False
        return self.kind != "low-dose-ct" or image.modality == "CT"


NOISE_SETTINGS = (
    NoiseSetting("gaussian 15", "gaussian", 15),
    NoiseSetting("gaussian 25", "gaussian", 25),
    NoiseSetting("gaussian 50", "gaussian", 50),
    NoiseSetting("poisson-gaussian 100", "poisson-gaussian", 100),
    NoiseSetting("poisson-gaussian 300", "poisson-gaussian", 300),
    NoiseSetting("poisson-gaussian 1000", "poisson-gaussian", 1000),
    NoiseSetting("low-dose-ct 25%", "low-dose-ct", 0.25),
    NoiseSetting("low-dose-ct 10%", "low-dose-ct", 0.10),
    NoiseSetting("colour gaussian 15", "gaussian", 15, colour=True),
    NoiseSetting("colour gaussian 25", "gaussian", 25, colour=True),
    NoiseSetting("colour gaussian 50", "gaussian", 50, colour=True),
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


def central_crop(image: np.ndarray, size: int = CROP) -> np.ndarray:
    top, left = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[top : top + size, left : left + size]


def load_test_image(image: TestImage) -> np.ndarray:
    """The whole (downsampled) image in [0, 1] by its own 0.1-99.9 percentile range."""
    if image.source == "skimage":
        import skimage.data

        values = np.asarray(getattr(skimage.data, image.file_name)(), dtype=np.float64)
    else:
        from pydicom.data import get_testdata_file

        path = get_testdata_file(image.file_name, download=False)
        if path is None:
            raise RuntimeError(f"{image.file_name} not installed (pip install pydicom-data)")
        loaded = read_image(path)
        values = np.asarray(loaded.array, dtype=np.float64)
        if loaded.meta.keep_mask is not None:  # padding: the range floor, as the pipeline does
            values = np.where(loaded.meta.keep_mask, values[~loaded.meta.keep_mask].min(), values)
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
    """In-plane pixel spacing in mm of the (downsampled) test image, from its DICOM header."""
    if image.source != "pydicom":
        return None
    from pydicom.data import get_testdata_file

    from meddenoise.io import pixel_spacing_mm

    path = get_testdata_file(image.file_name, download=False)
    if path is None:
        return None
    spacing = pixel_spacing_mm(read_image(path))
    return None if spacing is None else spacing * image.downsample


def make_case(
    image: TestImage,
    whole: np.ndarray,
    noise: NoiseSetting,
    seed: int,
    pixel_spacing_mm: float | None = None,
) -> Case:
    rng = np.random.default_rng(seed)
    clean = central_crop(whole)
    if noise.kind == "gaussian":
        sigma = noise.value / 255
        return Case(image, noise, clean, GaussianNoise(sigma=sigma)(clean, rng), sigma)
    if noise.kind == "poisson-gaussian":
        model = PoissonGaussianNoise(photons=noise.value, read_noise=READ_NOISE)
        noisy = model(clean, rng)
        sigma = float(np.sqrt(np.mean(model.variance(clean))))
        return Case(image, noise, clean, noisy, sigma, photons=noise.value)
    # The slice's own spacing gives its physical size, hence its attenuation and noise level.
    ct = LowDoseCT(dose_fraction=noise.value)
    if pixel_spacing_mm is not None:
        ct = LowDoseCT(dose_fraction=noise.value, pixel_spacing_mm=pixel_spacing_mm)
    noisy_whole = ct(whole, rng)
    noisy = central_crop(noisy_whole)
    return Case(image, noise, clean, noisy, float(np.std(noisy - clean)))


def oracle_denoiser(method: str, case: Case) -> Denoiser:
    """A classical method given the true noise (GAT with true parameters for Poisson-Gaussian)."""
    from meddenoise.classical import GeneralizedAnscombe, make_denoiser

    if case.photons is not None:
        return GeneralizedAnscombe(inner=method, gain=1.0 / case.photons, sigma=READ_NOISE)
    return make_denoiser(method, sigma=case.sigma)


def neural_denoiser(method: str, *, colour: bool = False) -> Denoiser:
    from meddenoise.pipeline import make_method

    return make_method(method, sigma=None, colour=colour)


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

    @property
    def seconds_per_megapixel(self) -> float:
        return self.seconds / (CROP * CROP / 1e6)


def is_neural(method: str) -> bool:
    from meddenoise.pipeline import SHIPPED_WEIGHTS

    return method.endswith(".safetensors") or method in SHIPPED_WEIGHTS


def run_quality(
    methods: list[str],
    *,
    images: tuple[TestImage, ...] = TEST_IMAGES,
    settings: tuple[NoiseSetting, ...] = NOISE_SETTINGS,
    on_row: Callable[[Row], None] | None = None,
) -> tuple[list[Row], dict[tuple[str, str, str], np.ndarray], list[Case]]:
    """Every method on every (image, noise) case; returns rows, denoised crops and the cases."""
    rows: list[Row] = []
    outputs: dict[tuple[str, str, str], np.ndarray] = {}
    cases: list[Case] = []
    neural: dict[tuple[str, bool], Denoiser] = {}
    for image_index, image in enumerate(images):
        whole = load_test_image(image)
        spacing = test_image_spacing(image)
        for noise_index, noise in enumerate(settings):
            if not noise.applies_to(image):
                continue
            case = make_case(
                image, whole, noise, seed=1000 * image_index + noise_index, pixel_spacing_mm=spacing
            )
            cases.append(case)
            noisy_psnr = metrics.psnr(case.clean, case.noisy, data_range=1.0)
            for method in methods:
                if not method_applies(method, image, noise):
                    continue
                if is_neural(method):
                    key = (method, image.colour)
                    if key not in neural:
                        neural[key] = neural_denoiser(method, colour=image.colour)
                    denoiser = neural[key]
                else:
                    denoiser = oracle_denoiser(method, case)
                started = time.perf_counter()
                denoised = np.asarray(denoiser(case.noisy), dtype=np.float32)
                seconds = time.perf_counter() - started
                scores = metrics.summary(case.clean, denoised, data_range=1.0)
                row = Row(
                    method,
                    image.label,
                    noise.label,
                    scores["psnr"],
                    scores["ssim"],
                    scores["mse"],
                    seconds,
                    noisy_psnr,
                )
                rows.append(row)
                outputs[(method, image.label, noise.label)] = denoised
                if on_row is not None:
                    on_row(row)
    return rows, outputs, cases


def time_method(
    method: str, image: np.ndarray, *, repeats: int = 1, sigma: float = 25 / 255
) -> float:
    """Best-of-`repeats` seconds to denoise `image` (classical methods given `sigma`)."""
    from meddenoise.classical import make_denoiser

    denoiser = neural_denoiser(method) if is_neural(method) else make_denoiser(method, sigma=sigma)
    denoiser(image[:64, :64])  # warm-up: imports, thread pools, first-call allocations
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        denoiser(image)
        best = min(best, time.perf_counter() - started)
    return best


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
        )
    return means


def write_csv(path: Path, rows: list[Row]) -> None:
    import csv

    from meddenoise.io.base import atomic_write_with

    def write(target: Path) -> None:
        with open(target, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(
                [
                    "method",
                    "image",
                    "noise",
                    "psnr",
                    "ssim",
                    "mse",
                    "seconds",
                    "seconds_per_megapixel",
                    "noisy_psnr",
                ]
            )
            for row in rows:
                writer.writerow(
                    [
                        row.method,
                        row.image,
                        row.noise,
                        f"{row.psnr:.4f}",
                        f"{row.ssim:.5f}",
                        f"{row.mse:.6g}",
                        f"{row.seconds:.4f}",
                        f"{row.seconds_per_megapixel:.4f}",
                        f"{row.noisy_psnr:.4f}",
                    ]
                )

    atomic_write_with(path, write)


SPEED_SCRIPT = """
import resource, sys, time, numpy as np
from meddenoise.benchmark import TEST_IMAGES, load_test_image, time_method
from skimage.transform import resize
image = load_test_image(TEST_IMAGES[0])
big = np.clip(resize(image, (2048, 2048), order=1), 0, 1).astype(np.float32)
seconds = time_method(sys.argv[1], big)
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@dataclass
class SpeedResult:
    method: str
    seconds_512: float
    ratio_to_bm3d: float | None
    seconds_2048: float | None = None
    peak_rss_gib_2048: float | None = None


def run_speed(methods: list[str], *, large: bool = True, repeats: int = 3) -> list[SpeedResult]:
    """512 x 512 seconds per method (BM3D in the same process, as the reference), and for neural
    methods the 2048 x 2048 radiograph's seconds and peak RSS in a fresh process."""
    import subprocess
    import sys

    ct = load_test_image(TEST_IMAGES[1])  # the 512 x 512 CT slice
    noisy = GaussianNoise(sigma=25 / 255)(ct, np.random.default_rng(0))
    methods = [method for method in methods if method != "rgb"]  # grey images are timed
    timings = {method: time_method(method, noisy, repeats=repeats) for method in methods}
    reference = timings.get("bm3d")
    results = []
    for method in methods:
        result = SpeedResult(
            method, timings[method], None if reference is None else timings[method] / reference
        )
        if large and is_neural(method):
            output = subprocess.run(
                [sys.executable, "-c", SPEED_SCRIPT, method],
                capture_output=True,
                text=True,
                check=True,
            )
            seconds, peak = output.stdout.split()[-2:]
            result.seconds_2048 = float(seconds)
            result.peak_rss_gib_2048 = int(peak) / 2**20
        results.append(result)
    return results
