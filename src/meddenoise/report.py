"""Pictures and Markdown for people: before / noisy / denoised / residual panels and result tables.

Display only: every picture here is a windowed 8-bit rendering, never written back as data.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from meddenoise.arrays import central_crop
from meddenoise.io.base import atomic_write_with
from meddenoise.types import Layout, is_colour


def display_window(reference: np.ndarray) -> tuple[float, float]:
    """The 0.5-99.5 percentile range of `reference`, used for every panel of one figure."""
    low, high = np.percentile(reference, [0.5, 99.5])
    return float(low), float(high if high > low else low + 1.0)


def to_display(
    image: np.ndarray, window: tuple[float, float], *, invert: bool = False
) -> np.ndarray:
    """Window `image` to [0, 1] for display; `invert` shows MONOCHROME1 as radiologists see it."""
    low, high = window
    shown = np.clip((np.asarray(image, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    return 1.0 - shown if invert else shown


def middle_slice(image: np.ndarray, layout: Layout) -> np.ndarray:
    """A 2-D (or RGB) picture of any layout: the middle slice or frame of volumes."""
    while image.ndim > (3 if is_colour(layout) else 2):
        image = image[image.shape[0] // 2]
    return image


def save_panels(
    path: Path,
    panels: Sequence[tuple[str, np.ndarray]],
    *,
    window: tuple[float, float],
    invert: bool = False,
    residual_index: int | None = None,
    crop_size: int = 256,
) -> None:
    """Pictures side by side with titles; for large images a second row of native-resolution crops.

    Downsampled whole images hide noise, so images wider than twice `crop_size` also get their
    central `crop_size` square at full resolution.  The residual gets a symmetric range around 0.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_crops = max(panels[0][1].shape[:2]) > 2 * crop_size
    rows = 2 if with_crops else 1
    figure, axes = plt.subplots(
        rows, len(panels), figsize=(3.2 * len(panels), 3.5 * rows), squeeze=False
    )
    for index, (title, picture) in enumerate(panels):
        if index == residual_index:
            spread = float(np.percentile(np.abs(picture), 99.5)) or 1.0
            shown = np.clip(picture / (2 * spread) + 0.5, 0.0, 1.0)
        else:
            shown = to_display(picture, window, invert=invert)
        versions = [shown, central_crop(shown, crop_size)] if with_crops else [shown]
        for row, version in enumerate(versions):
            axis = axes[row][index]
            axis.imshow(version, cmap=None if version.ndim == 3 else "gray", vmin=0, vmax=1)
            axis.set_title(title if row == 0 else f"{title} (central crop)", fontsize=8)
            axis.axis("off")
    figure.tight_layout()
    atomic_write_with(path, lambda target: figure.savefig(target, dpi=110, format="png"))
    plt.close(figure)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; floats get 3 decimals (4 for values below 1)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return f"{value:.4f}" if abs(value) < 1 else f"{value:.2f}"
        return str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    atomic_write_with(path, lambda target: target.write_text(text, encoding="utf-8"))


def _grouped_table(rows, noise_labels, methods, value) -> str:
    """One row per method, one column per noise setting: the mean of `value` over images."""
    table_rows = []
    for method in methods:
        cells: list[object] = [method]
        for noise in noise_labels:
            values = [value(row) for row in rows if row.method == method and row.noise == noise]
            cells.append(float(np.mean(values)) if values else "")
        table_rows.append(cells)
    return markdown_table(["method", *noise_labels], table_rows)


def write_benchmark_report(
    output: Path,
    rows: Sequence,  # Sequence[benchmark.Row]
    outputs: dict,
    cases: Sequence,
    speed: Sequence = (),
    *,
    protocol: str,
    machine: str,
    command: str,
    method_noise: tuple | None = None,  # benchmark.run_method_noise's (rows, residuals, crops)
) -> Path:
    """benchmark.md with protocol, mean tables, per-image table, plots and crops, and (given
    `method_noise`) the method-noise scores with residual pictures; returns it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = list(dict.fromkeys(row.method for row in rows))
    noise_labels = list(dict.fromkeys(row.noise for row in rows))
    figures = output / "figures"
    figures.mkdir(parents=True, exist_ok=True)

    figure, axis = plt.subplots(figsize=(8, 4))
    positions = np.arange(len(noise_labels))
    # One noisy PSNR per (image, noise): every method saw the same noisy crop.
    noisy = [
        np.mean(list({r.image: r.noisy_psnr for r in rows if r.noise == n}.values()))
        for n in noise_labels
    ]
    axis.plot(positions, noisy, "k--", label="noisy")
    for method in methods:
        axis.plot(
            positions,
            [  # NaN (a gap) where the method does not run, e.g. ct-lowdose on Gaussian noise
                np.mean(scores)
                if (scores := [r.psnr for r in rows if r.method == method and r.noise == n])
                else np.nan
                for n in noise_labels
            ],
            marker="o",
            label=method,
        )
    axis.set_xticks(positions, noise_labels, rotation=30, ha="right", fontsize=8)
    axis.set_ylabel("mean PSNR (dB)")
    axis.legend(fontsize=8)
    axis.grid(alpha=0.3)
    figure.tight_layout()
    atomic_write_with(
        figures / "psnr_vs_noise.png", lambda target: figure.savefig(target, dpi=100, format="png")
    )
    plt.close(figure)

    if speed:
        figure, axis = plt.subplots(figsize=(6, 3))
        axis.barh(
            [f"{result.method} {result.precision} {result.setting}" for result in speed],
            [result.seconds_512 for result in speed],
        )
        axis.set_xscale("log")
        axis.set_xlabel("seconds for 512 x 512 (log scale)")
        figure.tight_layout()
        atomic_write_with(
            figures / "speed.png", lambda target: figure.savefig(target, dpi=100, format="png")
        )
        plt.close(figure)

    crop_names = []
    shown_kinds = set()
    for case in cases:
        kind = case.noise.kind + ("_colour" if case.image.colour else "")
        ran = [m for m in methods if (m, case.image.label, case.noise.label) in outputs]
        if kind in shown_kinds or not ran:  # the first case of each kind that a method ran on
            continue
        shown_kinds.add(kind)
        panels = [("clean", case.clean), (f"noisy ({case.noise.label})", case.noisy)]
        for method in ran:
            panels.append((method, outputs[(method, case.image.label, case.noise.label)]))
        for method in ran:
            denoised = outputs[(method, case.image.label, case.noise.label)]
            panels.append((f"{method} residual", case.noisy - denoised))
        name = f"crops_{kind}.png"
        _save_grid(figures / name, panels, columns=2 + len(ran))
        crop_names.append((f"{case.image.label}, {case.noise.label}", name))

    lines = [
        "# Benchmark",
        "",
        f"- Date and machine: {machine}",
        f"- Command: `{command}`",
        f"- Versions: {', '.join(f'{name} {version}' for name, version in package_versions())}",
        "",
        "## Protocol",
        "",
        protocol.strip(),
        "",
        "## Mean PSNR (dB) over the test images",
        "",
        _grouped_table(rows, noise_labels, methods, lambda row: row.psnr),
        "",
        "## Mean SSIM",
        "",
        _grouped_table(rows, noise_labels, methods, lambda row: row.ssim),
        "",
        "## Mean seconds per megapixel",
        "",
        _grouped_table(rows, noise_labels, methods, lambda row: row.seconds_per_megapixel),
        "",
        "![PSNR versus noise](figures/psnr_vs_noise.png)",
        "",
    ]
    if speed:
        speed_rows = [
            [
                result.method,
                result.setting,
                result.capability,
                "yes" if result.native_bf16 else "no",
                result.precision,
                result.seconds_512,
                "" if result.ratio_to_bm3d is None else f"1/{1 / result.ratio_to_bm3d:.1f}",
                "" if result.seconds_2048 is None else result.seconds_2048,
                ""
                if result.seconds_2048 is None
                else f"{result.seconds_2048 / result.seconds_512:.1f}",
                "" if result.peak_rss_gib_2048 is None else result.peak_rss_gib_2048,
            ]
            for result in speed
        ]
        lines += [
            "## Speed",
            "",
            "512² CT slice, Gaussian sigma 25, best of the repeats; each row's BM3D reference ran "
            "in the same process and CPU setting. `native`: this CPU as it is (networks at "
            "`auto`, bf16 only where native, then fp32); `AVX2 (capped)`: a subprocess with "
            "`ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 OPENBLAS_CORETYPE=Haswell`, as "
            "on most laptops' CPUs, networks in fp32.",
            "",
            markdown_table(
                [
                    "method",
                    "CPU setting",
                    "torch capability",
                    "native bf16",
                    "precision",
                    "512² seconds",
                    "time / BM3D time",
                    "2048² seconds",
                    "2048² / 512²",
                    "2048² peak RSS GiB",
                ],
                speed_rows,
            ),
            "",
            "![speed](figures/speed.png)",
            "",
        ]
    lines += [
        "## Every image",
        "",
        markdown_table(
            ["method", "image", "noise", "noisy PSNR", "PSNR", "SSIM", "s/MP"],
            [
                [r.method, r.image, r.noise, r.noisy_psnr, r.psnr, r.ssim, r.seconds_per_megapixel]
                for r in rows
            ],
        ),
        "",
    ]
    lines += ["## Crops (a residual that shows anatomy means the method removed anatomy)", ""]
    for title, name in crop_names:
        lines += [f"### {title}", "", f"![{title}](figures/{name})", ""]
    if method_noise is not None and method_noise[0]:
        lines += method_noise_section(figures, *method_noise)
    path = output / "benchmark.md"
    write_text(path, "\n".join(lines))
    return path


def method_noise_section(
    figures: Path,
    rows: Sequence,  # Sequence[benchmark.MethodNoiseRow]
    residuals: dict,
    crops: dict,
) -> list[str]:
    """The report's method-noise part: score and residual RMS per method and image, and one
    picture per image (the crop, then each method's residual)."""
    methods = list(dict.fromkeys(row.method for row in rows))
    images = list(dict.fromkeys(row.image for row in rows))

    def table(value) -> str:
        cells = []
        for method in methods:
            found = {row.image: value(row) for row in rows if row.method == method}
            present = [found[image] for image in images if image in found]
            cells.append(
                [
                    method,
                    *(found.get(image, "") for image in images),
                    float(np.nanmean(present)) if present else "",
                ]
            )
        return markdown_table(["method", *images, "mean"], cells)

    lines = [
        "## Method noise: the images as they are, nothing added",
        "",
        "Each method on each image's central crop with no noise added (classical methods told "
        "the level `estimate.blind_noise_level` reads, networks blind). Score: "
        "`meddenoise.method_noise.method_noise_score`, the rank correlation between the local "
        "energy of the residual (input - output) and the image's gradient at a 3 px scale; above "
        "0 the residual holds edges and texture (the method removed anatomy), about 0 or below "
        "it holds noise. Lower is better; compare methods on the same image. Levels (0-255 units "
        "of each image's range): "
        + ", ".join(
            f"{image} {next(r.level_255 for r in rows if r.image == image):.2f}" for image in images
        )
        + ".",
        "",
        table(lambda row: row.score),
        "",
        "Residual RMS (0-255 units of each image's range): how much each method removed.",
        "",
        table(lambda row: row.residual_rms_255),
        "",
    ]
    for index, image in enumerate(images):
        ran = [method for method in methods if (method, image) in residuals]
        name = f"method_noise_{index}.png"
        _save_residuals(
            figures / name, crops[image], [(method, residuals[(method, image)]) for method in ran]
        )
        lines += [f"### {image}", "", f"![method noise, {image}](figures/{name})", ""]
    return lines


def _save_residuals(
    path: Path, image: np.ndarray, residuals: Sequence[tuple[str, np.ndarray]]
) -> None:
    """The image, then each residual on its own symmetric range (grey 0.5 is zero), so that the
    pattern of a small residual shows as well as a large one's; the titles give their RMS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = 1 + len(residuals)
    figure, axes = plt.subplots(1, columns, figsize=(2.4 * columns, 2.7), squeeze=False)
    colour = image.ndim == 3
    axes[0][0].imshow(np.clip(image, 0, 1), cmap=None if colour else "gray", vmin=0, vmax=1)
    axes[0][0].set_title("as it is", fontsize=7)
    for axis, (method, residual) in zip(axes[0][1:], residuals, strict=True):
        shown = residual.mean(axis=-1) if residual.ndim == 3 else residual
        spread = float(np.percentile(np.abs(shown), 99.5)) or 1.0
        axis.imshow(np.clip(shown / (2 * spread) + 0.5, 0, 1), cmap="gray", vmin=0, vmax=1)
        rms = float(np.sqrt(np.mean(residual**2))) * 255
        axis.set_title(f"{method} residual (RMS {rms:.2f})", fontsize=7)
    for axis in axes.flat:
        axis.axis("off")
    figure.tight_layout()
    atomic_write_with(path, lambda target: figure.savefig(target, dpi=90, format="png"))
    plt.close(figure)


def package_versions() -> list[tuple[str, str]]:
    """The installed versions of the packages the numbers depend on (constraints.txt pins them)."""
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in (
        "meddenoise",
        "numpy",
        "scipy",
        "scikit-image",
        "PyWavelets",
        "pydicom",
        "torch",
        "bm3d",
    ):
        try:
            found.append((name, version(name)))
        except PackageNotFoundError:
            found.append((name, "not installed"))
    return found


def _save_grid(path: Path, panels: Sequence[tuple[str, np.ndarray]], *, columns: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = int(np.ceil((len(panels) + 2) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(2.4 * columns, 2.6 * rows), squeeze=False)
    for axis in axes.flat:
        axis.axis("off")
    residual_spread = (
        max(
            (float(np.percentile(np.abs(p), 99.5)) for t, p in panels if t.endswith("residual")),
            default=1.0,
        )
        or 1.0
    )
    for index, (title, picture) in enumerate(panels):
        # Residuals go under their method, leaving the clean and noisy columns empty.
        axis = axes.flat[index if index < columns else index + 2]
        if title.endswith("residual"):
            shown = np.clip(picture / (2 * residual_spread) + 0.5, 0, 1)
        else:
            shown = np.clip(picture, 0, 1)
        axis.imshow(shown, cmap="gray", vmin=0, vmax=1)
        axis.set_title(title, fontsize=7)
    figure.tight_layout()
    atomic_write_with(path, lambda target: figure.savefig(target, dpi=90, format="png"))
    plt.close(figure)
