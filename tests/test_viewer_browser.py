"""`meddenoise view` in a real browser: Debian's chromium driven by Playwright, headless.

The page is opened on a real CT DICOM and a noisy colour photograph; the tests wait until both
views have drawn, move the curtain and the strength slider and check the rendered pixels change
as they must, press "write" and check the written file is a valid derived DICOM (dciodvfy) whose
pixels equal the CLI's ``--strength`` output.  A screenshot of each state is saved under the
test's temporary folder; with MEDDENOISE_FIGURES=1 two of them are also written to docs/figures/
for the README.  Chromium's own downloads are never used: ``executable_path`` is Debian's.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from meddenoise.cli import app

from .conftest import data_file, require_tool, skip_without
from .web_harness import ServerProcess

pytestmark = pytest.mark.skipif(
    skip_without("playwright") or skip_without("starlette"),
    reason="the viewer's test needs the dev extra (playwright, starlette)",
)
FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
# Chromium on a machine without a network or a GPU: nothing it would fetch or probe by itself.
CHROMIUM_ARGUMENTS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-extensions",
]
BROWSER_TIMEOUT_MS = 60_000


def chromium_path() -> str:
    """Debian's chromium (a failure under CI=true when missing, .ci/run installs it)."""
    return require_tool("chromium")


def canvas_pixels(page, canvas_id: str) -> np.ndarray:
    """A canvas's pixels as (H, W, 4) uint8, read through toDataURL (a lossless PNG)."""
    import PIL.Image

    url = page.evaluate(f"document.getElementById('{canvas_id}').toDataURL('image/png')")
    data = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(PIL.Image.open(io.BytesIO(data)).convert("RGBA"))


def set_range(page, element_id: str, value: float) -> None:
    page.locator(f"#{element_id}").fill(str(value))


def dciodvfy_errors(path: Path) -> set[str]:
    import re

    tool = require_tool("dciodvfy")
    result = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
    lines = (result.stdout + result.stderr).splitlines()
    return {re.sub(r"<[^>]*>", "", line).strip() for line in lines if line.startswith("Error")}


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A real CT (pydicom's CT_small), and a colour fundus photograph with noise and its clean
    original as the reference."""
    import nibabel
    import PIL.Image
    import pydicom
    from skimage import data

    folder = tmp_path_factory.mktemp("images")
    ct = Path(shutil.copyfile(data_file("CT_small.dcm"), folder / "ct.dcm"))
    clean = np.asarray(
        PIL.Image.fromarray(data.retina()).resize((256, 256), PIL.Image.Resampling.LANCZOS)
    )
    rng = np.random.default_rng(0)
    noisy = np.clip(clean + rng.normal(0, 20, clean.shape), 0, 255).astype(np.uint8)
    PIL.Image.fromarray(clean).save(folder / "fundus_clean.png")
    PIL.Image.fromarray(noisy).save(folder / "fundus.png")
    # The same CT stored as MONOCHROME1 (low values white) with the soft-tissue window in its
    # VOI LUT module: it must look like the CT with grey levels inverted.
    inverted = pydicom.dcmread(ct)
    inverted.PhotometricInterpretation = "MONOCHROME1"
    inverted.WindowCenter, inverted.WindowWidth = 40, 400
    inverted.save_as(folder / "ct_monochrome1.dcm")
    # A small volume whose slices differ, for slice scrolling.
    slices = np.stack([np.full((48, 48), 100.0 * index) for index in range(5)], axis=-1)
    volume = (slices + rng.normal(0, 5, slices.shape)).astype(np.float32)
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), folder / "volume.nii")
    return {
        "ct": ct,
        "photo": folder / "fundus.png",
        "reference": folder / "fundus_clean.png",
        "monochrome1": folder / "ct_monochrome1.dcm",
        "volume": folder / "volume.nii",
    }


@pytest.fixture(scope="module")
def viewer(images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("viewer")
    arguments = [
        "view",
        str(images["ct"]),
        str(images["photo"]),
        str(images["monochrome1"]),
        str(images["volume"]),
        *("--reference", "-", "--reference", str(images["reference"])),
        *("--reference", "-", "--reference", "-"),
        "--method",
        "median",
        "--output",
        str(folder / "written"),
        "--no-browser",
    ]
    with ServerProcess(arguments, folder / "server") as server:
        yield server, folder / "written"


@pytest.fixture(scope="module")
def page(viewer):
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    server, _ = viewer
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            args=CHROMIUM_ARGUMENTS,
            timeout=BROWSER_TIMEOUT_MS,
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 640})
            opened = context.new_page()
            opened.set_default_timeout(BROWSER_TIMEOUT_MS)
            errors: list[str] = []
            opened.on("pageerror", lambda error: errors.append(str(error)))
            opened.goto(server.page)
            opened.wait_for_selector("body[data-ready='1']")
            yield opened
            assert errors == [], errors
        finally:
            browser.close()


def save(page, folder: Path, name: str, figure: str | None = None) -> Path:
    path = folder / name
    page.screenshot(path=str(path))
    if figure and os.environ.get("MEDDENOISE_FIGURES") == "1":
        FIGURES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, FIGURES / figure)
    return path


def test_both_views_draw_and_the_curtain_and_strength_change_the_pixels(page, tmp_path):
    started = time.monotonic()
    main = canvas_pixels(page, "main-view")
    residual = canvas_pixels(page, "residual-view")
    assert (main[..., :3].max(axis=-1) > 0).mean() > 0.5, "the main view is blank"
    assert residual[..., 0].std() > 0, "the residual view is flat at full strength"
    facts = page.locator("#case-facts").inner_text()
    assert "CT" in facts and "128×128" in facts
    # CT without a window in the file starts on the soft-tissue preset (40 / 400 HU).
    assert page.locator("#window-preset option:checked").inner_text() == "CT soft tissue"
    save(page, tmp_path, "01-ct-loaded.png")

    set_range(page, "curtain", 1)
    before_only = canvas_pixels(page, "main-view")
    set_range(page, "curtain", 0)
    after_only = canvas_pixels(page, "main-view")
    set_range(page, "curtain", 0.5)
    split = canvas_pixels(page, "main-view")
    assert not np.array_equal(before_only, after_only), "denoising changed nothing on screen"
    np.testing.assert_array_equal(split[:, :254], before_only[:, :254])
    np.testing.assert_array_equal(split[:, 258:], after_only[:, 258:])
    save(page, tmp_path, "02-ct-curtain.png", figure="viewer-ct.png")

    # Dragging the curtain with the mouse moves it too.
    box = page.locator("#main-view").bounding_box()
    page.mouse.move(box["x"] + 256, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + 128, box["y"] + 200, steps=4)
    page.mouse.up()
    assert abs(float(page.locator("#curtain").input_value()) - 0.25) < 0.02

    set_range(page, "curtain", 0)  # the whole view shows the blend
    set_range(page, "strength", 0)
    nothing_kept = canvas_pixels(page, "main-view")
    flat_residual = canvas_pixels(page, "residual-view")
    np.testing.assert_array_equal(nothing_kept, before_only)
    shown = flat_residual[..., :3][flat_residual[..., 3] > 0]
    assert len(np.unique(shown[shown.sum(axis=-1) > 0], axis=0)) == 1, "residual not zero"
    set_range(page, "strength", 1)
    np.testing.assert_array_equal(canvas_pixels(page, "main-view"), after_only)
    set_range(page, "strength", 0.5)
    half = canvas_pixels(page, "main-view").astype(int)
    full_change = np.abs(after_only.astype(int) - before_only).sum()
    half_change = np.abs(half - before_only).sum()
    assert 0.3 * full_change < half_change < 0.7 * full_change
    save(page, tmp_path, "03-ct-strength-half.png")

    page.select_option("#window-preset", label="CT lung")
    assert not np.array_equal(canvas_pixels(page, "main-view").astype(int), half)
    page.select_option("#window-preset", label="CT soft tissue")

    # Zoom and pan are shared: a wheel over the main view changes the residual view as well.
    residual_before = canvas_pixels(page, "residual-view")
    page.mouse.move(box["x"] + 300, box["y"] + 300)
    page.mouse.wheel(0, -300)
    assert "zoom 1.00×" not in page.locator("#zoom-label").inner_text()
    assert not np.array_equal(canvas_pixels(page, "residual-view"), residual_before)
    page.locator("#reset-view").click()
    assert time.monotonic() - started < 60


def test_write_gives_a_valid_derived_dicom_equal_to_the_cli(page, viewer, images, tmp_path):
    import pydicom

    _, written_folder = viewer
    set_range(page, "strength", 0.5)
    page.locator("#write").click()
    page.wait_for_selector("body[data-written]")
    paths = [Path(path) for path in json.loads(page.evaluate("document.body.dataset.written"))]
    assert paths == [written_folder / "ct.dcm"]
    assert "written" in page.locator("#write-result").inner_text()
    save(page, tmp_path, "04-ct-written.png")
    written = pydicom.dcmread(paths[0])
    assert written.ImageType[0] == "DERIVED"
    assert "strength=0.5" in written.DerivationDescription
    new_errors = dciodvfy_errors(paths[0]) - dciodvfy_errors(images["ct"])
    assert not new_errors, new_errors

    result = CliRunner().invoke(
        app,
        [
            "denoise",
            str(images["ct"]),
            "-o",
            str(tmp_path / "cli"),
            "-m",
            "median",
            "--strength",
            "0.5",
        ],
    )
    assert result.exit_code == 0, result.output
    from_cli = pydicom.dcmread(tmp_path / "cli" / "ct.dcm")
    np.testing.assert_array_equal(written.pixel_array, from_cli.pixel_array)
    assert written.DerivationDescription == from_cli.DerivationDescription
    source = pydicom.dcmread(images["ct"])
    assert not np.array_equal(written.pixel_array, source.pixel_array)


def test_the_colour_photo_is_shown_in_colour_with_its_scores(page, tmp_path):
    page.select_option("#case", index=1)
    page.wait_for_selector("body[data-ready='1']")
    set_range(page, "strength", 1)
    set_range(page, "curtain", 0.5)
    pixels = canvas_pixels(page, "main-view")[..., :3].astype(int)
    drawn = pixels.sum(axis=-1) > 0
    assert drawn.mean() > 0.5, "the photo was not drawn"
    spread = np.abs(pixels[..., 0] - pixels[..., 1])[drawn]
    assert spread.mean() > 10, "the photo is drawn in grey"
    page.wait_for_function("document.querySelector('#metrics').textContent.includes('dB')")
    rows = page.locator("#metrics tr").all_inner_texts()
    psnr = {row.split()[0]: float(row.split()[-3]) for row in rows[1:]}
    assert psnr["output"] > psnr["input"], rows  # the median removed more noise than detail
    assert "mask" in page.locator("#metrics-mask").inner_text()
    page.locator("#noise-overlay").check()
    overlay = canvas_pixels(page, "main-view")[..., :3].astype(int)
    assert not np.array_equal(overlay, pixels)
    assert "σ" in page.locator("#noise-facts").inner_text()
    page.locator("#noise-overlay").uncheck()
    save(page, tmp_path, "05-colour.png", figure="viewer-colour.png")
    page.locator("#flicker").check()
    page.wait_for_function("document.getElementById('flicker-label').textContent.includes('after')")
    page.locator("#flicker").uncheck()


def test_monochrome1_is_inverted_and_volumes_scroll(page, tmp_path):
    page.select_option("#case", index=0)
    page.wait_for_selector("body[data-ready='1']")
    set_range(page, "strength", 1)
    set_range(page, "curtain", 1)
    monochrome2 = canvas_pixels(page, "main-view")[..., 0].astype(int)
    page.select_option("#case", index=2)
    page.wait_for_selector("body[data-ready='1']")
    # The file's own window comes first, and MONOCHROME1 is drawn with low values white.
    assert page.locator("#window-preset option:checked").inner_text().startswith("file:")
    assert "MONOCHROME1" in page.locator("#case-facts").inner_text()
    monochrome1 = canvas_pixels(page, "main-view")[..., 0].astype(int)
    inside = monochrome2 > 0  # the image's pixels, not the black around it
    assert np.abs(monochrome1[inside] + monochrome2[inside] - 255).max() <= 1
    save(page, tmp_path, "06-monochrome1.png")

    page.select_option("#case", index=3)
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#slice-box").is_visible()
    assert page.locator("#slice-label").inner_text() == "1 / 5"
    first = canvas_pixels(page, "main-view")
    page.keyboard.press("ArrowUp")
    page.wait_for_function("document.getElementById('slice-label').textContent === '2 / 5'")
    page.wait_for_function("Number(document.body.dataset.drawn) > 0")
    second = canvas_pixels(page, "main-view")
    assert not np.array_equal(first, second), "the next slice looks like the first"
    save(page, tmp_path, "07-volume-slice-2.png")
