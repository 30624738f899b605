"""Benchmark the classical denoisers on real CT, CR and MR crops with synthetic Gaussian noise.

Protocol (docs/benchmarks.md):
- images read with pydicom (pixel_array, then the modality LUT); CR RG1_UNCR / RG3_UNCR are
  downsampled 4 x 4 by block mean and MR2_UNCR 2 x 2 (to 512 x 512) first, so one crop holds
  anatomy rather than a few millimetres of it;
- each image mapped to [0, 1] by its own 0.1-99.9 percentiles and clipped; a centred 256 x 256 crop;
- white Gaussian noise of sigma 15, 25, 50 / 255 from ``np.random.default_rng(seed)`` with a fixed
  seed per (image, sigma), not clipped;
- ``--split test``: the held-out test images, each method given the true sigma;
  ``--split tuning``: the images used for tuning, each method estimating sigma itself (blind);
- PSNR and SSIM with data_range 1.0; seconds per megapixel of one call, single process.

Usage:
    python scripts/benchmark_classical.py --split test --out test.csv
    python scripts/benchmark_classical.py --split tuning
    python scripts/benchmark_classical.py --estimators   # the noise-estimator comparison
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import platform
import time
from dataclasses import dataclass

import numpy as np
import pydicom
import skimage.data
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_modality_lut
from skimage.transform import downscale_local_mean

from meddenoise.classical import make_denoiser
from meddenoise.estimate import mad_sigma, pca_sigma
from meddenoise.metrics import psnr, ssim

CROP_SIZE = 256
SIGMAS_255 = (15, 25, 50)
METHOD_NAMES = ("median", "gaussian", "bilateral", "nlm", "tv", "wavelet", "bm3d")


@dataclass(frozen=True)
class Source:
    """One benchmark image: a pydicom test file, its label and its block-mean downsampling."""

    label: str
    filename: str
    downsample: int = 1


SPLITS: dict[str, tuple[Source, ...]] = {
    "test": (
        Source("CT 693_UNCR", "693_UNCR.dcm"),
        Source("CR RG1_UNCR /4", "RG1_UNCR.dcm", 4),
        Source("MR MR2_UNCR /2", "MR2_UNCR.dcm", 2),
    ),
    "tuning": (
        Source("CT bad_sequence", "bad_sequence.dcm"),
        Source("CR RG3_UNCR /4", "RG3_UNCR.dcm", 4),
        Source("MR MR-SIEMENS", "MR-SIEMENS-DICOM-WithOverlays.dcm"),
    ),
}


def load_unit_image(source: Source) -> np.ndarray:
    """The source's first frame in modality units, downsampled, mapped to [0, 1]: (H, W) float64."""
    path = get_testdata_file(source.filename, download=False)
    if path is None:
        raise FileNotFoundError(f"{source.filename} not found: pip install pydicom-data")
    dataset = pydicom.dcmread(path)
    pixels = apply_modality_lut(dataset.pixel_array, dataset).astype(np.float64)
    if pixels.ndim == 3:
        pixels = pixels[0]
    if source.downsample > 1:
        pixels = downscale_local_mean(pixels, (source.downsample, source.downsample))
    low, high = np.percentile(pixels, [0.1, 99.9])
    return np.clip((pixels - low) / (high - low), 0.0, 1.0)


def centre_crop(image: np.ndarray, size: int = CROP_SIZE) -> np.ndarray:
    top = (image.shape[0] - size) // 2
    left = (image.shape[1] - size) // 2
    return image[top : top + size, left : left + size]


def add_noise(clean: np.ndarray, sigma: float, seed: int) -> np.ndarray:
    return clean + np.random.default_rng(seed).normal(0.0, sigma, clean.shape)


def available_names() -> list[str]:
    names = list(METHOD_NAMES)
    if importlib.util.find_spec("bm3d") is None:
        names.remove("bm3d")
    return names


def run_denoisers(split: str) -> list[dict[str, object]]:
    """One row per (image, sigma, method), including the unfiltered noisy input."""
    blind = split == "tuning"
    rows: list[dict[str, object]] = []
    names = available_names()
    warm = np.random.default_rng(0).random((64, 64))
    for name in names:  # first calls pay for imports and caches; keep them out of the timings
        make_denoiser(name, sigma=0.1)(warm)
    for image_index, source in enumerate(SPLITS[split]):
        clean = centre_crop(load_unit_image(source))
        for sigma_255 in SIGMAS_255:
            sigma = sigma_255 / 255
            noisy = add_noise(clean, sigma, seed=1000 * image_index + sigma_255)
            base = {"split": split, "image": source.label, "sigma_255": sigma_255}
            rows.append(
                base
                | {
                    "method": "noisy",
                    "psnr": psnr(clean, noisy, data_range=1.0),
                    "ssim": ssim(clean, noisy, data_range=1.0),
                    "seconds_per_megapixel": 0.0,
                }
            )
            for name in names:
                denoiser = make_denoiser(name, sigma=None if blind else sigma)
                start = time.perf_counter()
                denoised = denoiser(noisy)
                seconds = time.perf_counter() - start
                rows.append(
                    base
                    | {
                        "method": name,
                        "psnr": psnr(clean, denoised, data_range=1.0),
                        "ssim": ssim(clean, denoised, data_range=1.0),
                        "seconds_per_megapixel": seconds / (clean.size / 1e6),
                    }
                )
                print(f"  {source.label} sigma {sigma_255}: {name} done", flush=True)
    return rows


def markdown_tables(rows: list[dict[str, object]]) -> str:
    """One table per sigma (PSNR dB / SSIM per image, their mean, s/MP) and an all-sigma summary."""
    images = list(dict.fromkeys(str(row["image"]) for row in rows))
    methods = list(dict.fromkeys(str(row["method"]) for row in rows))
    lookup = {(row["image"], row["sigma_255"], row["method"]): row for row in rows}
    lines: list[str] = []
    for sigma_255 in SIGMAS_255:
        lines.append(f"\nsigma = {sigma_255}/255 (PSNR dB / SSIM)\n")
        lines.append("| method | " + " | ".join(images) + " | mean | s/MP |")
        lines.append("|---" * (len(images) + 3) + "|")
        for method in methods:
            cells = [lookup[(image, sigma_255, method)] for image in images]
            mean_psnr = np.mean([float(cell["psnr"]) for cell in cells])
            mean_ssim = np.mean([float(cell["ssim"]) for cell in cells])
            speed = np.mean([float(cell["seconds_per_megapixel"]) for cell in cells])
            lines.append(
                f"| {method} | "
                + " | ".join(f"{float(c['psnr']):.2f} / {float(c['ssim']):.3f}" for c in cells)
                + f" | **{mean_psnr:.2f} / {mean_ssim:.3f}** | {speed:.2f} |"
            )
    lines.append("\nMean over all images and sigmas\n")
    lines.append("| method | PSNR dB | SSIM | s/MP |")
    lines.append("|---|---|---|---|")
    for method in methods:
        selected = [row for row in rows if row["method"] == method]
        lines.append(
            f"| {method} | {np.mean([float(r['psnr']) for r in selected]):.2f} | "
            f"{np.mean([float(r['ssim']) for r in selected]):.3f} | "
            f"{np.mean([float(r['seconds_per_megapixel']) for r in selected]):.2f} |"
        )
    return "\n".join(lines)


def estimator_table() -> str:
    """Relative error of the PCA and wavelet-MAD noise estimators on tuning-split crops.

    Three 256 x 256 and three 64 x 64 crops of each tuning image (CR not downsampled, so its
    intrinsic noise is full-resolution), sigma 5/15/25/50 /255; then skimage's camera and a
    padded CT slice (J2K_pixelrep_mismatch), both outside the test split.
    """
    estimators = {"pca": pca_sigma, "mad": mad_sigma}
    rng = np.random.default_rng(0)
    lines = ["| crops | sigma/255 | PCA mean / mean abs rel. error | MAD mean / mean abs |"]
    lines.append("|---|---|---|---|")
    for size in (256, 64):
        for sigma_255 in (5, 15, 25, 50):
            errors: dict[str, list[float]] = {key: [] for key in estimators}
            for source in SPLITS["tuning"]:
                image = load_unit_image(Source(source.label, source.filename))
                for row_fraction, column_fraction in ((0.5, 0.5), (0.35, 0.4), (0.6, 0.65)):
                    top = int(row_fraction * image.shape[0] - size / 2)
                    left = int(column_fraction * image.shape[1] - size / 2)
                    crop = image[top : top + size, left : left + size]
                    noisy = crop + rng.normal(0.0, sigma_255 / 255, crop.shape)
                    for key, estimator in estimators.items():
                        errors[key].append(estimator([noisy]) / (sigma_255 / 255) - 1.0)
            cells = [
                f"{np.mean(values):+.1%} / {np.mean(np.abs(values)):.1%}"
                for values in errors.values()
            ]
            lines.append(f"| {size} x {size} | {sigma_255} | " + " | ".join(cells) + " |")
    # Two harder cases: fine natural texture, and a CT slice whose field of view is surrounded by
    # noise-free constant padding (43% of the pixels, as after reconstruction).
    camera = skimage.data.camera() / 255.0
    padded_ct = load_unit_image(Source("CT J2K", "J2K_pixelrep_mismatch.dcm"))
    padding = padded_ct == padded_ct.min()
    padding[:100] = True
    padding[-100:] = True
    for label, image, mask in (
        ("camera 512 x 512 (texture)", camera, None),
        (f"CT 512 x 512, {padding.mean():.0%} padding", padded_ct, padding),
    ):
        for sigma_255 in (5, 25):
            noisy = image + rng.normal(0.0, sigma_255 / 255, image.shape)
            if mask is not None:
                noisy[mask] = 0.0
            cells = [
                f"{estimator([noisy]) / (sigma_255 / 255) - 1.0:+.1%}"
                for estimator in estimators.values()
            ]
            lines.append(f"| {label} | {sigma_255} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(rows: list[dict[str, object]], path: str) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", choices=list(SPLITS), default="test")
    parser.add_argument("--out", help="write one CSV row per image, sigma and method here")
    parser.add_argument(
        "--estimators", action="store_true", help="compare the noise estimators instead"
    )
    arguments = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, numpy {np.__version__}")
    if arguments.estimators:
        print(estimator_table())
        return
    rows = run_denoisers(arguments.split)
    sigma_note = "estimated by each method" if arguments.split == "tuning" else "true sigma given"
    print(f"\n## split: {arguments.split} ({sigma_note})")
    print(markdown_tables(rows))
    if arguments.out:
        write_csv(rows, arguments.out)


if __name__ == "__main__":
    main()
