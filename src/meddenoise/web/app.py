"""The HTTP application behind `meddenoise serve` and `meddenoise view` (Starlette).

Routes of the API (both commands):

- ``GET /healthz``: ``{"status": "ok", ...}`` with the pool's load; never needs the token.
- ``GET /v1/methods``: every method name with its description.
- ``POST /v1/denoise?method=NAME&sigma=S&strength=S``: the request body is one image file
  (DICOM, NIfTI, PNG, TIFF or JPEG, recognised from its bytes, whatever Content-Type says);
  the answer is the denoised file in the same format.

Before anything is parsed: a declared Content-Length over the body limit is answered 413 without
reading the body; a body that grows past the limit, or past its own Content-Length, is answered
413 as soon as it does (so memory stays bounded whatever a client sends); the bytes must carry a
known signature (else 415); the pixel limit is checked by the reader before decoding (413).
Denoising runs in worker processes (`pool.WorkerPool`): 503 with Retry-After when they are all
busy and the queue is full, 504 when one runs past the time limit.  Each request's files live in
its own temporary folder, removed on every path (errors, disconnects, after the answer is sent).
The token, when one is set, is required as ``Authorization: Bearer TOKEN`` on every route but
``/healthz`` and the viewer's page and scripts, and compared in constant time.  Nothing logged
names a file's patient: errors carry the reader's reason, never the file's header.

The viewer's own routes (``/``, ``/static/...``, ``/api/...``) are added for `meddenoise view`
(`viewer.viewer_routes`).
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import shutil
import tempfile
import zlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meddenoise.io.base import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Receive, Scope, Send

    from meddenoise.web.viewer import ViewerSession

__all__ = ["ServerSettings", "create_app", "is_loopback", "sniff_format"]

# The largest upload by default: a 512 x 512 x 500 CT series in one file is about 250 MiB.
DEFAULT_MAX_BODY = 256 * 1024 * 1024
MEDIA_TYPES = {
    "dicom": "application/dicom",
    "png": "image/png",
    "tiff": "image/tiff",
    "jpeg": "image/jpeg",
    "nifti": "application/octet-stream",
}
# What POST /v1/denoise takes in its query string; anything else is a mistake worth a 400.
DENOISE_PARAMETERS = {"method", "sigma", "strength"}
# How many bytes of an upload the format is recognised from (DICOM's 'DICM' sits at 128).
SNIFF_BYTES = 1024


@dataclass
class ServerSettings:
    """How the server runs: where it listens, who may call it, and its limits.

    Attributes
    ----------
    host, port
        Where to listen; port 0 picks a free port.
    token
        Required as ``Authorization: Bearer TOKEN`` when set; a non-loopback host needs one.
    workers, queue, timeout_s
        Worker processes, requests that may wait beyond them, and the longest one request may
        run (`pool.WorkerPool`).
    max_body
        The largest request body in bytes.
    max_pixels
        The pixel limit of `io.read_image`.
    retry_after_s
        Retry-After of a 503 (seconds).
    scratch
        Where the per-request temporary folders go (the system's temporary folder by default).
    viewer
        The viewer's cases (`meddenoise view`), or None for the API alone.
    """

    host: str = "127.0.0.1"
    port: int = 0
    token: str | None = None
    workers: int = 2
    queue: int = 8
    timeout_s: float = 300.0
    max_body: int = DEFAULT_MAX_BODY
    max_pixels: int = DEFAULT_MAX_PIXELS
    retry_after_s: int = 5
    scratch: Path | None = None
    viewer: ViewerSession | None = field(default=None, repr=False)


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or address to bind) reaches only this machine.

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_nifti(head: bytes) -> bool:
    """A NIfTI-1 (single file, ``n+1``) or NIfTI-2 header, in either byte order."""
    if len(head) >= 348 and head[344:348] == b"n+1\x00":
        return int.from_bytes(head[:4], "little") == 348 or int.from_bytes(head[:4], "big") == 348
    if len(head) >= 12 and head[4:12] == b"n+2\x00\r\n\x1a\n":
        return int.from_bytes(head[:4], "little") == 540 or int.from_bytes(head[:4], "big") == 540
    return False


def sniff_format(head: bytes) -> tuple[str, str] | None:
    """The image format of a file from its first bytes, and the suffix to store it under.

    Parameters
    ----------
    head
        The file's first bytes (at least `SNIFF_BYTES` where the file has them).

    Returns
    -------
    tuple of str, or None
        ``(format, suffix)``, e.g. ``("png", ".png")`` or ``("nifti", ".nii.gz")``; None for
        anything else (whatever a client's Content-Type claims).

    Examples
    --------
    >>> sniff_format(b"\\x89PNG\\r\\n\\x1a\\n" + bytes(8))
    ('png', '.png')
    >>> sniff_format(b"GIF89a") is None
    True
    """
    from meddenoise.io import FORMATS

    for name, file_format in FORMATS.items():
        for offset, signature in file_format.signatures:
            if head[offset : offset + len(signature)] == signature:
                return name, file_format.suffixes[0]
    if head[:2] == b"\x1f\x8b":  # gzip: a compressed NIfTI is recognised by what it holds
        try:
            inner = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 600)
        except zlib.error:
            return None
        return ("nifti", ".nii.gz") if _is_nifti(inner) else None
    return ("nifti", ".nii") if _is_nifti(head) else None


class TokenGate:
    """ASGI middleware: 401 unless ``Authorization: Bearer TOKEN`` matches (constant time).

    Parameters
    ----------
    app
        The application behind it.
    token
        The token; None lets every request through.
    open_paths
        Paths served without the token (health checks, the viewer's page).
    open_prefixes
        Path prefixes served without the token (the viewer's scripts).
    """

    def __init__(
        self,
        app: ASGIApp,
        token: str | None,
        open_paths: tuple[str, ...] = (),
        open_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.token = token.encode("utf-8") if token else None
        self.open_paths = open_paths
        self.open_prefixes = open_prefixes

    def allowed(self, scope: Scope) -> bool:
        """Whether the request may pass: no token set, an open path, or the right token."""
        path = str(scope.get("path", ""))
        if self.token is None or path in self.open_paths or path.startswith(self.open_prefixes):
            return True
        given = b""
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization":
                given = bytes(value)
        scheme, _, credentials = given.partition(b" ")
        # compare_digest takes as long for a wrong token as for a right one of the same length.
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.allowed(scope):
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        response = JSONResponse(
            {"error": "a valid token is required (Authorization: Bearer TOKEN)"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)


def error_response(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    """A JSON error: ``{"error": message}`` with `status`."""
    from starlette.responses import JSONResponse

    return JSONResponse({"error": message}, status_code=status, headers=dict(headers or {}))


def _file_response(path: Path, folder: Path, media_type: str, headers: dict[str, str]) -> Response:
    """A file answer that removes `folder` once sent, or once sending failed (a disconnect)."""
    from starlette.responses import FileResponse

    class TemporaryFileResponse(FileResponse):
        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await super().__call__(scope, receive, send)
            finally:
                shutil.rmtree(folder, ignore_errors=True)

    return TemporaryFileResponse(
        path, media_type=media_type, headers=headers, filename=f"denoised{''.join(path.suffixes)}"
    )


def _denoise_options(request: Request) -> dict[str, Any]:
    """method, sigma and strength from the query string, checked; ValueError for bad ones."""
    from meddenoise.methods import list_methods
    from meddenoise.pipeline import check_strength

    query = request.query_params
    unknown = sorted(set(query.keys()) - DENOISE_PARAMETERS)
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r}; known: method, sigma, strength")
    method = query.get("method", "default")
    if method not in list_methods():
        # Names only: a path would let a caller load any file on the server as a checkpoint.
        raise ValueError(f"unknown method {method!r}; GET /v1/methods lists them")
    options: dict[str, Any] = {"method": method, "sigma": None, "strength": 1.0}
    if "sigma" in query:
        try:
            sigma = float(query["sigma"])
        except ValueError:
            raise ValueError("sigma must be a number (0-255 units of the image's range)") from None
        if not (sigma >= 0 and sigma < float("inf")):
            raise ValueError("sigma must be a finite number >= 0")
        options["sigma"] = sigma
    if "strength" in query:
        try:
            options["strength"] = check_strength(float(query["strength"]))
        except ValueError:
            raise ValueError("strength must be a number in [0, 1]") from None
    return options


async def receive_upload(request: Request, folder: Path, max_body: int) -> Response | Path:
    """Store the request body in `folder` within the limits; the file, or the error answer.

    The declared Content-Length is judged before a byte is read; the body is counted as it
    arrives and reading stops at the first byte past the limit or past its declared length.
    """
    declared: int | None = None
    if "content-length" in request.headers:
        try:
            declared = int(request.headers["content-length"])
        except ValueError:
            return error_response(400, "Content-Length is not a number")
        if declared < 0:
            return error_response(400, "Content-Length is negative")
        if declared > max_body:
            return error_response(413, f"the body is over the limit of {max_body:,} bytes")
    upload = folder / "upload.part"
    received = 0
    with open(upload, "wb") as handle:
        async for chunk in request.stream():
            received += len(chunk)
            if received > max_body:
                return error_response(413, f"the body is over the limit of {max_body:,} bytes")
            if declared is not None and received > declared:
                return error_response(413, "the body is longer than its Content-Length")
            handle.write(chunk)
    if received == 0:
        return error_response(400, "the request has no body: send the image file as the body")
    return upload


async def denoise_endpoint(request: Request) -> Response:
    """POST /v1/denoise: see the module docstring."""
    from starlette.requests import ClientDisconnect

    from meddenoise.web.pool import PoolFullError, WorkerFailedError, WorkerTimeoutError

    settings: ServerSettings = request.app.state.settings
    try:
        options = _denoise_options(request)
    except ValueError as error:
        return error_response(400, str(error))
    folder: Path | None = Path(tempfile.mkdtemp(prefix="request-", dir=request.app.state.scratch))
    assert folder is not None
    try:
        stored = await receive_upload(request, folder, settings.max_body)
        if not isinstance(stored, Path):
            return stored
        with open(stored, "rb") as handle:
            sniffed = sniff_format(handle.read(SNIFF_BYTES))
        if sniffed is None:
            return error_response(
                415, "not a DICOM, NIfTI, PNG, TIFF or JPEG file (judged by its bytes)"
            )
        format_name, suffix = sniffed
        upload = stored.rename(folder / f"upload{suffix}")
        (folder / "out").mkdir()
        request_line = {
            "kind": "denoise",
            "input": str(upload),
            "output_dir": str(folder / "out"),
            "max_pixels": settings.max_pixels,
            **options,
        }
        answer = await request.app.state.pool.run(request_line)
        if not answer.get("ok"):
            return error_response(int(answer.get("status", 500)), str(answer.get("error", "")))
        output = Path(answer["output"])
        headers = {
            "X-Meddenoise-Method": str(answer.get("method", "")),
            "X-Meddenoise-Clipped": str(answer.get("clipped", 0)),
        }
        response = _file_response(output, folder, MEDIA_TYPES[format_name], headers)
        folder = None  # the response removes it once sent
        return response
    except ClientDisconnect:
        return error_response(400, "the client went away during the upload")
    except PoolFullError:
        retry = {"Retry-After": str(settings.retry_after_s)}
        return error_response(503, "every worker is busy; try again later", retry)
    except WorkerTimeoutError:
        return error_response(504, f"denoising took longer than {settings.timeout_s:g} s")
    except WorkerFailedError:
        return error_response(500, "the worker ended without an answer (out of memory?)")
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


async def health_endpoint(request: Request) -> Response:
    """GET /healthz: the server answers, and how loaded its pool is."""
    from starlette.responses import JSONResponse

    pool = request.app.state.pool
    return JSONResponse(
        {
            "status": "ok",
            "workers": pool.size,
            "busy": pool.busy,
            "waiting": max(pool.admitted - pool.busy, 0),
            "capacity": pool.capacity,
            "restarts": pool.restarts,
        }
    )


async def methods_endpoint(request: Request) -> Response:
    """GET /v1/methods: every method name with its one-line description."""
    from starlette.responses import JSONResponse

    from meddenoise.methods import list_methods

    return JSONResponse({"methods": list_methods()})


def create_app(settings: ServerSettings) -> Starlette:
    """The application: the API, and the viewer when `settings.viewer` is set.

    Parameters
    ----------
    settings
        Limits, token and the viewer's cases.

    Returns
    -------
    starlette.applications.Starlette
        Its lifespan starts the worker pool and a scratch folder, and removes both at the end.
    """
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.trustedhost import TrustedHostMiddleware
    from starlette.routing import BaseRoute, Route

    from meddenoise.web.pool import WorkerPool

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        scratch = Path(tempfile.mkdtemp(prefix="meddenoise-serve-", dir=settings.scratch))
        pool = WorkerPool(settings.workers, settings.queue, settings.timeout_s)
        app.state.settings = settings
        app.state.scratch = scratch
        app.state.pool = pool
        try:
            await pool.start()
            yield
        finally:
            await pool.close()
            shutil.rmtree(scratch, ignore_errors=True)

    routes: list[BaseRoute] = [
        Route("/healthz", health_endpoint, methods=["GET"]),
        Route("/v1/methods", methods_endpoint, methods=["GET"]),
        Route("/v1/denoise", denoise_endpoint, methods=["POST"]),
    ]
    open_paths: tuple[str, ...] = ("/healthz",)
    open_prefixes: tuple[str, ...] = ()
    if settings.viewer is not None:
        from meddenoise.web.viewer import viewer_routes

        routes += viewer_routes(settings.viewer)
        # The page and its scripts hold no image data; the /api/ routes behind them do.
        open_paths, open_prefixes = (*open_paths, "/"), ("/static/",)
    gate = Middleware(
        TokenGate, token=settings.token, open_paths=open_paths, open_prefixes=open_prefixes
    )
    middleware = [gate]
    if is_loopback(settings.host):
        # A page on another site may not reach the server through a name it controls (DNS
        # rebinding): on loopback only loopback names are answered.
        hosts = ["127.0.0.1", "localhost", "::1", "[::1]"]
        middleware.insert(0, Middleware(TrustedHostMiddleware, allowed_hosts=hosts))
    return Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
