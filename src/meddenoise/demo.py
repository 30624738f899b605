"""`make demo`: real CT, CR and MR images, realistic noise, the default denoiser, a report.

The images come from the pydicom-data package (the `demo` extra; nothing downloads).
Each is written three times in its own format (clean copy untouched, noisy, denoised) and the
report shows clean / noisy / denoised / residual with PSNR and SSIM against the clean image.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from meddenoise import metrics
from meddenoise.io import image_properties, read_image, write_image
from meddenoise.methods import default_method, resolve
from meddenoise.noise import (
    LEGACY_FULL_DOSE_PHOTONS,
    GaussianNoise,
    LowDoseCT,
    PoissonGaussianNoise,
    fit_to_image,
)
from meddenoise.pipeline import denoise_image, transform_image
from meddenoise.report import display_window, markdown_table, save_panels, write_text
from meddenoise.types import NoiseModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoCase:
    title: str
    file_name: str
    noise: NoiseModel
    noise_label: str
    model: str | None = None  # the shipped model made for this case, used by method "default"


DEMO_CASES = (
    DemoCase(
        "CT head",
        "693_UNCR.dcm",
        # The physics the shipped ct-lowdose was trained on (before the calibration, issue 14):
        # 25 % of that full dose is about 0.2 % of the calibrated one (docs/ct-physics.md).
        LowDoseCT(dose_fraction=0.25, full_dose_photons=LEGACY_FULL_DOSE_PHOTONS),
        "low-dose CT, 25% of the legacy full dose",
        model="ct-lowdose",
    ),
    DemoCase(
        "CR chest",
        "RG1_UNCR.dcm",
        PoissonGaussianNoise(photons=300.0, read_noise=0.01),
        "Poisson-Gaussian, 300 photons, read noise 0.01",
    ),
    DemoCase(
        "MR shoulder", "MR2_UNCR.dcm", GaussianNoise(sigma=15 / 255), "Gaussian, sigma 15/255"
    ),
)


def _demo_file(name: str) -> Path:
    from meddenoise.data import DataError, packaged_image

    try:
        path = packaged_image(f"pydicom:{name}")
    except DataError as error:
        raise RuntimeError(f"demo image missing: {error}") from None
    assert isinstance(path, Path)
    return path


def case_method(method: str, case: DemoCase) -> str:
    """`method`, except that "default" means the shipped model made for the case (the low-dose
    CT model for the CT case) when its weights are installed."""
    from meddenoise.methods import shipped_weights

    if method == "default" and case.model is not None and shipped_weights(case.model):
        return case.model
    return method


def run_demo(output: Path, *, method: str = "default", seed: int = 0) -> Path:
    """Run every demo case into `output`; return the path of the Markdown report."""
    generator = np.random.default_rng(seed)
    rows = []
    figures = []
    for case in DEMO_CASES:
        source = _demo_file(case.file_name)
        clean = read_image(source)
        noise_model = fit_to_image(case.noise, image_properties(clean))
        noisy_image = transform_image(
            clean,
            lambda unit: noise_model(unit, generator),  # noqa: B023 - used at once
            method="simulated noise",
            parameters={"noise": case.noise_label, "seed": seed},
        )
        noisy_path = output / "noisy" / case.file_name
        write_image(noisy_image, noisy_path)
        noisy = read_image(noisy_path)
        # Denoise what was written, with the clean image's mapping, so metrics share one scale.
        noisy.meta.mapping = clean.meta.mapping
        chosen = case_method(method, case)
        if chosen == "default":  # the report names what `default` chose for this image
            chosen = default_method(colour=False)
        denoiser = resolve(chosen, colour=False)
        started = time.perf_counter()
        denoised = denoise_image(noisy, denoiser)
        seconds = time.perf_counter() - started
        denoised_path = output / "denoised" / case.file_name
        report = write_image(denoised, denoised_path)
        reference = np.asarray(clean.array, dtype=np.float64)
        valid = (
            ~clean.meta.keep_mask
            if clean.meta.keep_mask is not None
            else np.ones_like(reference, bool)
        )
        data_range = clean.meta.mapping.scale
        scores = {}
        for label, array in (("noisy", noisy.array), ("denoised", denoised.array)):
            test = np.where(valid, np.asarray(array, dtype=np.float64), reference)
            scores[label] = metrics.summary(reference, test, data_range=data_range)
        rows.append(
            (
                case.title,
                case.noise_label,
                f"`{chosen}`",
                scores["noisy"]["psnr"],
                scores["denoised"]["psnr"],
                scores["noisy"]["ssim"],
                scores["denoised"]["ssim"],
                f"{seconds:.1f}",
                report.clipped,
            )
        )
        figure_name = f"{Path(case.file_name).stem}.png"
        window = display_window(reference[valid])
        invert = clean.meta.details.photometric_out == "MONOCHROME1"
        save_panels(
            output / "figures" / figure_name,
            [
                ("clean", reference),
                (f"noisy {scores['noisy']['psnr']:.2f} dB", noisy.array),
                (f"denoised {scores['denoised']['psnr']:.2f} dB", denoised.array),
                ("residual (noisy - denoised)", metrics.residual(noisy.array, denoised.array)),
            ],
            window=window,
            invert=invert,
            residual_index=3,
        )
        figures.append((case.title, figure_name))
        logger.info(
            "%s: %.2f -> %.2f dB", case.title, scores["noisy"]["psnr"], scores["denoised"]["psnr"]
        )

    table = markdown_table(
        [
            "image",
            "noise",
            "method",
            "PSNR noisy",
            "PSNR denoised",
            "SSIM noisy",
            "SSIM denoised",
            "seconds",
            "clipped values",
        ],
        rows,
    )
    text = [
        "# meddenoise demo",
        "",
        f"Method: `{method}`"
        + (" (each case's shipped model)" if method == "default" else "")
        + ", noise level estimated from each image.",
        "PSNR and SSIM against the clean image, with the clean image's value range as the data "
        "range (DICOM padding pixels excluded). Residual = noisy - denoised: anatomy in it means "
        "the method removed anatomy.",
        "",
        table,
        "",
        "Outputs: `noisy/` and `denoised/` hold derived DICOMs (new series, DERIVED\\SECONDARY, "
        "source referenced).",
        "",
    ]
    for title, figure_name in figures:
        text += [f"## {title}", "", f"![{title}](figures/{figure_name})", ""]
    report_path = output / "report.md"
    write_text(report_path, "\n".join(text))
    return report_path
