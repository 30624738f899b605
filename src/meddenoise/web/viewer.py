"""The viewer's cases and routes: what `meddenoise view` serves besides the API.

The images to show are planned as `meddenoise denoise` plans a batch (`batch.plan_batch`), so a
case's write button writes exactly where ``meddenoise denoise FILES -o OUTPUT`` would, through
the same writer.  A case is denoised once, at full strength, in a worker (the ``view`` request
of `worker`), which leaves its arrays as ``.npy`` files in the server's scratch folder; the
page fetches one plane at a time as float32 and does the blending, windowing and drawing itself
(``static/viewer.js``).

Routes (all under the token but the page and its scripts):

- ``GET /``: the page; ``GET /static/...``: its script and style;
- ``GET /api/session``: the cases, the method, the output folder;
- ``POST /api/cases/{n}/prepare``: denoise case n (once) and return what the page needs
  (`display.display_info`);
- ``GET /api/cases/{n}/plane?kind=before|after|noise&index=i``: one plane, float32 little
  endian, row-major, colour interleaved; its shape in ``X-Plane-Shape``;
- ``GET /api/cases/{n}/metrics?strength=s``: PSNR and SSIM against the reference;
- ``POST /api/cases/{n}/write`` with ``{"strength": s}``: write the blend as a derived file.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from meddenoise.batch import Item, plan_batch
from meddenoise.io.base import DEFAULT_MAX_PIXELS

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import BaseRoute

__all__ = ["ViewerCase", "ViewerSession", "plan_session", "viewer_routes"]

STATIC = Path(__file__).parent / "static"
PLANE_KINDS = ("before", "after", "noise", "reference")
# The write request's JSON body is a few bytes; anything longer is not one.
MAX_WRITE_BODY = 4096


@dataclass
class ViewerCase:
    """One image (a file or a DICOM series) of the session and what was computed for it."""

    index: int
    name: str
    item: Item
    reference: Path | None = None
    denoised: Item | None = None
    info: dict[str, Any] | None = None
    scratch: Path | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)


@dataclass
class ViewerSession:
    """The cases to show, and how to denoise and write them."""

    cases: list[ViewerCase]
    output: Path
    method: str = "default"
    sigma: float | None = None
    precision: str = "auto"
    max_pixels: int = DEFAULT_MAX_PIXELS


def plan_session(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    references: Sequence[str | os.PathLike[str]] = (),
    denoised: str | os.PathLike[str] | None = None,
    method: str = "default",
    sigma: float | None = None,
    precision: str = "auto",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ViewerSession:
    """The viewer's cases: the images under `inputs`, planned to be written under `output`.

    Parameters
    ----------
    inputs
        Image files, series folders and folders, as for `meddenoise denoise`.
    output
        Where the write button writes (the place `meddenoise denoise` would write).
    references
        Clean reference images, one per case in order ("-" for a case without one), for PSNR
        and SSIM; or none.
    denoised
        The output folder of an earlier `meddenoise denoise` run of the same inputs: each
        case's "after" is the file that run wrote (found by the same plan), not a new result.
    method, sigma, precision
        How to denoise (sigma in 0-255 units of each image's range, None to estimate).
    max_pixels
        The pixel limit of `io.read_image`.

    Returns
    -------
    ViewerSession

    Raises
    ------
    ValueError
        When an input is missing or unsafe to plan, no image is found, or the references do not
        match the cases one to one.
    """
    output_folder = Path(output)
    items = plan_batch(inputs, output_folder)
    problems = [item.problem for item in items if item.problem]
    if problems:
        raise ValueError(problems[0])
    images = [item for item in items if not item.ignored]
    if not images:
        raise ValueError("no images found among the inputs")
    if references and len(references) != len(images):
        raise ValueError(
            f"{len(references)} reference(s) for {len(images)} image(s): give one per image"
        )
    earlier: list[Item | None] = [None] * len(images)
    if denoised is not None:
        # The same plan as the run's: the inputs' outputs under its folder, in the same order.
        planned = [item for item in plan_batch(inputs, denoised) if not item.ignored]
        for index, item in enumerate(planned):
            missing = [path for path in item.outputs if not path.is_file()]
            if item.problem or missing:
                where = missing[0] if missing else item.source
                raise ValueError(f"{where}: not found in {denoised} (denoised from these inputs?)")
            earlier[index] = item
    cases = []
    for index, item in enumerate(images):
        assert item.output is not None  # items without an output carry a problem
        name = str(item.output.relative_to(output_folder))
        chosen = os.fspath(references[index]) if references else "-"
        reference = None if chosen == "-" else Path(chosen)
        cases.append(ViewerCase(index, name, item, reference, earlier[index]))
    return ViewerSession(cases, output_folder, method, sigma, precision, max_pixels)


def _case(request: Request) -> ViewerCase | None:
    session: ViewerSession = request.app.state.settings.viewer
    index = int(request.path_params["index"])
    return session.cases[index] if 0 <= index < len(session.cases) else None


def _read_request(case: ViewerCase, session: ViewerSession) -> dict[str, Any]:
    """The part of a worker request that says which image to read and how."""
    files = [str(path) for path in case.item.inputs] if case.item.folder else None
    return {"input": str(case.item.source), "files": files, "max_pixels": session.max_pixels}


async def _run(request: Request, job: dict[str, Any]) -> dict[str, Any]:
    """A worker's answer, with pool refusals turned into the same error form."""
    from meddenoise.web.pool import PoolFullError, WorkerFailedError, WorkerTimeoutError

    try:
        answer: dict[str, Any] = await request.app.state.pool.run(job)
        return answer
    except PoolFullError:
        return {"ok": False, "status": 503, "error": "every worker is busy; try again"}
    except WorkerTimeoutError:
        return {"ok": False, "status": 504, "error": "denoising took longer than the limit"}
    except WorkerFailedError:
        return {"ok": False, "status": 500, "error": "the worker ended without an answer"}


def _failure(answer: dict[str, Any]) -> Response:
    from meddenoise.web.app import error_response

    return error_response(int(answer.get("status", 500)), str(answer.get("error", "")))


async def session_endpoint(request: Request) -> Response:
    """GET /api/session: the cases and how they are denoised."""
    from starlette.responses import JSONResponse

    session: ViewerSession = request.app.state.settings.viewer
    return JSONResponse(
        {
            "method": session.method,
            "sigma": session.sigma,
            "output": str(session.output),
            "cases": [
                {"index": case.index, "name": case.name, "reference": case.reference is not None}
                for case in session.cases
            ],
        }
    )


async def prepare_endpoint(request: Request) -> Response:
    """POST /api/cases/{n}/prepare: denoise the case once; its display facts."""
    from starlette.responses import JSONResponse

    from meddenoise.web.app import error_response

    case = _case(request)
    if case is None:
        return error_response(404, "no such case")
    session: ViewerSession = request.app.state.settings.viewer
    async with case.lock:  # two tabs asking at once denoise it once
        if case.info is None:
            scratch = Path(request.app.state.scratch) / f"case-{case.index}"
            job = {
                "kind": "view",
                **_read_request(case, session),
                "scratch": str(scratch),
                "method": session.method,
                "sigma": session.sigma,
                "precision": session.precision,
                "reference": None if case.reference is None else str(case.reference),
            }
            if case.denoised is not None:
                job["denoised"] = str(case.denoised.output)
                job["denoised_files"] = [str(path) for path in case.denoised.outputs]
            answer = await _run(request, job)
            if not answer.get("ok"):
                return _failure(answer)
            case.info = {key: value for key, value in answer.items() if key != "ok"}
            case.scratch = scratch
    return JSONResponse({"name": case.name, "output": str(case.item.output), **case.info})


def _plane_bytes(array: np.ndarray, colour: bool, index: int) -> tuple[bytes, tuple[int, ...]]:
    from meddenoise.web.display import planes_of

    stack = planes_of(array, colour)
    if not 0 <= index < stack.shape[0]:
        raise IndexError(index)
    plane = np.ascontiguousarray(stack[index], dtype="<f4")
    return plane.tobytes(), plane.shape


async def plane_endpoint(request: Request) -> Response:
    """GET /api/cases/{n}/plane?kind=K&index=I: one plane as float32 bytes."""
    from starlette.responses import Response

    from meddenoise.web.app import error_response

    case = _case(request)
    if case is None or case.info is None or case.scratch is None:
        return error_response(404, "no such case, or not prepared yet")
    kind = request.query_params.get("kind", "before")
    if kind not in PLANE_KINDS or (kind == "reference" and case.reference is None):
        return error_response(400, f"kind must be one of {', '.join(PLANE_KINDS)}")
    try:
        index = int(request.query_params.get("index", "0"))
        array = np.load(case.scratch / f"{kind}.npy", mmap_mode="r", allow_pickle=False)
        colour = bool(case.info["colour"]) and kind != "noise"
        data, shape = _plane_bytes(array, colour, index)
    except (ValueError, IndexError):
        return error_response(400, "index must be a plane number of the image")
    headers = {"X-Plane-Shape": ",".join(str(size) for size in shape)}
    return Response(data, media_type="application/octet-stream", headers=headers)


def _strength(text: Any) -> float:
    from meddenoise.pipeline import check_strength

    try:
        return check_strength(float(text))
    except (TypeError, ValueError):
        raise ValueError("strength must be a number in [0, 1]") from None


async def metrics_endpoint(request: Request) -> Response:
    """GET /api/cases/{n}/metrics?strength=s: PSNR/SSIM of input and blend vs the reference."""
    from starlette.responses import JSONResponse

    from meddenoise.web.app import error_response

    case = _case(request)
    if case is None or case.info is None or case.scratch is None:
        return error_response(404, "no such case, or not prepared yet")
    if case.reference is None:
        return error_response(400, "no reference for this image (meddenoise view --reference)")
    try:
        strength = _strength(request.query_params.get("strength", "1"))
    except ValueError as error:
        return error_response(400, str(error))
    job = {
        "kind": "metrics",
        "scratch": str(case.scratch),
        "strength": strength,
        "layout": case.info["layout"],
    }
    answer = await _run(request, job)
    if not answer.get("ok"):
        return _failure(answer)
    return JSONResponse({key: value for key, value in answer.items() if key != "ok"})


async def write_endpoint(request: Request) -> Response:
    """POST /api/cases/{n}/write {"strength": s}: the blend written as `denoise` would."""
    from starlette.responses import JSONResponse

    from meddenoise.web.app import error_response

    case = _case(request)
    if case is None or case.info is None or case.scratch is None:
        return error_response(404, "no such case, or not prepared yet")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_WRITE_BODY:
            return error_response(413, "the request body is too long")
    try:
        strength = _strength(json.loads(body or b"{}").get("strength"))
    except (ValueError, AttributeError) as error:
        return error_response(400, str(error) or 'expected {"strength": s}')
    session: ViewerSession = request.app.state.settings.viewer
    job = {
        "kind": "write",
        **_read_request(case, session),
        "scratch": str(case.scratch),
        "strength": strength,
        "output": str(case.item.output),
    }
    answer = await _run(request, job)
    if not answer.get("ok"):
        return _failure(answer)
    return JSONResponse(
        {"paths": answer["paths"], "strength": strength, "clipped": answer["clipped"]}
    )


def viewer_routes(session: ViewerSession) -> list[BaseRoute]:
    """The page, its static files and the /api/ routes for `session`."""
    from starlette.responses import FileResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    del session  # the routes read it from the app's settings, where create_app keeps it

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "viewer.html", media_type="text/html")

    return [
        Route("/", page, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
        Route("/api/session", session_endpoint, methods=["GET"]),
        Route("/api/cases/{index:int}/prepare", prepare_endpoint, methods=["POST"]),
        Route("/api/cases/{index:int}/plane", plane_endpoint, methods=["GET"]),
        Route("/api/cases/{index:int}/metrics", metrics_endpoint, methods=["GET"]),
        Route("/api/cases/{index:int}/write", write_endpoint, methods=["POST"]),
    ]
