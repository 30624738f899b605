"""The `meddenoise` command: each command parses its arguments, calls a library function, prints."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from meddenoise import cli_options as option
from meddenoise.commands import register_commands
from meddenoise.export.cli import Backend
from meddenoise.io import DEFAULT_MAX_PIXELS, ImageError, read_image
from meddenoise.noise import NOISE_MODELS

if TYPE_CHECKING:
    from meddenoise.batch import Item, ItemResult


app = typer.Typer(
    name="meddenoise",
    help="Denoise medical images (DICOM, NIfTI, 16-bit PNG/TIFF, JPEG) and measure the result.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # A parser's warnings would add lines to a file's one line.
    callback=lambda: warnings.simplefilter("ignore"),
)
register_commands(app)  # node, dicomweb, ...: each beside its library (meddenoise.commands)
logger = logging.getLogger("meddenoise")
NOISE_CHOICES = list(NOISE_MODELS)


def _exit(error: Exception | str, code: int) -> NoReturn:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=code)


def _unit(level: float | None) -> float | None:
    """A noise level typed in 0-255 units of the mapped range, in the library's [0, 1] units."""
    return None if level is None else level / 255.0


def _window(text: str | None) -> tuple[float, float] | None:
    from meddenoise.intensity import parse_window

    try:
        return parse_window(text)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--window") from None


def _print_result(result: ItemResult) -> None:
    """Failures, skipped non-images and large clips on stderr, one line each, as they happen."""
    from meddenoise.batch import result_line

    line = result_line(result)
    if line is not None:
        typer.echo(line, err=True)


def _progress(verb: str) -> Callable[[Sequence[Item]], Iterable[Item]]:
    """A progress bar on stderr, shown only on a terminal."""
    from tqdm import tqdm

    return lambda items: tqdm(
        items, desc=verb, unit="image", disable=not sys.stderr.isatty(), file=sys.stderr
    )


def _summarise(results: list[ItemResult], *, verb: str, outdir: Path) -> None:
    """Count what happened (failures were printed as they happened); exit 1 if any failed."""
    from meddenoise.batch import summarise

    typer.echo("\n".join(summarise(results, verb=verb, outdir=outdir)))
    if any(result.status == "failed" for result in results):
        raise typer.Exit(code=1)


@app.command()
def denoise(
    inputs: Annotated[list[Path], typer.Argument(help="Image files or folders.")],
    outdir: Annotated[Path, typer.Option("-o", "--output", help="Output folder (required).")],
    method: Annotated[
        str, typer.Option("--method", "-m", help="Method name (see `meddenoise methods`).")
    ] = "default",
    sigma: option.Sigma = None,
    photons: option.Photons = None,
    read_noise: option.ReadNoise = None,
    max_pixels: option.MaxPixels = DEFAULT_MAX_PIXELS,
    window: option.Window = None,
    precision: Annotated[
        str, typer.Option(help="Networks: auto (bf16 only where native), fp32 or bf16.")
    ] = "auto",
    backend: Backend = "torch",
    resume: Annotated[bool, typer.Option(help="Skip inputs whose outputs are written.")] = False,
    strength: option.Strength = 1.0,
    noise_map: option.NoiseMap = None,
    dask: option.Dask = None,
) -> None:
    """Denoise files or folders; outputs keep their format and file name under OUTPUT.

    One folder alone is mirrored in OUTPUT, several each in OUTPUT/NAME/, a series per folder.
    The noise level is estimated unless --sigma (or --photons, for X-ray noise) gives it.
    """
    from meddenoise import batch

    settings = batch.DenoiseSettings(
        method, _unit(sigma), photons, _unit(read_noise) or 0.0, precision, backend,
        max_pixels, _window(window), strength, noise_map, outdir,
    )  # fmt: skip
    # One denoiser per kind of image for the whole batch: a network is loaded once, not per file.
    denoisers = batch.DenoiserPerKind(settings.build)
    try:
        denoisers(False)  # a bad option or an unknown method fails before any file is read
        plan = batch.plan_batch(inputs, outdir)
        work = settings.work(denoisers)
    except (ValueError, ImageError) as error:
        _exit(error, 2)
    if dask is not None:  # the same items on a Dask cluster; a rerun resumes (meddenoise.scale)
        from meddenoise.scale.distributed_batch import run_batch_on_dask

        results = run_batch_on_dask(plan, settings, outdir, dask, on_result=_print_result)
    else:
        results = batch.run_batch(
            plan, work, resume=resume, on_result=_print_result, progress=_progress("denoised")
        )
    _summarise(results, verb="denoised", outdir=outdir)


@app.command()
def simulate(
    input_path: Annotated[Path, typer.Argument(metavar="INPUT", help="A clean image file.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Noisy copy (same format).")],
    noise: Annotated[str, typer.Option(help=f"One of: {', '.join(NOISE_MODELS)}.")],
    sigma: option.Sigma = None,
    photons: option.Photons = None,
    read_noise: option.ReadNoise = None,
    dose_fraction: Annotated[
        float | None, typer.Option(help="Dose relative to full dose (low-dose CT).")
    ] = None,
    amount: Annotated[float | None, typer.Option(help="Fraction of pixels hit.")] = None,
    pixel_spacing: Annotated[
        float | None,
        typer.Option(help="Pixel size in mm (low-dose CT); default: the file's, else 0.7."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same noise.")] = 0,
    max_pixels: option.MaxPixels = DEFAULT_MAX_PIXELS,
    window: option.Window = None,
) -> None:
    """Write a noisy copy of INPUT in the same format (a DICOM stays a valid DICOM)."""
    from meddenoise.batch import plan_pairs, run_batch, simulate_item
    from meddenoise.noise import make_noise_from_user_units

    values = dict(sigma=sigma, photons=photons, read_noise=read_noise, amount=amount)
    try:
        model = make_noise_from_user_units(noise, {**values, "dose_fraction": dose_fraction})
    except ValueError as error:
        _exit(error, 2)
    if pixel_spacing is not None and not pixel_spacing > 0:
        _exit(f"--pixel-spacing must be > 0 mm, got {pixel_spacing}", 2)
    # The user's spacing wins over the file's.
    properties = None if pixel_spacing is None else {"pixel_spacing_mm": pixel_spacing}
    work = simulate_item(
        model, seed=seed, properties=properties, max_pixels=max_pixels, window=_window(window)
    )
    results = run_batch(plan_pairs([(input_path, output)]), work, on_result=_print_result)
    _summarise(results, verb="simulated", outdir=output.parent)


@app.command()
def evaluate(
    reference: Annotated[Path, typer.Option(help="The clean reference image.")],
    test: Annotated[Path, typer.Option(help="The image to score (e.g. a denoised one).")],
    data_range: Annotated[
        float | None, typer.Option(help="Range for PSNR/SSIM; default: the reference's.")
    ] = None,
    mask: Annotated[
        Path | None, typer.Option(help="Score only this binary image's pixels.")
    ] = None,
    no_reference: Annotated[
        bool, typer.Option(help="REFERENCE is the noisy input: score TEST's residual instead.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    max_pixels: option.MaxPixels = DEFAULT_MAX_PIXELS,
) -> None:
    """PSNR, SSIM and MSE of TEST against REFERENCE (padding not scored), or its method noise."""
    from meddenoise.pipeline import evaluate_files, format_scores, method_noise_files

    limit = {"max_pixels": max_pixels}
    try:
        if no_reference:
            result = method_noise_files(reference, test, **limit)
        else:
            result = evaluate_files(reference, test, mask=mask, data_range=data_range, **limit)
    except (ImageError, ValueError) as error:
        _exit(error, 1)
    typer.echo(format_scores(result, as_json=as_json))


@app.command()
def methods() -> None:
    """List every denoising method with a one-line description."""
    from meddenoise.methods import list_methods

    for name, description in list_methods().items():
        typer.echo(f"{name:<10} {description}")


@app.command()
def info(
    file: Annotated[Path, typer.Argument(help="An image file or DICOM series folder.")],
    max_pixels: option.MaxPixels = DEFAULT_MAX_PIXELS,
) -> None:
    """Modality, size, bit depth, photometric interpretation, transfer syntax, value range.

    Never prints patient identifiers.
    """
    from meddenoise.io.describe import describe_image

    try:
        image = read_image(file, max_pixels=max_pixels)
    except ImageError as error:
        _exit(error, 1)
    for key, value in describe_image(image).items():
        typer.echo(f"{key + ':':<22}{value}")


@app.command()
def demo(
    output: Annotated[Path, typer.Option("-o", "--output")] = Path("demo-output"),
    method: Annotated[str, typer.Option("--method", "-m", help="Method to show.")] = "default",
    seed: Annotated[int, typer.Option(help="Seed of the simulated noise.")] = 0,
) -> None:
    """Add realistic noise to real CT, CR and MR images, denoise them, and write a report."""
    from meddenoise.demo import run_demo

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        report = run_demo(output, method=method, seed=seed)
    except (ImageError, ValueError, RuntimeError) as error:
        _exit(error, 1)
    typer.echo(f"report: {report}")
    table = [line for line in report.read_text(encoding="utf-8").splitlines() if line[:1] == "|"]
    typer.echo("\n".join(table))


def _train_epilog() -> str:
    from meddenoise.config import describe_fields

    fields = "\n\n".join(describe_fields())
    return f"Config fields (override any with --set FIELD=VALUE):\n\n{fields}"


@app.command(epilog=_train_epilog())
def train(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG", help="A YAML training config.")],
    overrides: Annotated[
        list[str] | None, typer.Option("--set", help="Override a field: --set epochs=2.")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue exactly where the run stopped.")] = False,
    stop_after: Annotated[
        int | None, typer.Option(help="End after N epochs (continue later with --resume).")
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
        _exit(error, 1)
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
        list[str] | None, typer.Option("--method", "-m", help="Method or checkpoint (repeat).")
    ] = None,
    output: Annotated[Path, typer.Option("-o", "--output")] = Path("benchmark-output"),
    quick: Annotated[bool, typer.Option(help="Two images, three settings (smoke run).")] = False,
    speed: Annotated[bool, typer.Option(help="Also time 512² and 2048² images.")] = True,
    images: Annotated[
        list[str] | None,
        typer.Option(help="Instead of the test images: files or pydicom:NAME, skimage:NAME."),
    ] = None,
    noise: Annotated[list[str] | None, typer.Option(help="Only these noise settings.")] = None,
    levels: Annotated[
        str, typer.Option(help="Told the true noise: protocol (classical only), oracle, blind.")
    ] = "protocol",
    draws: Annotated[int, typer.Option(help="Noise draws per image and setting.")] = 1,
    crop: Annotated[int, typer.Option(help="Side of the central crop scored.")] = 256,
    ct_grid: Annotated[bool, typer.Option(help="The low-dose CT grid instead (by hand).")] = False,
    adapt: Annotated[bool, typer.Option(help="The adaptation benchmark (by hand).")] = False,
) -> None:
    """Methods x test images x noise settings: CSV and a Markdown report with plots and crops."""
    from meddenoise import benchmark as bench

    if adapt:  # docs/adapt.md; `python -m meddenoise.adapt.benchmark` takes more options
        return typer.echo(f"report: {bench.adapt_benchmark(output)}")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if ct_grid:  # docs/ct-physics.md: its own cells; --method and --images apply
        try:
            return typer.echo(f"report: {bench.ct_grid(methods, output, images=images)}")
        except (ValueError, ImportError, ImageError) as error:
            _exit(error, 1)
    try:
        chosen_images, settings = bench.select_cases(images=images, noise=noise, quick=quick)
        options = bench.BenchmarkOptions(levels=levels, draws=draws, crop=crop)
    except (ValueError, ImageError, RuntimeError) as error:
        _exit(error, 2)
    try:
        report = bench.run_benchmark(
            methods or ["median", "nlm", "bm3d", "default"],
            output,
            images=chosen_images,
            settings=settings,
            options=options,
            speed=speed,
            quick=quick,
            command="meddenoise benchmark " + " ".join(sys.argv[2:]),
        )
    except (ValueError, ImportError, RuntimeError) as error:
        _exit(error, 1)
    typer.echo(f"report: {report}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
