"""``meddenoise dicomweb``: the command over `meddenoise.pacs.dicomweb.denoise_dicomweb`.

`dicomweb` is the command function (``meddenoise.cli`` registers it); `app` runs it alone, for
tests and ``python -m meddenoise.pacs.dicomweb_cli``.  Exit codes: 0 when every series was
written or skipped, 1 when one failed or the server could not be used, 2 for bad arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

if TYPE_CHECKING:
    from meddenoise.pacs.dicomweb import SeriesResult

__all__ = ["app", "dicomweb", "result_line"]


def _exit(error: Exception | str, code: int) -> NoReturn:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=code)


def result_line(result: SeriesResult) -> str:
    """The line printed for one series."""
    if result.status != "written":
        return f"{result.status}: {result.reason}"
    counts = f"{result.retrieved} retrieved, {result.derived} derived"
    if result.stored:
        counts += f", {result.stored} stored"
    where = f" -> {result.output}" if result.output is not None else ""
    return (
        f"written: series {result.series_uid} ({counts}): derived series "
        f"{result.derived_series_uid}{where}"
    )


def dicomweb(
    url: Annotated[str, typer.Argument(help="DICOMweb base URL, e.g. http://pacs:8042/dicom-web")],
    study: Annotated[str, typer.Argument(help="StudyInstanceUID.")],
    series: Annotated[
        str | None, typer.Option(help="Only this SeriesInstanceUID of the study.")
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Also write each derived series to OUTPUT/SERIES_UID/."
        ),
    ] = None,
    store: Annotated[bool, typer.Option(help="Store the derived series back with STOW-RS.")] = True,
    method: Annotated[
        str, typer.Option("--method", "-m", help="Method name (see `meddenoise methods`).")
    ] = "default",
    sigma: Annotated[
        float | None,
        typer.Option(help="Noise std in 0-255 units of the mapped range (25 means 25/255)."),
    ] = None,
    precision: Annotated[
        str, typer.Option(help="Networks: auto (bf16 only where native), fp32 or bf16.")
    ] = "auto",
    token_file: Annotated[
        Path | None,
        typer.Option(
            help="A file holding a bearer token (else MEDDENOISE_DICOMWEB_TOKEN, or "
            "MEDDENOISE_DICOMWEB_USER and MEDDENOISE_DICOMWEB_PASSWORD)."
        ),
    ] = None,
) -> None:
    """Denoise a study's series from a DICOMweb server; store them back (STOW-RS) or write them.

    QIDO-RS finds the series, WADO-RS fetches each, the derived series goes back into the same
    study.  Series meddenoise derived itself are skipped.  Credentials are read from the
    environment or --token-file, never from the command line, and never printed.
    """
    from meddenoise.io import ImageError
    from meddenoise.pacs.dicomweb import DicomWebError, denoise_dicomweb

    def show(result: SeriesResult) -> None:
        typer.echo(result_line(result), err=result.status == "failed")

    try:
        results = denoise_dicomweb(
            url,
            study,
            series,
            output=output,
            store=store,
            method=method,
            sigma=None if sigma is None else sigma / 255.0,
            precision=precision,
            token_file=token_file,
            on_result=show,
        )
    except (ValueError, ImageError) as error:
        _exit(error, 2)
    except DicomWebError as error:
        _exit(error, 1)
    counts = {status: 0 for status in ("written", "skipped", "failed")}
    for result in results:
        counts[result.status] += 1
    destination = " and ".join(
        [*(["stored"] if store else []), *([f"written to {output}"] if output else [])]
    )
    typer.echo(
        f"dicomweb: {counts['written']} series denoised ({destination}), "
        f"{counts['skipped']} skipped, {counts['failed']} failed"
    )
    if counts["failed"]:
        raise typer.Exit(code=1)


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command()(dicomweb)

if __name__ == "__main__":
    app()
