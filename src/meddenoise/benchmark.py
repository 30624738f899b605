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


def _entry_values(entry: str) -> tuple[np.ndarray, float | None, str]:
    """A data entry (``pydicom:NAME``, ``skimage:NAME``, a path) as an array in modality units,
    its pixel spacing in mm (None where unknown) and its modality ("photo" for colour)."""
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
    colour = values.ndim == 3 and values.shape[-1] == 3
    if values.ndim == 3 and not colour:  # a volume: its middle slice
        values = values[values.shape[0] // 2]
    elif values.ndim > 3:
        raise ValueError(f"{entry}: only 2-D images and volumes can be benchmarked")
    return values, spacing, "photo" if colour else (modality or "other")


def entry_image(entry: str) -> TestImage:
    """A benchmark image for `--images ENTRY`: a file or packaged image, whole, not downsampled."""
    _, _, modality = _entry_values(entry)
    return TestImage(entry, entry, 1, modality, source="entry")


def load_test_image(image: TestImage) -> np.ndarray:
    """The whole (downsampled) image in [0, 1] by its own 0.1-99.9 percentile range."""
    values = block_mean(_entry_values(image.entry)[0], image.downsample)
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
    spacing = _entry_values(image.entry)[1]
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


def neural_denoiser(method: str, *, colour: bool = False, precision: str = "auto") -> Denoiser:
    from meddenoise.methods import resolve

    return resolve(method, colour=colour, precision=precision)


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

    return is_network(method)


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
    `images` (data entries) instead of the test images; `noise` labels to keep; `quick` the CT
    head and the histology image at Gaussian 25, Poisson-Gaussian 300 and colour Gaussian 25."""
    if images:
        chosen = tuple(entry_image(entry) for entry in images)
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
    """Quality (and speed) of `methods`: writes benchmark.csv and benchmark.md into `output`."""
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
    timings = run_speed(methods, large=not quick, repeats=1 if quick else 3) if speed else []
    output.mkdir(parents=True, exist_ok=True)
    write_csv(output / "benchmark.csv", rows)
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
    """
    methods = [method for method in methods if method != "rgb"]  # grey images are timed
    neural = [method for method in methods if is_neural(method)]
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
                    precision=timings.precision if method in neural else "fp32",
                    capability=timings.capability,
                    native_bf16=timings.native_bf16,
                )
            )

    native = time_methods(methods, repeats=repeats)
    add(native, methods, "native")
    if large:
        for result in results[: len(methods)]:
            if result.method in neural:
                seconds, peak = cast(list[float], _run_module(["large", result.method]))
                result.seconds_2048, result.peak_rss_gib_2048 = float(seconds), float(peak)
    if neural and native.precision == "bf16":
        fp32 = time_methods(neural, precision="fp32", repeats=repeats)
        if "bm3d" in native.seconds:  # the same process's BM3D stays the reference
            fp32.seconds["bm3d"] = native.seconds["bm3d"]
        add(fp32, neural, "native")
    if neural:
        reference = ["bm3d"] if "bm3d" in methods else []
        answer = _run_module(
            ["speed", "--precision", "fp32", "--repeats", str(repeats), *neural, *reference],
            AVX2_ENVIRONMENT,
        )
        add(Timings(**answer), neural, "AVX2 (capped)")  # type: ignore[arg-type]
    return results


def main(arguments: list[str] | None = None) -> None:
    """``python -m meddenoise.benchmark speed|large ...``: the fresh processes `run_speed` needs."""
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
    parsed = parser.parse_args(arguments)
    if parsed.command == "speed":
        answer: object = dataclasses.asdict(
            time_methods(parsed.methods, precision=parsed.precision, repeats=parsed.repeats)
        )
    else:
        answer = list(time_large(parsed.method))
    print(json.dumps(answer))


if __name__ == "__main__":
    main()
