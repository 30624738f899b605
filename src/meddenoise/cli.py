"""The `meddenoise` command: thin commands, each parsing arguments and calling library functions."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from meddenoise.io import DEFAULT_MAX_PIXELS, ImageError, read_image, write_image
from meddenoise.types import Denoiser

app = typer.Typer(
    name="meddenoise",
    help="Denoise medical images (DICOM, NIfTI, 16-bit PNG/TIFF, JPEG) and measure the result.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
logger = logging.getLogger("meddenoise")

MaxPixels = Annotated[
    int,
    typer.Option(
        "--max-pixels",
        help="Refuse images with more pixels than this (guards against decompression bombs).",
    ),
]
Window = Annotated[
    str | None,
    typer.Option(
        "--window",
        help="Map this window, CENTER,WIDTH in modality units (e.g. 40,400 HU), to [0, 1] "
        "instead of the image's own range.",
    ),
]


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)


def _parse_window(window: str | None) -> tuple[float, float] | None:
    if window is None:
        return None
    try:
        center, width = (float(part) for part in window.split(","))
    except ValueError:
        raise typer.BadParameter(
            "expected CENTER,WIDTH, e.g. 40,400", param_hint="--window"
        ) from None
    if width <= 0:
        raise typer.BadParameter("window width must be positive", param_hint="--window")
    return center, width


@dataclass(frozen=True)
class Job:
    """One unit of work: a file, or a folder holding one DICOM series, and where its output goes."""

    source: Path
    output: Path


def _is_candidate(path: Path) -> bool:
    from meddenoise.io import SUFFIX_FORMATS

    name = path.name.lower()
    if name.startswith("."):
        return False
    if name.endswith(".nii.gz") or path.suffix.lower() in SUFFIX_FORMATS:
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _folder_jobs(folder: Path, outdir: Path) -> list[Job]:
    """Every image under `folder`, mirrored under `outdir`; slices of one DICOM series are one job.

    The output folder is never scanned, even when it lies inside the input folder.
    """
    from meddenoise.io.dicom import series_key

    resolved_outdir = outdir.resolve()
    jobs: list[Job] = []
    directories = [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]
    for directory in directories:
        resolved = directory.resolve()
        if resolved == resolved_outdir or resolved_outdir in resolved.parents:
            continue
        if any(part.startswith(".") for part in directory.relative_to(folder).parts):
            continue
        files = sorted(p for p in directory.iterdir() if p.is_file() and _is_candidate(p))
        relative = directory.relative_to(folder)
        series: dict[str, list[Path]] = {}
        for path in files:
            if path.suffix.lower() in (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".nii", ".gz"):
                jobs.append(Job(path, outdir / folder.name / relative / path.name))
                continue
            key = series_key(path)
            series.setdefault(key or f"unreadable:{path.name}", []).append(path)
        for members in series.values():
            # A series of several files is one volume only when it is the folder's only series.
            if len(members) > 1 and len(series) == 1:
                jobs.append(Job(directory, outdir / folder.name / relative))
            else:
                jobs.extend(
                    Job(path, outdir / folder.name / relative / path.name) for path in members
                )
    return jobs


def collect_jobs(inputs: list[Path], outdir: Path) -> tuple[list[Job], list[str]]:
    """Expand files and folders into jobs; return (jobs, problems found while collecting)."""
    jobs: list[Job] = []
    problems: list[str] = []
    for source in inputs:
        if source.is_dir():
            jobs.extend(_folder_jobs(source, outdir))
        elif source.exists():
            jobs.append(Job(source, outdir / source.name))
        else:
            problems.append(f"{source}: no such file or folder")
    return jobs, problems


def _process_batch(
    jobs: list[Job],
    problems: list[str],
    work: Callable[[Job], int],
    *,
    verb: str,
    outdir: Path,
) -> None:
    """Run `work(job)` for every job, keep going past failures, summarise, set the exit code."""
    from tqdm import tqdm

    failures = list(problems)
    for problem in problems:
        _fail(problem)
    seen_outputs: set[Path] = set()
    done = 0
    all_inputs = [job.source.resolve() for job in jobs]
    for job in tqdm(
        jobs, desc=verb, unit="image", disable=not sys.stderr.isatty(), file=sys.stderr
    ):
        try:
            target = job.output.resolve()
            if target in seen_outputs:
                raise ImageError(job.source, f"another input already writes {job.output}")
            if target in all_inputs:
                raise ImageError(job.output, "refusing to overwrite an input file")
            seen_outputs.add(target)
            clipped = work(job)
            if clipped:
                typer.echo(
                    f"warning: {job.output}: {clipped:,} values were clipped into the stored range",
                    err=True,
                )
            done += 1
        except (ImageError, ValueError, OSError, RuntimeError, TypeError) as error:
            message = str(error) if isinstance(error, ImageError) else f"{job.source}: {error}"
            failures.append(message.replace("\n", " "))
            _fail(message.replace("\n", " "))
    # Failures were reported one line each as they happened; the summary only counts them.
    typer.echo(f"{verb}: {done} written to {outdir}, {len(failures)} failed")
    if failures:
        raise typer.Exit(code=1)


@app.command()
def denoise(
    inputs: Annotated[
        list[Path], typer.Argument(help="Image files or folders.", show_default=False)
    ],
    outdir: Annotated[Path, typer.Option("-o", "--output", help="Output folder (required).")],
    method: Annotated[
        str, typer.Option("--method", "-m", help="Method name (see `meddenoise methods`).")
    ] = "default",
    sigma: Annotated[
        float | None,
        typer.Option(
            help="Noise level in 0-255 units of the mapped range (25 means 25/255); "
            "estimated when omitted."
        ),
    ] = None,
    photons: Annotated[
        float | None,
        typer.Option(
            help="Signal-dependent (X-ray) noise: photons at full scale of the mapped "
            "range; wraps the method in a generalised Anscombe transform."
        ),
    ] = None,
    read_noise: Annotated[
        float, typer.Option(help="Read-noise std in [0, 1] units, with --photons.")
    ] = 0.0,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    window: Window = None,
    precision: Annotated[
        str,
        typer.Option(
            help="Network arithmetic: auto (bf16 only where the CPU or GPU runs it natively), "
            "fp32 or bf16."
        ),
    ] = "auto",
) -> None:
    """Denoise files or folders; outputs keep their format and file name under OUTPUT."""
    from meddenoise.pipeline import denoise_image, make_method

    if sigma is not None and not (np.isfinite(sigma) and sigma >= 0):
        raise typer.BadParameter("must be >= 0", param_hint="--sigma")
    if precision not in ("auto", "fp32", "bf16"):
        raise typer.BadParameter("must be auto, fp32 or bf16", param_hint="--precision")
    parsed_window = _parse_window(window)
    # One denoiser per kind of image for the whole batch: a network is loaded once, not per file.
    denoisers: dict[bool, Denoiser] = {}

    def denoiser_for(colour: bool) -> Denoiser:
        if colour not in denoisers:
            denoisers[colour] = make_method(
                method,
                sigma=None if sigma is None else sigma / 255.0,
                colour=colour,
                photons=photons,
                read_noise=read_noise,
                precision=precision,
            )
        return denoisers[colour]

    try:
        denoiser_for(False)  # an unknown method or unreadable checkpoint fails before any file
    except ValueError as error:
        _fail(str(error))
        raise typer.Exit(code=2) from None
    jobs, problems = collect_jobs(inputs, outdir)

    def work(job: Job) -> int:
        image = read_image(job.source, max_pixels=max_pixels, window=parsed_window)
        denoiser = denoiser_for(image.meta.layout in ("colour", "colour_frames"))
        return write_image(denoise_image(image, denoiser), job.output).clipped

    _process_batch(jobs, problems, work, verb="denoised", outdir=outdir)


NOISE_CHOICES = [
    "gaussian",
    "poisson",
    "poisson-gaussian",
    "low-dose-ct",
    "speckle",
    "salt-and-pepper",
]


def build_noise_model(
    noise: str,
    *,
    sigma: float | None,
    photons: float | None,
    read_noise: float | None,
    dose_fraction: float | None,
    amount: float | None,
) -> object:
    """The noise model named `noise` from command-line units (sigma in 0-255 of the range)."""
    from meddenoise import noise as noise_models

    def need(value: float | None, flag: str) -> float:
        if value is None:
            raise typer.BadParameter(f"--noise {noise} needs {flag}")
        return value

    if noise == "gaussian":
        return noise_models.GaussianNoise(sigma=need(sigma, "--sigma") / 255.0)
    if noise == "poisson":
        return noise_models.PoissonNoise(photons=need(photons, "--photons"))
    if noise == "poisson-gaussian":
        return noise_models.PoissonGaussianNoise(
            photons=need(photons, "--photons"), read_noise=need(read_noise, "--read-noise")
        )
    if noise == "low-dose-ct":
        return noise_models.LowDoseCT(dose_fraction=need(dose_fraction, "--dose-fraction"))
    if noise == "speckle":
        return noise_models.SpeckleNoise(sigma=need(sigma, "--sigma") / 255.0)
    if noise == "salt-and-pepper":
        return noise_models.SaltAndPepperNoise(amount=need(amount, "--amount"))
    raise typer.BadParameter(f"unknown noise {noise!r}; choose from {', '.join(NOISE_CHOICES)}")


@app.command()
def simulate(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="A clean image file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Noisy copy (same format).")],
    noise: Annotated[str, typer.Option(help=f"One of: {', '.join(NOISE_CHOICES)}.")],
    sigma: Annotated[
        float | None, typer.Option(help="Gaussian/speckle std in 0-255 units of the mapped range.")
    ] = None,
    photons: Annotated[float | None, typer.Option(help="Photons at full scale (Poisson).")] = None,
    read_noise: Annotated[
        float | None, typer.Option(help="Read-noise std in [0, 1] units (Poisson-Gaussian).")
    ] = None,
    dose_fraction: Annotated[
        float | None, typer.Option(help="Dose relative to full dose, e.g. 0.25 (low-dose CT).")
    ] = None,
    amount: Annotated[
        float | None, typer.Option(help="Fraction of pixels hit (salt-and-pepper).")
    ] = None,
    pixel_spacing: Annotated[
        float | None,
        typer.Option(
            help="Pixel size in mm (low-dose CT): sets the slice's physical size and so its "
            "noise; default: the file's own spacing, else 0.7."
        ),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same noise.")] = 0,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
    window: Window = None,
) -> None:
    """Write a noisy copy of INPUT in the same format (a DICOM stays a valid DICOM)."""
    from meddenoise.pipeline import transform_image

    try:
        model = build_noise_model(
            noise,
            sigma=sigma,
            photons=photons,
            read_noise=read_noise,
            dose_fraction=dose_fraction,
            amount=amount,
        )
    except ValueError as error:
        _fail(str(error))
        raise typer.Exit(code=2) from None
    if pixel_spacing is not None and not pixel_spacing > 0:
        _fail(f"--pixel-spacing must be > 0 mm, got {pixel_spacing}")
        raise typer.Exit(code=2)
    generator = np.random.default_rng(seed)

    def work(job: Job) -> int:
        from meddenoise.io import pixel_spacing_mm
        from meddenoise.noise import LowDoseCT

        image = read_image(job.source, max_pixels=max_pixels, window=_parse_window(window))
        chosen = model
        if isinstance(model, LowDoseCT):
            spacing = pixel_spacing or pixel_spacing_mm(image)
            if spacing is not None:
                chosen = dataclasses.replace(model, pixel_spacing_mm=spacing)
        parameters = {
            "noise": noise,
            "seed": seed,
            **{key: value for key, value in vars(chosen).items() if not key.startswith("_")},
        }
        noisy = transform_image(
            image,
            lambda clean: chosen(clean, generator),  # type: ignore[operator]
            method="simulated noise",
            parameters=parameters,
        )
        return write_image(noisy, job.output).clipped

    if not input_path.is_file():
        _fail(f"{input_path}: no such file")
        raise typer.Exit(code=1)
    _process_batch([Job(input_path, output)], [], work, verb="simulated", outdir=output.parent)


def _metric_arrays(array: np.ndarray, layout: str) -> np.ndarray:
    # The metrics take 2-D, RGB and 3-D arrays: 4-D layouts are stacked along the first axis.
    if layout == "volumes":
        return array.reshape(-1, *array.shape[2:])
    if layout == "colour_frames":
        return array.reshape(-1, *array.shape[2:])
    return array


@app.command()
def evaluate(
    reference: Annotated[Path, typer.Option(help="The clean reference image.")],
    test: Annotated[Path, typer.Option(help="The image to score (e.g. a denoised one).")],
    data_range: Annotated[
        float | None,
        typer.Option(help="Data range for PSNR/SSIM; default: the reference's max - min."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
) -> None:
    """PSNR, SSIM and MSE of TEST against REFERENCE, in the reference's modality units."""
    from meddenoise import metrics

    try:
        reference_image = read_image(reference, max_pixels=max_pixels)
        test_image = read_image(test, max_pixels=max_pixels)
        clean = _metric_arrays(
            np.asarray(reference_image.array, np.float64), reference_image.meta.layout
        )
        scored = _metric_arrays(np.asarray(test_image.array, np.float64), test_image.meta.layout)
        if clean.shape != scored.shape:
            raise ValueError(f"shapes differ: reference {clean.shape}, test {scored.shape}")
        used_range = float(clean.max() - clean.min()) if data_range is None else data_range
        if not used_range > 0:
            raise ValueError("data range is zero (constant reference); give --data-range")
        result = {
            "psnr": metrics.psnr(clean, scored, data_range=used_range),
            "ssim": metrics.ssim(clean, scored, data_range=used_range),
            "mse": metrics.mse(clean, scored),
            "data_range": used_range,
        }
    except (ImageError, ValueError) as error:
        _fail(str(error))
        raise typer.Exit(code=1) from None
    if as_json:
        # Identical images have infinite PSNR, which JSON cannot hold: null plus a flag.
        identical = not np.isfinite(result["psnr"])
        typer.echo(
            json.dumps(
                {**result, "psnr": None if identical else result["psnr"], "identical": identical}
            )
        )
    else:
        typer.echo(f"data range: {result['data_range']:g}")
        typer.echo(f"PSNR: {result['psnr']:.3f} dB")
        typer.echo(f"SSIM: {result['ssim']:.4f}")
        typer.echo(f"MSE:  {result['mse']:.6g}")


@app.command()
def methods() -> None:
    """List every denoising method with a one-line description."""
    from meddenoise.pipeline import list_methods

    for name, description in list_methods().items():
        typer.echo(f"{name:<10} {description}")


@app.command()
def info(
    file: Annotated[Path, typer.Argument(help="An image file or DICOM series folder.")],
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
) -> None:
    """Modality, size, bit depth, photometric interpretation, transfer syntax, value range.

    Never prints patient identifiers.
    """
    from meddenoise.io.describe import describe_image

    try:
        image = read_image(file, max_pixels=max_pixels)
    except ImageError as error:
        _fail(str(error))
        raise typer.Exit(code=1) from None
    for key, value in describe_image(image).items():
        typer.echo(f"{key + ':':<22}{value}")


@app.command()
def demo(
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Folder for outputs and report.")
    ] = Path("demo-output"),
    method: Annotated[
        str, typer.Option("--method", "-m", help="Method to demonstrate.")
    ] = "default",
    seed: Annotated[int, typer.Option(help="Seed of the simulated noise.")] = 0,
) -> None:
    """Add realistic noise to real CT, CR and MR images, denoise them, and write a report."""
    from meddenoise.demo import run_demo

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = run_demo(output, method=method, seed=seed)
    except (ImageError, ValueError, RuntimeError) as error:
        _fail(str(error))
        raise typer.Exit(code=1) from None
    typer.echo(f"report: {report}")
    table = [line for line in report.read_text(encoding="utf-8").splitlines() if line[:1] == "|"]
    typer.echo("\n".join(table))


def _train_epilog() -> str:
    from meddenoise.config import describe_fields

    return "Config fields (override any with --set FIELD=VALUE):\n\n" + "\n\n".join(
        describe_fields()
    )


@app.command(epilog=_train_epilog())
def train(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="A YAML training config.")],
    overrides: Annotated[
        list[str] | None,
        typer.Option("--set", help="Override a config field, e.g. --set epochs=2 (repeatable)."),
    ] = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from OUTPUT/last.resume.pt exactly where it stopped.")
    ] = False,
    stop_after: Annotated[
        int | None,
        typer.Option(help="End this run after N epochs (resume later with --resume)."),
    ] = None,
) -> None:
    """Train a network from a config; writes best/last checkpoints and metrics.csv to OUTPUT."""
    from meddenoise.checkpoint import CheckpointError
    from meddenoise.config import ConfigError, load_config
    from meddenoise.data import DataError
    from meddenoise.train import fit

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        config = load_config(config_path, overrides or [])
        result = fit(config, resume=resume, stop_after=stop_after)
    except (ConfigError, DataError, CheckpointError, ImageError) as error:
        _fail(str(error))
        raise typer.Exit(code=1) from None
    scores = [row["val_psnr"] for row in result.history if "val_psnr" in row]
    baseline = result.baseline.get("psnr")
    summary = f"best checkpoint: {result.best}"
    if scores and baseline is not None:
        # The best checkpoint is the epoch of highest validation PSNR, not the last epoch.
        summary += f" (validation PSNR {max(scores):.2f} dB, noisy input {baseline:.2f} dB)"
    typer.echo(summary)


@app.command()
def benchmark(
    methods: Annotated[
        list[str] | None,
        typer.Option("--method", "-m", help="Method name or checkpoint (repeatable)."),
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output", help="Report folder.")] = Path(
        "benchmark-output"
    ),
    quick: Annotated[
        bool, typer.Option(help="One image and two noise settings (a smoke run).")
    ] = False,
    speed: Annotated[bool, typer.Option(help="Also time 512² and 2048² images.")] = True,
) -> None:
    """Methods x test images x noise settings: CSV and a Markdown report with plots and crops."""
    import datetime
    import platform

    from meddenoise import benchmark as bench
    from meddenoise.report import write_benchmark_report

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    chosen = methods or ["median", "nlm", "bm3d", "default"]
    # --quick: the CT head and the histology image, Gaussian 25 and Poisson-Gaussian 300.
    images = (bench.TEST_IMAGES[1], bench.TEST_IMAGES[5]) if quick else bench.TEST_IMAGES
    settings = (
        tuple(bench.NOISE_SETTINGS[index] for index in (1, 4, 9)) if quick else bench.NOISE_SETTINGS
    )
    try:
        rows, outputs, cases = bench.run_quality(
            chosen,
            images=images,
            settings=settings,
            on_row=lambda row: logger.info(
                "%s | %s | %s: %.2f dB (noisy %.2f)",
                row.method,
                row.image,
                row.noise,
                row.psnr,
                row.noisy_psnr,
            ),
        )
        timings = (
            bench.run_speed(chosen, large=not quick, repeats=1 if quick else 3) if speed else []
        )
    except (ValueError, ImportError, RuntimeError) as error:
        _fail(str(error))
        raise typer.Exit(code=1) from None
    output.mkdir(parents=True, exist_ok=True)
    bench.write_csv(output / "benchmark.csv", rows)
    machine = f"{datetime.date.today()}, {platform.processor() or platform.machine()}, " + (
        f"{__import__('os').cpu_count()} cores"
    )
    command = "meddenoise benchmark " + " ".join(sys.argv[2:])
    report = write_benchmark_report(
        output,
        rows,
        outputs,
        cases,
        timings,
        protocol=bench.__doc__ or "",
        machine=machine,
        command=command,
    )
    typer.echo(f"report: {report}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
