"""PNG, TIFF and JPEG: every stored value survives an identity round trip; bad files fail."""

from __future__ import annotations

import os
import struct
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import tifffile

from meddenoise.io import ImageError, PixelLimitError, read_image, write_image
from meddenoise.pipeline import transform_image

from .conftest import file_digest

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def random_integers(dtype: type, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Random values over the dtype's whole range, both extremes included."""
    info = np.iinfo(dtype)
    array = np.random.default_rng(seed).integers(info.min, int(info.max) + 1, size=shape)
    array = array.astype(dtype)
    array.flat[0], array.flat[-1] = info.min, info.max
    return array


def save_png(array: np.ndarray, path: Path) -> None:
    PIL.Image.fromarray(array).save(path)


def save_png16_rgb(array: np.ndarray, path: Path) -> None:
    """A 16-bit RGB PNG written by pypng (Pillow cannot write one)."""
    import png

    height, width = array.shape[:2]
    with open(path, "wb") as handle:
        png.Writer(width, height, greyscale=False, bitdepth=16).write(
            handle, array.reshape(height, width * 3)
        )


def save_tiff(array: np.ndarray, path: Path) -> None:
    photometric = "rgb" if array.ndim == 3 and array.shape[-1] == 3 else "minisblack"
    tifffile.imwrite(path, array, photometric=photometric)


def save_tiff_stack(array: np.ndarray, path: Path) -> None:
    """A stack of grey pages, even when its last axis happens to be 3."""
    tifffile.imwrite(path, array, photometric="minisblack")


def identity_round_trip(source: Path, target: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read, pass through an identity function, write, read back: (first read, read back)."""
    image = read_image(source)
    unchanged = transform_image(image, lambda unit: unit, method="identity", parameters={})
    write_image(unchanged, target)
    return image.array, read_image(target).array


def smooth_image(shape: tuple[int, ...]) -> np.ndarray:
    """A smooth uint8 image JPEG compresses with small error."""
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]]
    grey = 128 + 60 * np.sin(x / 7.0) * np.cos(y / 9.0)
    if len(shape) == 3:
        grey = np.stack([grey, grey * 0.8 + 20, 255 - grey], axis=-1)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


LOSSLESS_CASES: dict[str, tuple[str, Callable[[np.ndarray, Path], None], np.ndarray, str]] = {
    "png-8bit-grey": (".png", save_png, random_integers(np.uint8, (32, 48)), "grey"),
    "png-16bit-grey": (".png", save_png, random_integers(np.uint16, (32, 48)), "grey"),
    "png-8bit-rgb": (".png", save_png, random_integers(np.uint8, (32, 48, 3)), "colour"),
    "png-16bit-rgb": (
        ".png",
        save_png16_rgb,
        random_integers(np.uint16, (32, 48, 3)),
        "colour",
    ),
    "png-3x3": (".png", save_png, random_integers(np.uint8, (3, 3)), "grey"),
    "png-1xN": (".png", save_png, random_integers(np.uint16, (1, 17)), "grey"),
    "png-Nx1": (".png", save_png, random_integers(np.uint8, (17, 1)), "grey"),
    "tiff-uint8-grey": (".tif", save_tiff, random_integers(np.uint8, (32, 48)), "grey"),
    "tiff-uint16-grey": (".tif", save_tiff, random_integers(np.uint16, (32, 48)), "grey"),
    "tiff-int16-grey": (".tiff", save_tiff, random_integers(np.int16, (32, 48)), "grey"),
    "tiff-uint16-rgb": (".tif", save_tiff, random_integers(np.uint16, (32, 48, 3)), "colour"),
    "tiff-float32": (
        ".tif",
        save_tiff,
        np.random.default_rng(1).normal(size=(32, 48)).astype(np.float32) * 1000,
        "grey",
    ),
    "tiff-uint16-volume": (".tif", save_tiff, random_integers(np.uint16, (5, 32, 48)), "volume"),
    "tiff-volume-width-3": (
        ".tif",
        save_tiff_stack,
        random_integers(np.uint16, (4, 6, 3)),
        "volume",
    ),
    "tiff-3x3": (".tif", save_tiff, random_integers(np.uint16, (3, 3)), "grey"),
    "tiff-1xN": (".tif", save_tiff, random_integers(np.uint16, (1, 17)), "grey"),
}


@pytest.mark.parametrize("case", LOSSLESS_CASES)
def test_identity_round_trip_keeps_every_value_and_the_dtype(case: str, tmp_path: Path) -> None:
    suffix, save, array, _ = LOSSLESS_CASES[case]
    source = tmp_path / f"in{suffix}"
    save(array, source)

    first, back = identity_round_trip(source, tmp_path / "out" / f"out{suffix}")

    assert first.dtype == array.dtype
    assert np.array_equal(first, array)
    assert back.dtype == array.dtype
    assert back.shape == array.shape
    assert np.array_equal(back, array)


@pytest.mark.parametrize("case", LOSSLESS_CASES)
def test_reader_reports_the_layout(case: str, tmp_path: Path) -> None:
    suffix, save, array, layout = LOSSLESS_CASES[case]
    source = tmp_path / f"in{suffix}"
    save(array, source)

    image = read_image(source)

    assert image.meta.layout == layout
    assert image.meta.source == source


def test_16bit_png_keeps_values_above_255_and_both_extremes(tmp_path: Path) -> None:
    array = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    source = tmp_path / "full.png"
    save_png(array, source)

    first, back = identity_round_trip(source, tmp_path / "full-out.png")

    assert np.array_equal(first, array)
    assert np.array_equal(back, array)
    assert back.min() == 0 and back.max() == 65535


def test_round_trip_writes_a_16bit_png_that_other_readers_see_as_16bit(tmp_path: Path) -> None:
    array = random_integers(np.uint16, (32, 48))
    source = tmp_path / "in.png"
    save_png(array, source)
    target = tmp_path / "out.png"

    identity_round_trip(source, target)

    with PIL.Image.open(target) as picture:
        assert picture.mode.startswith("I")
        assert np.array_equal(np.asarray(picture).astype(np.uint16), array)


@pytest.mark.parametrize("shape", [(32, 48), (32, 48, 3)], ids=["grey", "rgb"])
def test_jpeg_round_trip_is_within_jpeg_error(shape: tuple[int, ...], tmp_path: Path) -> None:
    source = tmp_path / "in.jpg"
    PIL.Image.fromarray(smooth_image(shape)).save(source, quality=95)

    first, back = identity_round_trip(source, tmp_path / "out.jpg")

    assert first.dtype == back.dtype == np.uint8
    assert back.shape == shape
    assert np.abs(back.astype(float) - first.astype(float)).mean() < 2.0


# --- bad inputs: an ImageError naming the file, the input left byte-identical ---


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", header)


def rgb16_png(width: int = 4, height: int = 3) -> bytes:
    """A valid 16-bit RGB PNG written by hand (colour type 2, bit depth 16)."""
    row = (np.arange(width * 3) * 5000).astype(">u2").tobytes()
    raw = b"".join(b"\x00" + row for _ in range(height))
    return (
        png_header_only(width, height, bit_depth=16, colour_type=2)
        + png_chunk(b"IDAT", zlib.compress(raw))
        + png_chunk(b"IEND", b"")
    )


def good_png_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "good-source.png"
    save_png(random_integers(np.uint16, (32, 48)), path)
    return path.read_bytes()


def good_tiff_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "good-source.tif"
    save_tiff(random_integers(np.uint16, (32, 48)), path)
    return path.read_bytes()


def looping_tiff_bytes(tmp_path: Path) -> bytes:
    """A TIFF whose first page names itself as the next one (tifffile would walk it forever)."""
    data = bytearray(good_tiff_bytes(tmp_path))
    first = int.from_bytes(data[4:8], "little")
    entries = int.from_bytes(data[first : first + 2], "little")
    following = first + 2 + 12 * entries
    data[following : following + 4] = first.to_bytes(4, "little")
    return bytes(data)


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def nan_tiff_bytes(tmp_path: Path) -> bytes:
    array = np.ones((8, 8), np.float32)
    array[2, 3] = np.nan
    path = tmp_path / "nan-source.tif"
    tifffile.imwrite(path, array)
    return path.read_bytes()


def too_wide_tiff_bytes(tmp_path: Path) -> bytes:
    path = tmp_path / "wide-source.tif"
    tifffile.imwrite(path, np.array([[-1e308, 0.0], [1.0, 1e308]]))
    return path.read_bytes()


def palette_png_bytes(
    tmp_path: Path, palette: list[int], indices: np.ndarray | None = None, **options: object
) -> bytes:
    """A palette PNG of `indices` (default: a ramp over the palette's entries)."""
    entries = len(palette) // 3
    if indices is None:
        indices = (np.arange(8 * 8) % entries).reshape(8, 8)
    picture = PIL.Image.fromarray(indices.astype(np.uint8), mode="P")
    picture.putpalette(palette)
    path = tmp_path / "palette-source.png"
    picture.save(path, **options)
    return path.read_bytes()


def alpha_png_bytes(tmp_path: Path, mode: str) -> bytes:
    path = tmp_path / "alpha-source.png"
    PIL.Image.new(mode, (8, 8)).save(path)
    return path.read_bytes()


BAD_FILES: dict[str, tuple[str, Callable[[Path], bytes], str]] = {
    "empty": ("empty.png", lambda tmp: b"", "empty"),
    "text-as-png": ("notes.png", lambda tmp: b"just some text\n", "PNG"),
    "text-as-tiff": ("notes.tif", lambda tmp: b"just some text\n", "TIFF"),
    "text-as-jpeg": ("notes.jpg", lambda tmp: b"just some text\n", "JPEG"),
    "unknown-extension": ("data.xyz", lambda tmp: b"\x00\x01\x02", ".xyz"),
    "no-extension": ("data", lambda tmp: b"\x00\x01\x02", "unsupported"),
    "truncated-png": ("cut.png", lambda tmp: half(good_png_bytes(tmp)), "PNG"),
    "png-signature-only": ("sig.png", lambda tmp: PNG_SIGNATURE, "PNG"),
    "truncated-tiff": ("cut.tif", lambda tmp: half(good_tiff_bytes(tmp)), "TIFF"),
    "truncated-tiff-header": ("head.tif", lambda tmp: good_tiff_bytes(tmp)[:6], "TIFF"),
    "tiff-pages-in-a-loop": ("loop.tif", looping_tiff_bytes, "loop back"),
    "nan-float-tiff": ("nan.tif", nan_tiff_bytes, "NaN"),
    "float-range-too-wide": ("wide.tif", too_wide_tiff_bytes, "too wide"),
    "rgba-png": ("rgba.png", lambda tmp: alpha_png_bytes(tmp, "RGBA"), "alpha"),
    "grey-alpha-png": ("la.png", lambda tmp: alpha_png_bytes(tmp, "LA"), "alpha"),
    "palette-png-with-transparency": (
        "palette.png",
        lambda tmp: palette_png_bytes(tmp, [0, 0, 0, 9, 9, 9], transparency=0),
        "transparency",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_file_raises_image_error_naming_it_and_stays_unchanged(
    case: str, tmp_path: Path
) -> None:
    name, make, reason = BAD_FILES[case]
    path = tmp_path / "inputs" / name
    path.parent.mkdir()
    path.write_bytes(make(tmp_path))
    before = file_digest(path)

    with pytest.raises(ImageError) as caught:
        read_image(path)

    message = str(caught.value)
    assert name in message
    assert reason in message
    assert "\n" not in message
    assert file_digest(path) == before


# --- formats Pillow alone would get wrong: 16-bit colour, palettes, grey stored as RGB ---


def test_16bit_colour_png_keeps_every_value_that_pillow_would_truncate(tmp_path: Path) -> None:
    path = tmp_path / "rgb16.png"
    path.write_bytes(rgb16_png())
    with PIL.Image.open(path) as picture:  # what Pillow makes of it: 8-bit RGB
        assert picture.mode == "RGB"
    expected = (np.arange(4 * 3) * 5000).astype(np.uint16).reshape(4, 3)

    first, back = identity_round_trip(path, tmp_path / "out.png")

    assert first.dtype == back.dtype == np.uint16
    assert first.shape == (3, 4, 3)
    assert np.array_equal(first, np.broadcast_to(expected, (3, 4, 3)))
    assert np.array_equal(back, first)


def test_a_written_16bit_colour_png_is_16bit_for_other_readers(tmp_path: Path) -> None:
    import png

    array = random_integers(np.uint16, (5, 7, 3))
    save_png16_rgb(array, tmp_path / "in.png")

    identity_round_trip(tmp_path / "in.png", tmp_path / "out.png")

    _, _, rows, info = png.Reader(filename=str(tmp_path / "out.png")).asDirect()
    assert (info["bitdepth"], info["planes"]) == (16, 3)
    assert np.array_equal(np.vstack(list(rows)).reshape(5, 7, 3), array)


def test_grey_palette_png_is_read_as_grey_values(tmp_path: Path) -> None:
    palette = [value for level in (0, 80, 160, 255) for value in (level, level, level)]
    path = tmp_path / "grey-palette.png"
    path.write_bytes(palette_png_bytes(tmp_path, palette))

    first, back = identity_round_trip(path, tmp_path / "out.png")

    assert read_image(path).meta.layout == "grey"
    expected = np.array([0, 80, 160, 255], np.uint8)[(np.arange(64) % 4).reshape(8, 8)]
    assert np.array_equal(first, expected)
    assert np.array_equal(back, expected)


def test_colour_palette_png_is_read_as_rgb_values(tmp_path: Path) -> None:
    palette = [255, 0, 0, 0, 128, 0, 10, 20, 30]
    path = tmp_path / "colour-palette.png"
    path.write_bytes(palette_png_bytes(tmp_path, palette))

    first, back = identity_round_trip(path, tmp_path / "out.png")

    assert read_image(path).meta.layout == "colour"
    expected = np.array(palette, np.uint8).reshape(3, 3)[(np.arange(64) % 3).reshape(8, 8)]
    assert np.array_equal(first, expected)
    assert np.array_equal(back, expected)


@pytest.mark.parametrize(("suffix", "save"), [(".png", save_png), (".tif", save_tiff)])
def test_rgb_with_equal_channels_is_grey_and_written_back_with_equal_channels(
    suffix: str, save: Callable[[np.ndarray, Path], None], tmp_path: Path
) -> None:
    grey = smooth_image((24, 32))
    source = tmp_path / f"grey-as-rgb{suffix}"
    save(np.stack([grey] * 3, axis=-1), source)

    image = read_image(source)
    halved = transform_image(image, lambda unit: unit * 0.5, method="halve", parameters={})
    write_image(halved, tmp_path / f"out{suffix}")

    assert image.meta.layout == "grey" and image.meta.grey_as_rgb
    assert np.array_equal(image.array, grey)
    written = read_image(tmp_path / f"out{suffix}")
    assert written.meta.grey_as_rgb
    stored = (
        tifffile.imread(tmp_path / f"out{suffix}")
        if suffix == ".tif"
        else np.asarray(PIL.Image.open(tmp_path / f"out{suffix}"))
    )
    assert stored.shape == (24, 32, 3)
    assert np.array_equal(stored[..., 0], stored[..., 1])
    assert np.array_equal(stored[..., 0], stored[..., 2])


def test_missing_file_raises_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        read_image(tmp_path / "absent.png")


def test_png_declaring_30000_by_30000_is_refused_quickly(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header_only(30000, 30000))
    before = file_digest(path)

    start = time.perf_counter()
    with pytest.raises(PixelLimitError) as caught:
        read_image(path)
    elapsed = time.perf_counter() - start

    assert elapsed < 1.0
    assert "bomb.png" in str(caught.value)
    assert "--max-pixels" in str(caught.value)
    assert file_digest(path) == before


def test_tiff_over_the_pixel_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.tif"
    save_tiff(random_integers(np.uint8, (32, 48)), path)

    with pytest.raises(PixelLimitError, match="--max-pixels"):
        read_image(path, max_pixels=100)


def test_max_pixels_none_lifts_the_limit(tmp_path: Path) -> None:
    path = tmp_path / "ok.png"
    save_png(random_integers(np.uint8, (32, 48)), path)

    assert read_image(path, max_pixels=None).array.shape == (32, 48)


@pytest.mark.parametrize("extension", [".png", ".tif", ".jpg"])
def test_content_decides_the_format_not_the_extension(extension: str, tmp_path: Path) -> None:
    array = random_integers(np.uint8, (8, 8))
    path = tmp_path / f"misnamed{extension}"
    PIL.Image.fromarray(array).save(path, format="PNG")

    image = read_image(path)

    assert image.meta.format == "png"
    assert np.array_equal(image.array, array)


# --- writing ---


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_writing_onto_the_source_is_refused_and_leaves_it_unchanged(
    suffix: str, tmp_path: Path
) -> None:
    source = tmp_path / f"scan{suffix}"
    (save_png if suffix == ".png" else save_tiff)(random_integers(np.uint16, (8, 8)), source)
    before = file_digest(source)
    image = read_image(source)
    image.array = image.array.astype(np.float64) * 0.5

    with pytest.raises(ImageError, match="refusing to overwrite an input"):
        write_image(image, source)
    with pytest.raises(ImageError, match="refusing to overwrite an input"):
        write_image(image, tmp_path / "." / f"scan{suffix}")

    assert file_digest(source) == before


def test_writing_through_a_symlink_to_the_source_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "scan.png"
    save_png(random_integers(np.uint8, (8, 8)), source)
    link = tmp_path / "link.png"
    link.symlink_to(source)
    before = file_digest(source)

    with pytest.raises(ImageError, match="refusing to overwrite"):
        write_image(read_image(source), link)

    assert file_digest(source) == before


def test_values_outside_the_stored_range_are_clipped_and_counted(tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    save_png(np.array([[0, 100, 255]], np.uint8), source)
    image = read_image(source)
    image.array = np.array([[-20.0, 100.0, 300.0]])

    report = write_image(image, tmp_path / "out.png")

    assert (report.clipped_low, report.clipped_high, report.clipped) == (1, 1, 2)
    assert np.array_equal(read_image(tmp_path / "out.png").array, [[0, 100, 255]])


def test_writer_creates_missing_parent_folders(tmp_path: Path) -> None:
    source = tmp_path / "in.png"
    save_png(random_integers(np.uint8, (8, 8)), source)
    target = tmp_path / "a" / "b" / "out.png"

    report = write_image(read_image(source), target)

    assert report.paths == (target,)
    assert target.is_file()


def _fail(*args: object, **kwargs: object) -> None:
    raise OSError("disk full (simulated)")


def _write_half_then_fail(self: PIL.Image.Image, fp: object, *args: object, **kwargs: object):
    fp.write(PNG_SIGNATURE)  # type: ignore[attr-defined]
    raise OSError("disk full (simulated)")


def _tiff_half_then_fail(target: object, *args: object, **kwargs: object) -> None:
    Path(str(target)).write_bytes(b"II*\x00partial")
    raise OSError("disk full (simulated)")


@pytest.mark.parametrize(
    ("suffix", "target_object", "attribute", "replacement"),
    [
        (".png", PIL.Image.Image, "save", _write_half_then_fail),
        (".png", PIL.Image.Image, "save", _fail),
        (".tif", tifffile, "imwrite", _tiff_half_then_fail),
        (".tif", tifffile, "imwrite", _fail),
    ],
)
def test_failed_write_leaves_no_file_and_no_temporary(
    suffix: str,
    target_object: object,
    attribute: str,
    replacement: Callable[..., None],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = tmp_path / "inputs" / f"in{suffix}"
    source.parent.mkdir()
    (save_png if suffix == ".png" else save_tiff)(random_integers(np.uint16, (8, 8)), source)
    image = read_image(source)
    output_folder = tmp_path / "out"
    output_folder.mkdir()
    monkeypatch.setattr(target_object, attribute, replacement)

    with pytest.raises(OSError, match="disk full"):
        write_image(image, output_folder / f"out{suffix}")

    assert os.listdir(output_folder) == []


def test_failed_write_keeps_an_existing_output_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "in.png"
    save_png(random_integers(np.uint8, (8, 8)), source)
    target = tmp_path / "out.png"
    target.write_bytes(b"previous result")
    image = read_image(source)
    monkeypatch.setattr(PIL.Image.Image, "save", _write_half_then_fail)

    with pytest.raises(OSError):
        write_image(image, target)

    assert target.read_bytes() == b"previous result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "out.png"]


def test_float_tiff_with_nan_is_not_written(tmp_path: Path) -> None:
    source = tmp_path / "in.tif"
    tifffile.imwrite(source, np.ones((4, 4), np.float32))
    image = read_image(source)
    image.array = image.array.astype(np.float64)
    image.array[0, 0] = np.nan
    output_folder = tmp_path / "out"

    with pytest.raises(ImageError, match="NaN"):
        write_image(image, output_folder / "out.tif")

    assert not output_folder.exists() or os.listdir(output_folder) == []


def test_atomic_outputs_get_the_mode_a_new_file_gets(tmp_path):
    import os
    import stat

    from meddenoise.io.base import atomic_output, atomic_write_with

    umask = os.umask(0o027)
    try:
        with atomic_output(tmp_path / "a.bin") as handle:
            handle.write(b"x")
        atomic_write_with(tmp_path / "b.bin", lambda path: path.write_bytes(b"y"))
    finally:
        os.umask(umask)
    for name in ("a.bin", "b.bin"):  # not mkstemp's owner-only 0600
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640
