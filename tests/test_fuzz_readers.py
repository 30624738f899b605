"""Damaged files through `read_image`: a one-line `ImageError` or a sound image, nothing else.

Real files of each format (DICOM, NIfTI, PNG, TIFF) are damaged by hypothesis in their headers
(bits flipped, bytes overwritten, inserted or deleted, the file cut short; now and then anywhere
in the file, where the C decoders read) and read in a worker process (tests/fuzz_worker.py), one
file per request, with a timeout: a crash or a hang of a decoder fails the test as surely as an
exception other than `ImageError`.  The property: the reader raises `ImageError` in one line naming
the file, or returns an image that is sound (`io.check_sound`) and can be written back; the file
is never changed.  A few hundred files in the default run (derandomized, so CI sees the same
ones), thousands under ``pytest -m slow``.  A sample of refused files also goes through the
installed `meddenoise` command: exit status 1, one line per file naming it, inputs unchanged.
"""

from __future__ import annotations

import hashlib
import json
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import PIL.Image
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import data_file
from .test_cli import console_script

WORKER = Path(__file__).with_name("fuzz_worker.py")
# Seconds one read may take before it counts as a hang (the files are a few kilobytes).
TIMEOUT_S = 20.0
FAST_EXAMPLES = 30  # per seed file: 14 seeds, a few hundred files in the default run
SLOW_EXAMPLES = 2000  # per seed file under -m slow: tens of thousands


@dataclass(frozen=True)
class Seed:
    """A valid file to damage: its name, bytes, and the spans of it that are header."""

    name: str
    data: bytes
    header: tuple[tuple[int, int], ...]


class Worker:
    """tests/fuzz_worker.py in a subprocess, restarted after a crash or a hang."""

    def __init__(self) -> None:
        self._start()

    def _start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(WORKER)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        self.answers: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._pump, args=(self.process, self.answers), daemon=True).start()

    @staticmethod
    def _pump(process: subprocess.Popen[str], answers: queue.Queue[str | None]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            answers.put(line)
        answers.put(None)  # the worker ended

    def read(self, path: Path, scratch: Path) -> dict[str, str]:
        """The worker's verdict on `path`: kind "image", "refused", "escaped", "crash" or "hang"."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(
                json.dumps({"path": str(path), "scratch": str(scratch)}) + "\n"
            )
            self.process.stdin.flush()
        except BrokenPipeError:  # the worker died before this request (a crash on the last one)
            line = None
        else:
            line = self._answer()
        if line == "hang":
            self.close()
            self._start()
            return {"kind": "hang", "message": f"no answer within {TIMEOUT_S:g} s"}
        if line is None:
            code = self.process.wait()
            self._start()
            return {"kind": "crash", "message": f"the reader's process died (exit status {code})"}
        return json.loads(line)

    def _answer(self) -> str | None:
        """The worker's next line, None when it ended, "hang" when it said nothing in time."""
        try:
            return self.answers.get(timeout=TIMEOUT_S)
        except queue.Empty:
            return "hang"

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    running = Worker()
    yield running
    running.close()


def _dicom_seed(name: str) -> Seed:
    data = data_file(name).read_bytes()
    pixel_data = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data, little endian
    return Seed(name, data, ((0, pixel_data + 12),))


def _png_seed(name: str, array: np.ndarray, folder: Path, **options: Any) -> Seed:
    path = folder / name
    if array.dtype == np.uint16 and array.ndim == 3:
        import png

        height, width = array.shape[:2]
        with open(path, "wb") as handle:
            png.Writer(width, height, greyscale=False, bitdepth=16).write(
                handle, array.reshape(height, width * 3)
            )
    else:
        picture = PIL.Image.fromarray(array)
        if "palette" in options:
            picture = PIL.Image.fromarray(array, mode="P")
            picture.putpalette(options["palette"])
        picture.save(path)
    data = path.read_bytes()
    return Seed(name, data, ((0, data.index(b"IDAT") + 4),))


def _tiff_seed(name: str, array: np.ndarray, folder: Path, **options: Any) -> Seed:
    path = folder / name
    tifffile.imwrite(path, array, **options)
    data = path.read_bytes()
    first_ifd = int.from_bytes(data[4:8], "little")
    entries = int.from_bytes(data[first_ifd : first_ifd + 2], "little")
    return Seed(name, data, ((0, 8), (first_ifd, first_ifd + 2 + 12 * entries + 4)))


def _nifti_seed(name: str, folder: Path) -> Seed:
    path = folder / name
    volume = np.random.default_rng(3).integers(-1000, 3000, (6, 5, 4)).astype(np.int16)
    image = nib.Nifti1Image(volume, np.diag([0.7, 0.7, 2.5, 1.0]))
    image.header.set_slope_inter(0.5, -20.0)
    nib.save(image, path)
    data = path.read_bytes()
    return Seed(name, data, ((0, 352 if name.endswith(".nii") else len(data)),))


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Seed]:
    folder = tmp_path_factory.mktemp("seeds")
    rng = np.random.default_rng(0)
    grey16 = rng.integers(0, 65536, (12, 10)).astype(np.uint16)
    rgb8 = rng.integers(0, 256, (12, 10, 3)).astype(np.uint8)
    made = [
        _dicom_seed("CT_small.dcm"),
        _dicom_seed("MR_small_jp2klossless.dcm"),
        _dicom_seed("emri_small_jpeg_ls_lossless.dcm"),
        _dicom_seed("SC_rgb_rle_2frame.dcm"),
        _dicom_seed("JPGExtended.dcm"),
        _nifti_seed("volume.nii", folder),
        _nifti_seed("volume.nii.gz", folder),
        _png_seed("grey16.png", grey16, folder),
        _png_seed("rgb8.png", rgb8, folder),
        _png_seed("rgb16.png", rng.integers(0, 65536, (6, 5, 3)).astype(np.uint16), folder),
        _png_seed(
            "palette.png",
            (np.arange(120) % 4).reshape(12, 10).astype(np.uint8),
            folder,
            palette=[0, 0, 0, 90, 90, 90, 200, 10, 10, 255, 255, 255],
        ),
        _tiff_seed("grey16.tif", grey16, folder),
        _tiff_seed("rgb8.tif", rgb8, folder, photometric="rgb"),
        _tiff_seed(
            "stack.tif",
            rng.integers(0, 4096, (3, 8, 9)).astype(np.uint16),
            folder,
            compression="zlib",
            photometric="minisblack",
        ),
    ]
    return {seed.name: seed for seed in made}


SEED_NAMES = [
    "CT_small.dcm",
    "MR_small_jp2klossless.dcm",
    "emri_small_jpeg_ls_lossless.dcm",
    "SC_rgb_rle_2frame.dcm",
    "JPGExtended.dcm",
    "volume.nii",
    "volume.nii.gz",
    "grey16.png",
    "rgb8.png",
    "rgb16.png",
    "palette.png",
    "grey16.tif",
    "rgb8.tif",
    "stack.tif",
]


@st.composite
def damaged(draw: st.DrawFn, seed: Seed) -> bytes:
    """`seed`'s bytes with one to three changes, mostly in its header."""
    data = bytearray(seed.data)
    for _ in range(draw(st.integers(1, 3))):
        if not data:
            break
        start, end = draw(st.sampled_from(seed.header))
        end = min(end, len(data))
        anywhere = draw(st.integers(0, 4)) == 0 or start >= end
        position = draw(st.integers(0, len(data) - 1) if anywhere else st.integers(start, end - 1))
        kind = draw(st.sampled_from(["flip", "byte", "insert", "delete", "cut"]))
        if kind == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte":
            data[position] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]) | st.integers(0, 255))
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[position : position + draw(st.integers(1, 8))]
        else:
            del data[position:]
    return bytes(data)


def check_damaged_file(worker: Worker, folder: Path, name: str, content: bytes) -> None:
    path = folder / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    scratch = folder / "out"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()

    outcome = worker.read(path, scratch)

    assert outcome["kind"] in ("image", "refused"), outcome["message"]
    if outcome["kind"] == "refused":
        assert "\n" not in outcome["message"]
        assert outcome["message"].startswith(f"{path}: "), outcome["message"]
    assert hashlib.sha256(path.read_bytes()).digest() == hashlib.sha256(content).digest()


@pytest.mark.parametrize(
    "examples", [FAST_EXAMPLES, pytest.param(SLOW_EXAMPLES, marks=pytest.mark.slow)]
)
@pytest.mark.parametrize("seed_name", SEED_NAMES)
def test_a_damaged_file_gives_an_image_error_or_a_sound_image(
    seed_name: str,
    examples: int,
    worker: Worker,
    seeds: dict[str, Seed],
    tmp_path: Path,
) -> None:
    seed = seeds[seed_name]

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=examples == FAST_EXAMPLES,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(content=damaged(seed))
    def check(content: bytes) -> None:
        check_damaged_file(worker, tmp_path, seed.name, content)

    check()


def test_the_seed_files_are_read_as_images(
    worker: Worker, seeds: dict[str, Seed], tmp_path: Path
) -> None:
    # Guards the fuzzing: undamaged, every seed is a sound image that writes back.
    assert sorted(seeds) == sorted(SEED_NAMES)
    for seed in seeds.values():
        path = tmp_path / seed.name
        path.write_bytes(seed.data)
        (tmp_path / "out").mkdir(exist_ok=True)

        outcome = worker.read(path, tmp_path / "out")

        assert outcome["kind"] == "image", (seed.name, outcome)
        assert "refused" not in outcome["message"], (seed.name, outcome)


def test_the_worker_reports_a_crash_and_goes_on(worker: Worker, tmp_path: Path) -> None:
    # A decoder that kills its process must show up as a failure, not pass unnoticed.
    worker.process.kill()

    outcome = worker.read(tmp_path / "any.png", tmp_path)
    after = worker.read(tmp_path / "absent.png", tmp_path)

    assert outcome["kind"] == "crash"
    assert after["kind"] == "refused"


def refused_sample(worker: Worker, seeds: dict[str, Seed], folder: Path) -> list[Path]:
    """Damaged files the reader refuses: two per format, found with a fixed random sequence."""
    rng = np.random.default_rng(11)
    chosen: list[Path] = []
    for suffix in (".dcm", ".nii", ".png", ".tif"):
        candidates = [seed for name, seed in seeds.items() if name.endswith(suffix)]
        found = 0
        for attempt in range(200):
            seed = candidates[attempt % len(candidates)]
            data = bytearray(seed.data)
            start, end = seed.header[0]
            cut = int(rng.integers(start, min(end, len(data))))
            data[cut : cut + 4] = rng.integers(0, 256, 4).astype(np.uint8).tobytes()
            path = folder / f"{found}-{attempt}-{seed.name}"
            path.write_bytes(bytes(data))
            if worker.read(path, folder.parent)["kind"] == "refused":
                chosen.append(path)
                found += 1
                if found == 2:
                    break
            else:
                path.unlink()
        assert found == 2, f"no refused {suffix} sample found"
    return chosen


def test_damaged_files_through_the_command_line_fail_cleanly_one_line_each(
    worker: Worker, seeds: dict[str, Seed], tmp_path: Path
) -> None:
    folder = tmp_path / "damaged"
    folder.mkdir()
    sample = refused_sample(worker, seeds, folder)
    group_length = bytearray(data_file("CT_small.dcm").read_bytes())
    group_length[136:138] = b"\x00\x00"  # the VR of (0002,0000): pydicom's BytesLengthException
    (folder / "group_length.dcm").write_bytes(bytes(group_length))
    sample.append(folder / "group_length.dcm")
    before = {path: path.read_bytes() for path in sample}

    completed = subprocess.run(
        [console_script(), "denoise", str(folder), "-o", str(tmp_path / "out"), "-m", "identity"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert completed.returncode == 1, completed.stderr
    lines = completed.stderr.splitlines()
    assert "Traceback" not in completed.stderr
    assert len(lines) == len(sample), completed.stderr
    for path in sample:
        assert [line for line in lines if line.startswith(f"error: {path}: ")], (path, *lines)
        assert path.read_bytes() == before[path]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.*"))
    assert f"0 written to {tmp_path / 'out'}" in completed.stdout
