"""`meddenoise view` (a denoiser's result in the browser) and `meddenoise serve` (the API)."""

from __future__ import annotations

import secrets
import threading
from pathlib import Path
from typing import Annotated

import typer

from meddenoise.cli_options import MaxPixels, Sigma
from meddenoise.io.base import DEFAULT_MAX_PIXELS

Workers = Annotated[int, typer.Option(help="Worker processes that denoise (one image each).")]
Timeout = Annotated[
    float, typer.Option(help="Seconds one image may take before its worker is ended.")
]


def _fail(message: object, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)


def view(
    inputs: Annotated[
        list[Path], typer.Argument(help="Image files, DICOM series folders or folders of images.")
    ],
    output: Annotated[
        Path, typer.Option("-o", "--output", help="Where the write button writes.")
    ] = Path("denoised"),
    method: Annotated[
        str, typer.Option("--method", "-m", help="Method name (see `meddenoise methods`).")
    ] = "default",
    sigma: Sigma = None,
    reference: Annotated[
        list[Path] | None,
        typer.Option(help="A clean reference per image, in order ('-' for none): PSNR, SSIM."),
    ] = None,
    denoised: Annotated[
        Path | None,
        typer.Option(help="The output folder of a `denoise` run of INPUTS: show its results."),
    ] = None,
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1; 0 picks a free one.")] = 0,
    no_browser: Annotated[
        bool, typer.Option("--no-browser", help="Print the address, do not open a browser.")
    ] = False,
    workers: Workers = 1,
    timeout: Timeout = 600.0,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
) -> None:
    """Compare images before and after denoising in the browser (a local page on 127.0.0.1).

    Curtain and flicker, synchronised zoom and pan, the residual, window/level presets, slices,
    a strength slider and a button that writes the blend where `meddenoise denoise` would.
    """
    from meddenoise.methods import resolve
    from meddenoise.web.app import ServerSettings
    from meddenoise.web.server import BindError, run_server
    from meddenoise.web.viewer import plan_session

    try:
        resolve(method, sigma=None if sigma is None else sigma / 255.0)  # fail before serving
        session = plan_session(
            inputs,
            output,
            references=reference or [],
            denoised=denoised,
            method=method,
            sigma=sigma,
            max_pixels=max_pixels,
        )
    except ValueError as error:
        _fail(error)
    # A page of any other site could post to a loopback port: the page's own requests carry a
    # token it was given in its address.
    token = secrets.token_urlsafe(24)
    settings = ServerSettings(
        port=port,
        token=token,
        workers=workers,
        queue=8,
        timeout_s=timeout,
        max_pixels=max_pixels,
        viewer=session,
    )

    def announce(url: str) -> None:
        address = f"{url}/?token={token}"
        typer.echo(f"meddenoise view: {address}  (Ctrl-C to stop)")
        if not no_browser:
            import webbrowser

            threading.Thread(target=webbrowser.open, args=(address,), daemon=True).start()

    try:
        run_server(settings, announce)
    except BindError as error:
        _fail(error)


def serve(
    host: Annotated[
        str, typer.Option(help="Address to listen on; anything but loopback needs --token.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port; 0 picks a free one (printed).")] = 8000,
    token: Annotated[
        str | None,
        typer.Option(envvar="MEDDENOISE_TOKEN", help="Require Authorization: Bearer TOKEN."),
    ] = None,
    workers: Workers = 2,
    queue: Annotated[
        int, typer.Option(help="Requests that may wait for a worker; beyond them 503.")
    ] = 8,
    timeout: Timeout = 300.0,
    max_body_mb: Annotated[
        float, typer.Option("--max-body-mb", help="Largest upload in MiB (413 beyond it).")
    ] = 256.0,
    max_pixels: MaxPixels = DEFAULT_MAX_PIXELS,
) -> None:
    """Serve the HTTP API: POST /v1/denoise, GET /v1/methods, GET /healthz (docs/viewer.md)."""
    from meddenoise.web.app import ServerSettings
    from meddenoise.web.server import BindError, run_server

    if workers < 1 or queue < 0 or not timeout > 0 or not max_body_mb > 0:
        _fail("--workers must be >= 1, --queue >= 0, --timeout and --max-body-mb > 0")
    settings = ServerSettings(
        host=host,
        port=port,
        token=token,
        workers=workers,
        queue=queue,
        timeout_s=timeout,
        max_body=int(max_body_mb * 1024 * 1024),
        max_pixels=max_pixels,
    )

    def announce(url: str) -> None:
        typer.echo(f"meddenoise serve: {url}  (Ctrl-C to stop)")

    try:
        run_server(settings, announce)
    except BindError as error:
        _fail(error)


def register_web_commands(app: typer.Typer) -> None:
    """Add `view` and `serve` to the `meddenoise` command."""
    app.command()(view)
    app.command()(serve)
