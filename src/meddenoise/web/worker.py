"""A denoising worker process: one JSON request per line on stdin, one JSON answer per line back.

The server (`meddenoise.web.pool`) runs several of these and ends one that runs past its time
limit: only a process can be stopped in the middle of a computation.  Messages are JSON and
arrays travel as ``.npy`` files in the request's scratch folder (read with
``allow_pickle=False``), so nothing crosses the process boundary by pickling.

Requests (``"kind"``):

- ``denoise``: read ``input``, denoise with ``method``/``sigma``/``strength``, write the result
  in the same format into ``output_dir``; the answer names the file (the HTTP API).
- ``view``: read ``input`` (a file, or a series folder with its ``files``), denoise at full
  strength and save the viewer's arrays (``before``, ``after``, ``noise``, and ``reference``
  when one is given) plus what the page needs to display them (`display.display_info`).
- ``write``: blend the saved full-strength result at ``strength`` and write it to ``output``
  through `io.write_image` (the viewer's write button).
- ``metrics``: PSNR and SSIM of the input and of the blend at ``strength`` against the reference.

Errors come back as ``{"ok": false, "status": 4xx, "error": "..."}`` with the message of an
`ImageError` without the temporary file's path; nothing here logs, so no patient data is printed.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

# Denoisers built per (method, sigma, precision, colour) and kept: a network is loaded once per
# worker, not once per request.  A handful is plenty; the oldest is dropped beyond it.
CACHED_DENOISERS = 4


def _denoiser(request: dict[str, Any], colour: bool, cache: dict[tuple[Any, ...], Any]) -> Any:
    from meddenoise.methods import resolve

    sigma = request.get("sigma")
    key = (request["method"], sigma, request.get("precision", "auto"), colour)
    if key not in cache:
        if len(cache) >= CACHED_DENOISERS:
            cache.pop(next(iter(cache)))
        cache[key] = resolve(
            request["method"],
            colour=colour,
            sigma=None if sigma is None else float(sigma) / 255.0,
            precision=request.get("precision", "auto"),
        )
    return cache[key]


def _read(request: dict[str, Any]) -> Any:
    from meddenoise.io import read_image

    files = request.get("files")
    return read_image(
        request["input"],
        max_pixels=request.get("max_pixels"),
        files=[Path(name) for name in files] if files else None,
    )


def _denoise(request: dict[str, Any], cache: dict[tuple[Any, ...], Any]) -> dict[str, Any]:
    from meddenoise.io import output_name, write_image
    from meddenoise.pipeline import denoise_image
    from meddenoise.types import is_colour

    image = _read(request)
    denoiser = _denoiser(request, is_colour(image.meta.layout), cache)
    result = denoise_image(image, denoiser, strength=float(request.get("strength", 1.0)))
    source = Path(request["input"])
    target = Path(request["output_dir"]) / output_name(source.name, image.meta.format)
    report = write_image(result, target)
    return {
        "ok": True,
        "output": str(report.paths[0]),
        "format": image.meta.format,
        "method": denoiser.name,
        "clipped": report.clipped,
    }


def _view(request: dict[str, Any], cache: dict[tuple[Any, ...], Any]) -> dict[str, Any]:
    from meddenoise.io import read_image
    from meddenoise.noise_map import noise_level_image
    from meddenoise.pipeline import transform_image
    from meddenoise.types import is_colour
    from meddenoise.web.display import display_info

    image = _read(request)
    if request.get("denoised"):
        denoised, level = _earlier_result(request, image)
        name = "earlier run"
    else:
        denoiser = _denoiser(request, is_colour(image.meta.layout), cache)
        denoised = transform_image(
            image, denoiser, method=denoiser.name, parameters=dict(denoiser.parameters)
        )
        level = noise_level_image(image, denoiser)
        name = denoiser.name
    scratch = Path(request["scratch"])
    scratch.mkdir(parents=True, exist_ok=True)
    np.save(scratch / "before.npy", np.asarray(image.array, dtype=np.float64))
    np.save(scratch / "after.npy", np.asarray(denoised.array, dtype=np.float64))
    np.save(scratch / "noise.npy", level.values)
    reference = None
    if request.get("reference"):
        reference = read_image(request["reference"], max_pixels=request.get("max_pixels"))
        if reference.array.shape != image.array.shape:
            raise ValueError(
                f"the reference's shape {reference.array.shape} differs from the image's "
                f"{image.array.shape}"
            )
        np.save(scratch / "reference.npy", np.asarray(reference.array, dtype=np.float64))
        masks = [
            candidate.meta.keep_mask
            for candidate in (image, reference)
            if candidate.meta.keep_mask is not None
            and candidate.meta.keep_mask.shape == image.array.shape
        ]
        if masks:  # padding is left out of the scores, as `meddenoise evaluate` does
            np.save(scratch / "mask.npy", ~np.logical_or.reduce(masks))
    (scratch / "derivation.json").write_text(json.dumps(denoised.meta.derivation, default=str))
    info = display_info(image, denoised.array, level)
    info["method"] = name
    info["reference"] = reference is not None
    return {"ok": True, **info}


def _earlier_result(request: dict[str, Any], image: Any) -> tuple[Any, Any]:
    """An earlier run's output as the "after" (`meddenoise view --denoised`), and the level."""
    import dataclasses

    from meddenoise.classical import Identity
    from meddenoise.io import Image
    from meddenoise.noise_map import NoiseLevel, noise_level_image

    files = request.get("denoised_files") or []
    # Several files are the slices of a series, read in the order of the input's slices.
    earlier = _read(
        {**request, "input": request["denoised"], "files": files if len(files) > 1 else None}
    )
    if earlier.array.shape != image.array.shape:
        raise ValueError(
            f"the earlier output's shape {earlier.array.shape} differs from the input's "
            f"{image.array.shape}"
        )
    derivation = {
        "method": "blend with an earlier meddenoise output",
        "parameters": {"output": Path(request["denoised"]).name},
    }
    denoised = Image(
        array=np.asarray(earlier.array, dtype=np.float64),
        meta=dataclasses.replace(image.meta, derivation=derivation),
    )
    estimate = noise_level_image(image, Identity())
    level = NoiseLevel(
        estimate.values, False, False, "estimated (PCA); the earlier run's level is not known"
    )
    return denoised, level


def _write(request: dict[str, Any]) -> dict[str, Any]:
    import dataclasses

    from meddenoise.io import Image, write_image
    from meddenoise.pipeline import blend_images

    image = _read(request)
    scratch = Path(request["scratch"])
    after = np.load(scratch / "after.npy", allow_pickle=False)
    derivation = json.loads((scratch / "derivation.json").read_text())
    denoised = Image(array=after, meta=dataclasses.replace(image.meta, derivation=derivation))
    report = write_image(
        blend_images(image, denoised, float(request["strength"])), Path(request["output"])
    )
    return {"ok": True, "paths": [str(path) for path in report.paths], "clipped": report.clipped}


def _metrics(request: dict[str, Any]) -> dict[str, Any]:
    from meddenoise import metrics
    from meddenoise.pipeline import blend

    scratch = Path(request["scratch"])
    before = np.load(scratch / "before.npy", allow_pickle=False)
    after = np.load(scratch / "after.npy", allow_pickle=False)
    reference = np.load(scratch / "reference.npy", allow_pickle=False)
    mask = None
    described = "none (every pixel scored)"
    mask_path = scratch / "mask.npy"
    if mask_path.is_file():
        mask = np.load(mask_path, allow_pickle=False)
        described = "padding excluded (PixelPaddingValue: outside the field of view)"
    layout = request["layout"]
    blended = blend(before, after, float(request["strength"]))
    scores = {}
    for name, values in (("input", before), ("output", blended)):
        scored = metrics.compare(reference, values, layout=layout, mask=mask)
        scores[name] = {
            "psnr": None if not np.isfinite(scored["psnr"]) else float(scored["psnr"]),
            "ssim": float(scored["ssim"]),
        }
    return {"ok": True, "scores": scores, "mask": described, "strength": request["strength"]}


def handle(request: dict[str, Any], cache: dict[tuple[Any, ...], Any]) -> dict[str, Any]:
    """Answer one request; every failure is an answer, never an exception.

    Parameters
    ----------
    request
        A decoded request line (see the module docstring).
    cache
        Denoisers built by earlier requests of this worker.

    Returns
    -------
    dict
        ``{"ok": True, ...}`` or ``{"ok": False, "status": code, "error": message}``.
    """
    from meddenoise.io import ImageError, PixelLimitError

    kind = request.get("kind")
    try:
        if kind == "denoise":
            return _denoise(request, cache)
        if kind == "view":
            return _view(request, cache)
        if kind == "write":
            return _write(request)
        if kind == "metrics":
            return _metrics(request)
        return {"ok": False, "status": 400, "error": f"unknown request kind {kind!r}"}
    except PixelLimitError as error:
        return {"ok": False, "status": 413, "error": error.reason}
    except ImageError as error:
        # The reason only: the path is a temporary file's, meaningless (and private) to a client.
        return {"ok": False, "status": 422, "error": error.reason}
    except ValueError as error:
        return {"ok": False, "status": 400, "error": str(error).splitlines()[0]}
    except MemoryError:
        return {"ok": False, "status": 507, "error": "not enough memory for this image"}
    except Exception as error:  # a bug or a library failure: the server must keep answering
        return {"ok": False, "status": 500, "error": f"{type(error).__name__} while denoising"}


def main() -> None:
    """Serve requests from stdin until it closes; answers go to the original stdout only."""
    protocol = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1, encoding="utf-8")
    # Anything a library prints must not corrupt the answers: the usual stdout goes to stderr.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    warnings.simplefilter("ignore")
    # Imported before saying ready, so that a fresh worker's first request is not slower by the
    # imports (a second or more) and a time limit means the same for every request.
    import meddenoise.classical
    import meddenoise.io.dicom
    import meddenoise.io.nifti
    import meddenoise.io.raster
    import meddenoise.noise_map
    import meddenoise.pipeline  # noqa: F401

    cache: dict[tuple[Any, ...], Any] = {}
    protocol.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        try:
            request = json.loads(line)
        except json.JSONDecodeError:
            answer: dict[str, Any] = {"ok": False, "status": 500, "error": "malformed request"}
        else:
            answer = handle(request, cache)
        protocol.write(json.dumps(answer) + "\n")


if __name__ == "__main__":
    main()
