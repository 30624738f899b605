"""Reads one file per request in its own process, so a crash or hang in a C decoder is seen.

Started by tests/test_fuzz_readers.py.  Each line on stdin is a JSON request ``{"path": ...,
"scratch": ...}``; each answer on stdout is one JSON line ``{"kind": ..., "message": ...}``:

- "image": `read_image` gave an image (`read_image` checks it is sound) and it was written back
  (an identity transform, to `scratch`) without error, or with an `ImageError`;
- "refused": `read_image` raised `ImageError`;
- "escaped": any other exception, with its traceback: the contract is broken.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import sys
import traceback
from pathlib import Path

from meddenoise.io import ImageError, output_name, read_image, write_image
from meddenoise.pipeline import transform_image

MAX_PIXELS = 1 << 22


def handle(path: Path, scratch: Path) -> dict[str, str]:
    try:
        image = read_image(path, max_pixels=MAX_PIXELS)
    except ImageError as error:
        return {"kind": "refused", "message": str(error)}
    except Exception as error:
        return {"kind": "escaped", "message": f"{error!r}\n{traceback.format_exc()}"}
    try:
        same = transform_image(image, lambda unit: unit, method="identity", parameters={})
        write_image(same, scratch / output_name(path.name, image.meta.format))
    except ImageError as error:
        return {"kind": "image", "message": f"written back refused: {error}"}
    except Exception as error:
        return {"kind": "escaped", "message": f"writing: {error!r}\n{traceback.format_exc()}"}
    return {"kind": "image", "message": f"{image.meta.layout} {image.array.shape}"}


def main() -> None:
    # A damaged header may declare a large image: the worker, not the machine, runs out of
    # memory (where the system lets a process cap its address space).
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
    # Answers go to the original stdout; anything a library prints goes to stderr instead.
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    for line in sys.stdin:
        request = json.loads(line)
        answer = handle(Path(request["path"]), Path(request["scratch"]))
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
