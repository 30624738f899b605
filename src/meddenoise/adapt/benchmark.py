"""``python -m meddenoise.adapt.benchmark``: adaptation on noise the shipped models never saw.

Run by hand, not in CI (minutes to tens of minutes on one core).  For each noise setting the
noisy crops of a few images are what a user would adapt on; the clean crops are used for nothing
but the PSNR/SSIM scores.  ``--images`` picks them (`IMAGE_SETS`): ``tuning`` (outside the test
split: every setting of `adapt` was chosen there), ``final`` (test-split and held-out MR images
no earlier adaptation run looked at: the measurement), ``seen`` (the images of the session-5
runs, for reproducing them).  Rows: the noisy input, the base model blind, BM3D told the true
noise power spectrum, the PD-calibrated network (``pd-n2n`` without training; fine-tuned after
each of ``--pd-minutes`` if given), `adapt`'s default objective ``synthetic`` after each budget
in ``--minutes`` (one run per budget: the learning rate falls over the budget), plus plain
Neighbor2Neighbor (``n2n``, forced) after ``--n2n-minutes``.  The synthetic objective trains
on the base model's clean training images, which hold the tuning set's camera, MR abdomen, CT
neck and CR leg: tuning rows are optimistic for it; the final set's images are in no training
set.

Settings:

- ``corr-weak`` / ``corr-strong``: white Gaussian noise through a Gaussian blur kernel
  (``sigma`` 1 px, 5 x 5, circular), scaled to a std of 10 and 20 / 255;
- ``white``: white Gaussian noise of std 15 / 255 (the control: adaptation must not harm);
- ``ct-hamming``: low-dose CT (10 % dose, 1 mm pixels) reconstructed with a Hamming filter cut
  off at half the Nyquist frequency, a kernel outside the ct-lowdose training range (ramp,
  Shepp-Logan, Hann at the full band; configs/ct_lowdose_calibrated.yaml); whole slices, made
  nearly noise-free first (`ct_cases`), scored on their central 256² against the noise-free
  reconstruction through the same filter.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import logging
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from meddenoise import metrics
from meddenoise.adapt.guard import GuardReport, compare
from meddenoise.adapt.workflow import (
    NoiseMeasurement,
    choose_pd_factor,
    denoiser_for,
    fine_tune,
    hold_back,
    inference_level_map,
    patch_side,
    validation_patches,
)
from meddenoise.arrays import central_crop

if TYPE_CHECKING:
    from meddenoise.benchmark import TestImage

logger = logging.getLogger(__name__)

CROP = 256
KERNEL_SIGMA = 1.0
SETTINGS = ("corr-weak", "corr-strong", "white", "ct-hamming")
CT_DOSE = 0.1
CT_SPACING_MM = 1.0  # the ct-grid's widest pixel: the most noise per pixel at a dose
CT_FILTER, CT_CUTOFF = "hamming", 0.5
PSD_DRAWS = 4  # noise draws the CT noise's power spectrum is averaged over


@dataclass(frozen=True)
class Case:
    label: str
    clean: np.ndarray  # for scoring only
    noisy: np.ndarray
    psd: np.ndarray  # the noise's power spectrum in bm3d's convention (white: sigma² H W)


def blur_kernel(sigma: float = KERNEL_SIGMA) -> np.ndarray:
    """A 5 x 5 Gaussian kernel scaled to unit energy (sum of squares 1)."""
    offsets = np.arange(-2, 3)
    profile = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel = np.outer(profile, profile)
    return kernel / np.sqrt(np.sum(kernel**2))


def correlated_noise(
    shape: tuple[int, int], std: float, kernel: np.ndarray | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Noise of std `std` (white when `kernel` is None; else white noise circularly convolved
    with `kernel`) and its exact power spectrum in bm3d's convention."""
    from scipy.ndimage import convolve

    white = rng.normal(0.0, std, shape)
    if kernel is None:
        return white, np.full(shape, std**2 * shape[0] * shape[1])
    noise = convolve(white, kernel, mode="wrap")
    padded = np.zeros(shape)
    padded[: kernel.shape[0], : kernel.shape[1]] = kernel
    psd = np.abs(np.fft.fft2(padded)) ** 2 * std**2 * shape[0] * shape[1]
    return noise, psd


@dataclass(frozen=True)
class ImageSet:
    """The grey images (`meddenoise.benchmark.TestImage`) and the CT entries of one run."""

    grey: tuple[TestImage, ...]
    ct: tuple[tuple[str, str], ...]  # (label, data entry)


def _image_sets() -> dict[str, ImageSet]:
    from meddenoise.benchmark import HELDOUT_MR, TEST_IMAGES, TestImage

    known = {image.label: image for image in (*TEST_IMAGES, *HELDOUT_MR)}
    return {
        # Outside the test split and the held-out MR set (`meddenoise.splits` refuses them in
        # training, not here: these are for choosing settings, which the test split never is).
        "tuning": ImageSet(
            (
                TestImage("camera", "camera", 2, "CR", source="skimage"),
                TestImage(
                    "MR abdomen",
                    "pydicom:MR-SIEMENS-DICOM-WithOverlays.dcm",
                    1,
                    "MR",
                    source="entry",
                ),
                TestImage("CT neck", "pydicom:bad_sequence.dcm", 1, "CT", source="entry"),
                TestImage("CR leg", "pydicom:RG3_UNCR.dcm", 4, "CR", source="entry"),
            ),
            (
                ("CT neck", "pydicom:bad_sequence.dcm"),
                ("CT head (J2K)", "pydicom:J2K_pixelrep_mismatch.dcm"),
            ),
        ),
        # Test-split and held-out MR images that no adaptation run before 2026-11-29 session 6
        # scored.  No CT is left unseen: the test split's two CT slices served ct-hamming in the
        # session-5 runs, whose residual-size guard was set after seeing them.
        "final": ImageSet(
            tuple(
                known[label]
                for label in (
                    "CR chest",
                    "MR brain T1 template z56",
                    "MR brain EPI z16",
                    "MR neck TOF angiogram",
                )
            ),
            (("CT head", "pydicom:693_UNCR.dcm"), ("CT abdomen", "pydicom:explicit_VR-UN.dcm")),
        ),
        # The images of the session-5 runs 1 and 2 (docs/adapt.md).
        "seen": ImageSet(
            tuple(
                known[label]
                for label in (
                    "CT head",
                    "MR shoulder",
                    "MR head sagittal T1",
                    "MR brain T1 template z108",
                )
            ),
            (("CT head", "pydicom:693_UNCR.dcm"), ("CT abdomen", "pydicom:explicit_VR-UN.dcm")),
        ),
    }


IMAGE_SET_NAMES = ("tuning", "final", "seen")


def _images(images: Sequence[TestImage]) -> dict[str, np.ndarray]:
    from meddenoise.benchmark import load_test_image

    return {image.label: central_crop(load_test_image(image), CROP) for image in images}


def gaussian_cases(setting: str, images: Sequence[TestImage], seed: int) -> list[Case]:
    std = {"corr-weak": 10 / 255, "corr-strong": 20 / 255, "white": 15 / 255}[setting]
    kernel = None if setting == "white" else blur_kernel()
    rng = np.random.default_rng(seed)
    cases = []
    for label, clean in _images(images).items():
        noise, psd = correlated_noise(clean.shape, std, kernel, rng)
        cases.append(Case(label, clean, (clean + noise).astype(np.float32), psd))
    return cases


def ct_cases(entries: Sequence[tuple[str, str]], seed: int) -> list[Case]:
    """Whole simulated slices: adaptation and every method see the whole noisy slice, as a user's
    series gives them, and `score` reads the central `CROP` square.  The slices are first made
    nearly noise-free (`load_ct_slice`'s BM3D clean reference, as the CT grid's): a real slice's
    own noise is the size of the added noise here, and a method that removed both would be
    scored down against the slice as it is."""
    from meddenoise.benchmark import load_ct_slice
    from meddenoise.noise import LowDoseCT

    rng = np.random.default_rng(seed)
    cases = []
    for label, entry in entries:
        ct_slice = load_ct_slice(entry, clean_reference=True)
        model = LowDoseCT(
            dose_fraction=CT_DOSE,
            pixel_spacing_mm=CT_SPACING_MM,
            filter_name=CT_FILTER,
            filter_cutoff=CT_CUTOFF,
        )
        sinogram = model.sinogram(ct_slice.clean)
        shape = ct_slice.clean.shape
        reference = model.noise_free_from_sinogram(sinogram, shape)
        noisy = model.noisy_from_sinogram(sinogram, shape, rng)
        # The true power spectrum: the mean periodogram of independent draws of the noise.
        periodograms = [
            np.abs(np.fft.fft2(model.noisy_from_sinogram(sinogram, shape, rng) - reference)) ** 2
            for _ in range(PSD_DRAWS)
        ]
        cases.append(Case(label, reference, noisy, np.mean(periodograms, axis=0)))
    return cases


@contextlib.contextmanager
def _numpy_trapz() -> Iterator[None]:
    """bm4d (behind bm3d 4.0.3) still calls ``np.trapz``, which numpy 2 removed, when it is given
    a power spectrum; lend it ``np.trapezoid`` (the same function) for the call."""
    missing = not hasattr(np, "trapz")
    if missing:
        np.trapz = np.trapezoid  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if missing:
            del np.trapz  # type: ignore[attr-defined]


def bm3d_psd(case: Case) -> np.ndarray:
    import bm3d

    with _numpy_trapz():
        return np.asarray(bm3d.bm3d(case.noisy.astype(np.float64), case.psd), dtype=np.float32)


@dataclass
class Row:
    setting: str
    method: str
    psnr: float
    ssim: float
    seconds: float


def on_noisy(denoiser: Callable[[np.ndarray], np.ndarray]) -> Callable[[Case], np.ndarray]:
    """`denoiser` run on a case's noisy image, for `score`."""
    return lambda case: denoiser(case.noisy)


def score(
    setting: str, method: str, cases: Sequence[Case], run: Callable[[Case], np.ndarray]
) -> Row:
    psnrs, ssims, started = [], [], time.monotonic()
    for case in cases:
        # The central CROP square (the whole image for the grey settings' crops).
        clean, output = central_crop(case.clean, CROP), central_crop(run(case), CROP)
        psnrs.append(metrics.psnr(clean, output, data_range=1.0))
        ssims.append(metrics.ssim(clean, output, data_range=1.0))
    row = Row(setting, method, float(np.mean(psnrs)), float(np.mean(ssims)),
              time.monotonic() - started)  # fmt: skip
    logger.info("%-12s %-22s %6.2f dB  SSIM %.4f", setting, method, row.psnr, row.ssim)
    return row


def adapted_rows(
    setting: str,
    cases: Sequence[Case],
    minutes: Sequence[float],
    *,
    objective: str,
    seed: int,
    early_stopping: bool = True,
) -> tuple[list[Row], list[str]]:
    """`adapt`'s calibrated network (pd-n2n), then one fine-tuning run of max(minutes) scored at
    each budget; the guard's verdict on the calibrated and on the fine-tuned network."""
    from meddenoise.checkpoint import load_checkpoint
    from meddenoise.methods import shipped_weights
    from meddenoise.models.pd_cond_unet import PDCondUNet

    path = shipped_weights("grey")
    assert path is not None
    checkpoint = load_checkpoint(path)
    planes = [case.noisy[..., None] for case in cases]
    training, held_back = hold_back(planes)
    measured = choose_pd_factor(training)
    factor = 1 if objective == "n2n" else measured.pd_factor
    if objective != "n2n" and factor == 1:  # measured white: `adapt` keeps the base model
        kept = denoiser_for(checkpoint.network, checkpoint.level_map, "grey")
        row = score(setting, "adapt (noise white: base kept)", cases, lambda c: kept(c.noisy))
        correlation = np.round(measured.correlation, 3).tolist()
        return [row], [f"{setting}: noise measured white ({correlation}), base model kept"]
    levels = "sub-images" if objective != "n2n" else checkpoint.level_map
    network = PDCondUNet(**checkpoint.arguments, pd_factor=factor)
    network.load_state_dict(checkpoint.network.state_dict())
    name = f"{objective} (PD {factor})" if objective != "n2n" else "n2n"
    rows: list[Row] = []
    base = denoiser_for(checkpoint.network, checkpoint.level_map, "grey")
    guard_planes = [plane[..., 0] for plane in held_back]
    # The guard on the network before any fine-tuning (for n2n: the base weights at stride 1).
    calibrated = denoiser_for(copy.deepcopy(network), levels, name)
    calibrated_report = compare(base, calibrated, guard_planes)
    if objective != "n2n":
        rows.append(score(setting, f"calibrated (PD {factor})", cases,
                          lambda c: calibrated(c.noisy)))  # fmt: skip
    budgets = [value for value in minutes if value > 0]
    tuned = None
    if budgets:
        level_maps = [inference_level_map(plane, levels, factor) for plane in training]
        if not early_stopping:
            name += ", no early stop"

        def snapshot(seconds: float, current: PDCondUNet) -> None:
            denoiser = denoiser_for(copy.deepcopy(current), levels, name)
            rows.append(
                score(setting, f"{name} {seconds / 60:g} min", cases, lambda c: denoiser(c.noisy))
            )

        rng = np.random.default_rng(seed)
        validation = None
        if early_stopping:
            held_maps = [inference_level_map(plane, levels, factor) for plane in held_back]
            patch = patch_side([*training, *held_back], factor)
            validation = validation_patches(held_back, held_maps, patch, rng)
        tuned = fine_tune(
            network,
            training,
            level_maps,
            seconds=max(budgets) * 60,
            rng=rng,
            validation=validation,
            snapshots=[60 * value for value in budgets],
            on_snapshot=snapshot,
        )
    lines = [guard_line(f"{setting} {name} calibrated", calibrated_report, measured)]
    if tuned is not None:
        report = compare(base, denoiser_for(network, levels, name), guard_planes)
        lines.append(
            guard_line(f"{setting} {name} fine-tuned", report, measured)
            + f"; {tuned.steps} steps, weights of {tuned.best_seconds} s kept"
        )
    for line in lines:
        logger.info("%s", line)
    return rows, lines


def synthetic_rows(
    setting: str, cases: Sequence[Case], minutes: Sequence[float], *, seed: int
) -> tuple[list[Row], list[str]]:
    """`adapt`'s default objective ("synthetic"): one training run per budget in `minutes`, each
    from the base model and scored; the guard's verdict on the longest budget's network."""
    from meddenoise.adapt.synthetic import level_map_for, train_for_measured_noise
    from meddenoise.checkpoint import load_checkpoint
    from meddenoise.inference import per_pixel_levels
    from meddenoise.methods import shipped_weights

    path = shipped_weights("grey")
    assert path is not None
    checkpoint = load_checkpoint(path)
    planes = [case.noisy for case in cases]
    training, held_back = hold_back([plane[..., None] for plane in planes])
    training_values = [plane[..., 0] for plane in training]
    measured = choose_pd_factor(training)
    base = denoiser_for(checkpoint.network, checkpoint.level_map, "grey")
    if measured.pd_factor == 1:  # measured white: `adapt` keeps the base model
        row = score(setting, "synthetic (noise white: base kept)", cases, lambda c: base(c.noisy))
        correlation = np.round(measured.correlation, 3).tolist()
        return [row], [f"{setting}: noise measured white ({correlation}), base model kept"]
    rows: list[Row] = []
    # As `adapt` decides from the files' DICOM Modality: the CT setting's slices are CT.
    rule = level_map_for(["CT"] if setting.startswith("ct") else [None])
    # The CT setting's slices are simulated at CT_SPACING_MM per pixel, as their files would say.
    spacing = CT_SPACING_MM if setting.startswith("ct") else None

    # One run per budget, each from the base model: the learning rate falls over the whole
    # budget, so a snapshot of a longer run is not what `adapt --minutes N` gives.
    budgets = sorted(value for value in minutes if value > 0)
    for budget in budgets:
        network = copy.deepcopy(checkpoint.network)
        trained, _ = train_for_measured_noise(
            network,
            checkpoint,
            training_values,
            seconds=budget * 60,
            rng=np.random.default_rng(seed),
            level_map=rule,
            pixel_spacing_mm=spacing,
            level_planes=[plane[..., 0] for plane in held_back],
        )
        adapted = denoiser_for(network, rule, "synthetic", spacing)
        rows.append(score(setting, f"synthetic {budget:g} min", cases, on_noisy(adapted)))
    report = compare(
        base, adapted, [p[..., 0] for p in held_back], noise_levels=per_pixel_levels(rule, spacing)
    )
    line = guard_line(f"{setting} synthetic {budgets[-1]:g} min", report, measured)
    line += f"; {trained.steps} steps, levels trained {np.round(trained.levels, 4).tolist()}"
    logger.info("%s", line)
    return rows, [line]


def guard_line(label: str, report: GuardReport, measured: NoiseMeasurement) -> str:
    """The guard's verdict and figures, and what the noise measured, in one line."""
    verdict = "keeps base" if report.worse else "writes adapted"
    return (
        f"{label}: guard {verdict}; method noise {report.method_noise_base:.3f} -> "
        f"{report.method_noise_adapted:.3f}, above its surrogate {report.structure_base:.3f} -> "
        f"{report.structure_adapted:.3f}, correlation mismatch "
        f"{report.correlation_mismatch_base:.3f} -> {report.correlation_mismatch_adapted:.3f}, "
        f"residual / noise std {report.residual_ratio_base:.2f} -> "
        f"{report.residual_ratio_adapted:.2f}"
        f" (noise correlation {np.round(report.noise_correlation, 3).tolist()}; noise std by "
        f"PD stride {np.round(measured.levels, 4).tolist()})"
    )


def run(
    settings: Sequence[str],
    minutes: Sequence[float],
    n2n_minutes: float | None,
    seed: int,
    *,
    images: str = "final",
    early_stopping: bool = True,
    pd_minutes: Sequence[float] = (),
) -> tuple[list[Row], list[str]]:
    from meddenoise.methods import resolve

    chosen = _image_sets()[images]
    base = resolve("grey", precision="fp32")
    rows: list[Row] = []
    guard_lines: list[str] = []
    for setting in settings:
        if setting == "ct-hamming":
            cases = ct_cases(chosen.ct, seed)
        else:
            cases = gaussian_cases(setting, chosen.grey, seed)
        rows.append(score(setting, "noisy", cases, lambda c: c.noisy))
        rows.append(score(setting, "grey (base, blind)", cases, lambda c: base(c.noisy)))
        rows.append(score(setting, "BM3D (true PSD)", cases, bm3d_psd))
        adapted, lines = adapted_rows(
            setting,
            cases,
            pd_minutes,
            objective="pd-n2n",
            seed=seed,
            early_stopping=early_stopping,
        )
        rows.extend(adapted)
        guard_lines.extend(lines)
        if any(value > 0 for value in minutes):
            trained, lines = synthetic_rows(setting, cases, minutes, seed=seed)
            rows.extend(trained)
            guard_lines.extend(lines)
        if n2n_minutes:
            plain, lines = adapted_rows(
                setting,
                cases,
                [n2n_minutes],
                objective="n2n",
                seed=seed,
                early_stopping=early_stopping,
            )
            rows.extend(plain)
            guard_lines.extend(lines)
    return rows, guard_lines


def table(rows: Sequence[Row]) -> str:
    lines = ["| setting | method | PSNR (dB) | SSIM |", "|---|---|---|---|"]
    lines += [f"| {r.setting} | {r.method} | {r.psnr:.2f} | {r.ssim:.4f} |" for r in rows]
    return "\n".join(lines)


def main(arguments: list[str] | None = None) -> None:
    """Run the adaptation benchmark and print a Markdown table (and write it with ``-o``)."""
    parser = argparse.ArgumentParser(prog="python -m meddenoise.adapt.benchmark")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=SETTINGS)
    parser.add_argument("--images", default="final", choices=IMAGE_SET_NAMES)
    parser.add_argument(
        "--minutes",
        nargs="+",
        type=float,
        default=[1.0, 3.0, 10.0],
        help="budgets of the synthetic objective (adapt's default); 0: none",
    )
    parser.add_argument(
        "--pd-minutes",
        nargs="+",
        type=float,
        default=[0.0],
        help="budgets of pd-n2n fine-tuning after the PD calibration; 0: calibration only",
    )
    parser.add_argument("--n2n-minutes", type=float, default=0.0, help="0: no n2n rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-early-stopping", action="store_true")
    parser.add_argument("-o", "--output", type=Path)
    parsed = parser.parse_args(arguments)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.monotonic()
    rows, guard_lines = run(
        parsed.settings,
        parsed.minutes,
        parsed.n2n_minutes,
        parsed.seed,
        images=parsed.images,
        early_stopping=not parsed.no_early_stopping,
        pd_minutes=parsed.pd_minutes,
    )
    text = "\n".join(
        [
            f"Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; machine: {platform.machine()}, "
            f"{platform.python_implementation()} {platform.python_version()}; images "
            f"{parsed.images!r}; "
            f"{(time.monotonic() - started) / 60:.1f} min in all.",
            "",
            table(rows),
            "",
            *[f"- {line}" for line in guard_lines],
            "",
        ]
    )
    print(text)
    if parsed.output is not None:
        from meddenoise.io.base import atomic_output

        with atomic_output(parsed.output) as handle:
            handle.write(text.encode())


if __name__ == "__main__":
    main()
