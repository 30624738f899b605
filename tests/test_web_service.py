"""`meddenoise serve` on loopback: exact results under load, limits, floods, disconnects, token.

Every server is a real process on 127.0.0.1 with a free port (tests/web_harness.py), stopped at
the end; every loop of requests is bounded in count and time.  Methods are `median` and
`gaussian`: what is tested is the service, not the denoisers.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import io
import json
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from meddenoise.io import read_image, write_image
from meddenoise.pipeline import denoise_image, transform_image

from .conftest import data_file, skip_without
from .web_harness import ServerProcess, resident_memory_kb, wait_until

# The web extra is a dev dependency: skipped only on a user's machine without it, never in CI.
pytestmark = pytest.mark.skipif(skip_without("starlette"), reason="the web extra is not installed")
TOKEN = "test-token-0123456789"
MAX_BODY_MB = 8
FLOOD_REQUESTS = 160
CONCURRENT_REQUESTS = 50


def write_png(path: Path, array: np.ndarray) -> Path:
    import PIL.Image

    PIL.Image.fromarray(array).save(path)
    return path


def make_files(folder: Path) -> list[tuple[Path, str]]:
    """Ten images of every format the API takes, each with the query string it is sent with."""
    import nibabel
    import png
    import tifffile
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files: list[Path] = []
    for name in ("CT_small.dcm", "MR_small.dcm"):
        files.append(Path(shutil.copyfile(data_file(name), folder / name)))
    ct = read_image(files[0])
    noisy = transform_image(
        ct,
        lambda unit: unit + rng.normal(0, 0.02, unit.shape).astype(np.float32),
        method="test noise",
        parameters={},
    )
    files.append(write_image(noisy, folder / "ct_noisy.dcm").paths[0])
    files.append(write_png(folder / "camera.png", data.camera()[100:196, 200:296]))
    files.append(write_png(folder / "coffee.png", data.coffee()[100:180, 200:300]))
    import PIL.Image

    PIL.Image.fromarray(data.camera()[:64, :64]).save(folder / "camera.jpg", quality=90)
    files.append(folder / "camera.jpg")
    smooth = (rng.random((80, 80)) * 3000 + np.linspace(0, 20000, 80)[None]).astype(np.uint16)
    tifffile.imwrite(folder / "grey16.tif", smooth)
    files.append(folder / "grey16.tif")
    colour16 = (rng.random((48, 48, 3)) * 60000).astype(np.uint16)
    with open(folder / "colour16.png", "wb") as handle:
        png.Writer(48, 48, bitdepth=16, greyscale=False).write(
            handle, colour16.reshape(48, -1).tolist()
        )
    files.append(folder / "colour16.png")
    volume = rng.normal(100, 10, (40, 40, 5)).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), folder / "volume.nii")
    files.append(folder / "volume.nii")
    nibabel.save(nibabel.Nifti1Image(volume[..., :3] * 2, np.eye(4)), folder / "volume.nii.gz")
    files.append(folder / "volume.nii.gz")
    queries = [
        "method=median",
        "method=median&strength=0.5",
        "method=gaussian&sigma=10",
        "method=median&strength=0.25",
        "method=median",
        "method=gaussian&sigma=5&strength=0.7",
        "method=median",
        "method=median&strength=0.5",
        "method=median",
        "method=gaussian&sigma=20",
    ]
    return list(zip(files, queries, strict=True))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("server")
    arguments = ["serve", "--workers", "2", "--queue", "64", "--token", TOKEN]
    with ServerProcess(
        [*arguments, "--max-body-mb", str(MAX_BODY_MB), "--timeout", "60"], folder, token=TOKEN
    ) as running:
        yield running


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return make_files(tmp_path_factory.mktemp("files"))


def answer_image(body: bytes, name: str, folder: Path):
    """The image a response holds, read through the same reader as any file."""
    path = folder / name
    path.write_bytes(body)
    return read_image(path)


def denoise(server: ServerProcess, path: Path, query: str) -> tuple[int, bytes]:
    status, _, body = server.request("POST", f"/v1/denoise?{query}", path.read_bytes())
    return status, body


def test_fifty_concurrent_requests_give_exactly_the_serial_results(server, files, tmp_path):
    """Serial answers equal the library's result; 50 concurrent ones equal the serial ones."""
    from meddenoise.methods import resolve
    from meddenoise.types import is_colour

    serial = {}
    for index, (path, query) in enumerate(files):
        status, body = denoise(server, path, query)
        assert status == 200, (path.name, body[:200])
        serial[index] = body
        got = answer_image(body, f"serial{index}_{path.name}", tmp_path)
        # The same denoising in this process: the service adds nothing and loses nothing.
        options = dict(part.split("=") for part in query.split("&"))
        image = read_image(path)
        sigma = float(options["sigma"]) / 255 if "sigma" in options else None
        denoiser = resolve(options["method"], sigma=sigma, colour=is_colour(image.meta.layout))
        expected = denoise_image(image, denoiser, strength=float(options.get("strength", 1)))
        write_image(expected, tmp_path / f"library{index}_{path.name}")
        library = read_image(tmp_path / f"library{index}_{path.name}")
        assert got.meta.format == image.meta.format
        np.testing.assert_array_equal(got.array, library.array, err_msg=path.name)
        assert not np.array_equal(got.array, image.array), f"{path.name} was not denoised"
    order = [index % len(files) for index in range(CONCURRENT_REQUESTS)]
    random.Random(0).shuffle(order)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(CONCURRENT_REQUESTS) as pool:
        answers = list(pool.map(lambda index: (index, denoise(server, *files[index])), order))
    assert time.monotonic() - started < 120
    for number, (index, (status, body)) in enumerate(answers):
        assert status == 200, body[:200]
        name = files[index][0].name
        got = answer_image(body, f"concurrent{number}_{name}", tmp_path)
        reference = answer_image(serial[index], f"reference{number}_{name}", tmp_path)
        np.testing.assert_array_equal(got.array, reference.array, err_msg=name)
        if got.meta.format != "dicom":  # DICOM files carry their creation time
            assert body == serial[index], name
    assert server.scratch_files() == []


def test_the_answer_is_the_sent_format_and_records_the_strength(server, files, tmp_path):
    import pydicom

    status, headers, body = server.request(
        "POST",
        "/v1/denoise?method=median&strength=0.5",
        files[0][0].read_bytes(),
        headers={"Content-Type": "image/png"},  # a lying Content-Type changes nothing
    )
    assert status == 200
    assert headers["content-type"] == "application/dicom"
    dataset = pydicom.dcmread(io.BytesIO(body))
    assert dataset.ImageType[0] == "DERIVED"
    assert "strength=0.5" in dataset.DerivationDescription
    assert "median" in dataset.DerivationDescription
    methods = server.json("GET", "/v1/methods")["methods"]
    assert "median" in methods and "default" in methods


def raw_exchange(server: ServerProcess, head: bytes, body_chunks=(), *, timeout=10.0) -> bytes:
    """Send a raw request (headers, then body chunks while the server reads), return the answer."""
    port = int(server.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as connection:
        connection.sendall(head)
        try:
            for chunk in body_chunks:
                connection.sendall(chunk)
        except OSError:  # the server answered and closed while we were still sending
            pass
        received = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                part = connection.recv(65536)
            except OSError:
                break
            if not part:
                break
            received += part
            if b"\r\n\r\n" in received and b'"error"' in received:
                break
        return received


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    return int(answer.split(b" ", 2)[1])


def head(path: str, extra: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\n{extra}\r\n"
    ).encode()


def test_oversized_bodies_get_413_with_memory_bounded_and_no_file_left(server):
    pid = server.pid()
    before = resident_memory_kb(pid)
    # A declared length over the limit: answered before a byte of the body is sent.
    started = time.monotonic()
    answer = raw_exchange(server, head("/v1/denoise", "Content-Length: 10737418240\r\n"))
    assert status_of(answer) == 413 and time.monotonic() - started < 5
    # No length declared, 64 MiB sent in chunks: cut off at the limit.
    chunk = b"\x00" * (1 << 20)
    framed = b"%x\r\n" % len(chunk) + chunk + b"\r\n"
    answer = raw_exchange(
        server,
        head("/v1/denoise", "Transfer-Encoding: chunked\r\n"),
        (framed for _ in range(64)),
    )
    assert status_of(answer) == 413 and b"over the limit" in answer
    # A Content-Length that lies: 1000 bytes declared, 5000 sent (chunked framing carries them).
    lie = b"\x89PNG\r\n\x1a\n" + b"\x00" * 4992
    answer = raw_exchange(
        server,
        head("/v1/denoise", "Content-Length: 1000\r\nTransfer-Encoding: chunked\r\n"),
        [b"%x\r\n" % len(lie) + lie + b"\r\n0\r\n\r\n"],
    )
    assert status_of(answer) == 413 and b"longer than its Content-Length" in answer
    growth_mb = (resident_memory_kb(pid) - before) / 1024
    assert growth_mb < 3 * MAX_BODY_MB, f"the server grew by {growth_mb:.0f} MiB"
    wait_until(lambda: server.scratch_files() == [], 10, "the upload's folder to go")
    assert server.request("GET", "/healthz")[0] == 200


def malformed_requests(files) -> list[tuple[str, bytes, dict[str, str]]]:
    """Requests a client could send by mistake or malice; none of them is a valid one."""
    rng = random.Random(1)
    ct = files[0][0].read_bytes()
    png_bytes = files[3][0].read_bytes()
    bomb = bytearray(png_bytes[:33])
    bomb[16:24] = (30000).to_bytes(4, "big") + (30000).to_bytes(4, "big")  # declares 900 Mpx
    kinds = [
        ("/v1/denoise", bytes(rng.randrange(256) for _ in range(300)), {}),
        ("/v1/denoise", ct[: len(ct) // 3], {}),
        ("/v1/denoise", png_bytes[:200], {}),
        ("/v1/denoise", bytes(bomb) + png_bytes[33:], {}),
        ("/v1/denoise", b"", {}),
        ("/v1/denoise", gzip.compress(b"not a nifti file" * 40), {}),
        ("/v1/denoise?method=../../etc/passwd", ct, {}),
        ("/v1/denoise?method=median&strength=2", ct, {}),
        ("/v1/denoise?method=median&sigma=-1", ct, {}),
        ("/v1/denoise?method=median&sigma=nan", ct, {}),
        ("/v1/denoise?method=median&colour=1", ct, {}),
        ("/v1/denoise?method=median", ct, {"Content-Length": "abc"}),
        ("/v1/nothing", ct, {}),
    ]
    return [kinds[index % len(kinds)] for index in range(FLOOD_REQUESTS)]


def test_a_flood_of_malformed_requests_gets_only_4xx_and_healthz_stays_up(server, files):
    requests = malformed_requests(files)
    statuses: list[int] = []

    def send(request: tuple[str, bytes, dict[str, str]]) -> int:
        path, body, headers = request
        if "Content-Length" in headers:  # urllib would fix the header: send it raw
            extra = f"Content-Length: {headers['Content-Length']}\r\n"
            return status_of(raw_exchange(server, head(path, extra), [body]))
        return server.request("POST", path, body, timeout=30)[0]

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for status in pool.map(send, requests):
            statuses.append(status)
            assert server.request("GET", "/healthz", token=None, timeout=10)[0] == 200
    assert time.monotonic() - started < 120
    assert all(400 <= status < 500 for status in statuses), sorted(set(statuses))
    assert {400, 404, 413, 415, 422} <= set(statuses)
    # Garbage that is not HTTP at all: the connection is refused politely, the server lives on.
    for garbage in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(100), b"GET\r\n\r\n"):
        answer = raw_exchange(server, garbage)
        assert answer == b"" or 400 <= status_of(answer) < 500
    status, _, _ = server.request("POST", "/v1/denoise?method=median", files[3][0].read_bytes())
    assert status == 200
    wait_until(lambda: server.scratch_files() == [], 10, "every request's folder to go")


def test_clients_that_go_away_leave_no_partial_output(server, tmp_path):
    import tifffile

    port = int(server.url.rsplit(":", 1)[1])
    # Mid-upload: 100 kB announced, 5 kB sent, then the connection closes.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(head("/v1/denoise?method=median", "Content-Length: 100000\r\n"))
        connection.sendall(b"II*\x00" + bytes(5000))
    # Mid-response: a large answer, of which the client reads the headers only.
    large = tmp_path / "large.tif"
    tifffile.imwrite(large, np.random.default_rng(0).integers(0, 60000, (1200, 1200), np.uint16))
    body = large.read_bytes()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as connection:
        connection.sendall(
            head("/v1/denoise?method=median", f"Content-Length: {len(body)}\r\n") + body
        )
        first = connection.recv(4096)
        assert first.startswith(b"HTTP/1.1 200")
    wait_until(lambda: server.scratch_files() == [], 20, "the requests' folders to go")
    assert server.request("GET", "/healthz")[0] == 200


def test_the_token_is_required_and_a_wider_bind_needs_one(server, files, tmp_path):
    body = files[3][0].read_bytes()
    assert server.request("POST", "/v1/denoise?method=median", body, token=None)[0] == 401
    assert server.request("POST", "/v1/denoise?method=median", body, token="wrong")[0] == 401
    assert server.request("GET", "/v1/methods", token=TOKEN[:-1] + "x")[0] == 401
    assert server.request("GET", "/healthz", token=None)[0] == 200
    assert server.request("POST", "/v1/denoise?method=median", body)[0] == 200
    # Beyond loopback without a token: refused before anything listens.
    for host in ("0.0.0.0", "192.0.2.10"):
        result = subprocess.run(
            [sys.executable, "-m", "meddenoise.cli", "serve", "--host", host, "--port", "0"],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1", "HOME": str(tmp_path)},
        )
        assert result.returncode == 2
        assert "token" in result.stderr and host in result.stderr


def test_a_full_server_answers_503_and_a_slow_image_is_ended(tmp_path):
    slow = tmp_path / "slow.png"
    # A 3000 x 3000 image: NLM takes about 10 s on one core, several times the 1.5 s timeout
    # (a median filter took 1.2 s and sometimes finished in time); a smooth image compresses
    # to a small upload.
    write_png(slow, np.tile(np.arange(3000, dtype=np.uint16) % 251, (3000, 1)).astype(np.uint8))
    small = write_png(tmp_path / "small.png", np.arange(64 * 64, dtype=np.uint8).reshape(64, 64))
    arguments = ["serve", "--workers", "1", "--queue", "0", "--timeout", "1.5"]
    with ServerProcess(arguments, tmp_path / "server") as server:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            first = pool.submit(server.request, "POST", "/v1/denoise?method=nlm", slow.read_bytes())
            wait_until(
                lambda: server.json("GET", "/healthz")["busy"] == 1, 20, "the worker to be busy"
            )
            status, headers, _ = server.request(
                "POST", "/v1/denoise?method=median", small.read_bytes()
            )
            assert status == 503 and int(headers["retry-after"]) > 0
            status, _, body = first.result(timeout=60)
        assert status == 504, body
        assert b"longer than" in body
        health = server.json("GET", "/healthz")
        assert health["restarts"] >= 1
        status, _, _ = server.request("POST", "/v1/denoise?method=median", small.read_bytes())
        assert status == 200
        wait_until(lambda: server.scratch_files() == [], 10, "the requests' folders to go")


def test_sniffing_and_loopback_rules():
    from meddenoise.web.app import is_loopback, sniff_format

    nifti = bytearray(352)
    nifti[:4] = (348).to_bytes(4, "little")
    nifti[344:348] = b"n+1\x00"
    assert sniff_format(bytes(nifti)) == ("nifti", ".nii")
    assert sniff_format(gzip.compress(bytes(nifti))) == ("nifti", ".nii.gz")
    assert sniff_format(gzip.compress(b"x" * 400)) is None
    assert sniff_format(bytes(128) + b"DICM") == ("dicom", ".dcm")
    assert sniff_format(b"II*\x00") == ("tiff", ".tif")
    assert sniff_format(json.dumps({"a": 1}).encode()) is None
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("[::1]")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("example")


def test_view_shows_an_earlier_run_and_guards_its_api(files, tmp_path):
    from typer.testing import CliRunner

    from meddenoise.cli import app
    from meddenoise.pipeline import blend

    photo = files[4][0]  # the colour PNG
    result = CliRunner().invoke(
        app, ["denoise", str(photo), "-o", str(tmp_path / "run"), "-m", "median"]
    )
    assert result.exit_code == 0, result.output
    arguments = ["view", str(photo), "--denoised", str(tmp_path / "run")]
    arguments += ["-o", str(tmp_path / "written"), "--no-browser"]
    with ServerProcess(arguments, tmp_path / "server") as viewer:
        assert viewer.request("GET", "/api/session", token=None)[0] == 401
        status, _, _ = viewer.request("GET", "/", headers={"Host": "attacker.example"})
        assert status == 400  # a loopback server answers loopback names only
        assert b"viewer.js" in viewer.request("GET", "/", token=None)[2]
        session = viewer.json("GET", "/api/session")
        assert [case["name"] for case in session["cases"]] == ["coffee.png"]
        info = viewer.json("POST", "/api/cases/0/prepare")
        assert info["method"] == "earlier run" and info["colour"] and info["planes"] == 1
        status, headers, data = viewer.request("GET", "/api/cases/0/plane?kind=after&index=0")
        assert status == 200 and headers["x-plane-shape"] == "80,100,3"
        earlier = read_image(tmp_path / "run" / "coffee.png").array
        np.testing.assert_array_equal(np.frombuffer(data, "<f4").reshape(80, 100, 3), earlier)
        assert viewer.request("GET", "/api/cases/0/plane?kind=after&index=7")[0] == 400
        assert viewer.request("GET", "/api/cases/5/plane?kind=after&index=0")[0] == 404
        status, _, body = viewer.request("POST", "/api/cases/0/write", b'{"strength": 2}')
        assert status == 400 and b"strength" in body
        written = viewer.json("POST", "/api/cases/0/write", b'{"strength": 0.5}')
        assert written["paths"] == [str(tmp_path / "written" / "coffee.png")]
    expected = np.rint(blend(read_image(photo).array, earlier, 0.5))
    np.testing.assert_array_equal(read_image(tmp_path / "written" / "coffee.png").array, expected)


def test_the_page_uses_no_third_party_or_remote_code():
    """The viewer is our own canvas code: no script, style or font from anywhere else."""
    from meddenoise.web.viewer import STATIC

    assert sorted(path.name for path in STATIC.iterdir()) == [
        "viewer.css",
        "viewer.html",
        "viewer.js",
    ]
    for path in STATIC.iterdir():
        text = path.read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, path
    page = (STATIC / "viewer.html").read_text(encoding="utf-8")
    assert 'src="/static/viewer.js"' in page and 'href="/static/viewer.css"' in page
