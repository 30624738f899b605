"""One layout vocabulary: `types.Layout` names every layout a reader produces or code compares."""

from __future__ import annotations

import ast
from pathlib import Path

import nibabel as nib
import numpy as np
import PIL.Image
import pytest
import tifffile

from meddenoise.io import read_image
from meddenoise.pipeline import run_on_layout
from meddenoise.types import LAYOUTS, STACK_PARTS, is_colour, layout_of

from .conftest import data_file
from .test_io_dicom import make_series

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "meddenoise"


def _png(path: Path, shape: tuple[int, ...]) -> Path:
    # Values that differ between channels: an RGB file with equal channels reads as grey.
    PIL.Image.fromarray((np.arange(np.prod(shape)) % 251).reshape(shape).astype(np.uint8)).save(
        path
    )
    return path


def _nifti(path: Path, shape: tuple[int, ...]) -> Path:
    nib.save(nib.Nifti1Image(np.zeros(shape, np.int16), np.eye(4)), path)
    return path


def _tiff_stack(path: Path) -> Path:
    tifffile.imwrite(path, np.zeros((3, 5, 6), np.uint16), photometric="minisblack")
    return path


def _series(path: Path) -> Path:
    make_series(path)
    return path


# What each kind of file reads as: (make the file, the layout it must read as).
READ_LAYOUTS = {
    "grey png": (lambda folder: _png(folder / "g.png", (5, 6)), "grey"),
    "colour png": (lambda folder: _png(folder / "c.png", (5, 6, 3)), "colour"),
    "tiff stack": (lambda folder: _tiff_stack(folder / "s.tif"), "volume"),
    "2-D nifti": (lambda folder: _nifti(folder / "a.nii", (6, 5)), "grey"),
    "3-D nifti": (lambda folder: _nifti(folder / "b.nii.gz", (6, 5, 4)), "volume"),
    "4-D nifti": (lambda folder: _nifti(folder / "c.nii.gz", (6, 5, 4, 2)), "volumes"),
    "dicom slice": (lambda folder: data_file("CT_small.dcm"), "grey"),
    "dicom multi-frame": (lambda folder: data_file("emri_small.dcm"), "volume"),
    "dicom rgb": (lambda folder: data_file("SC_rgb.dcm"), "colour"),
    "dicom rgb frames": (lambda folder: data_file("SC_rgb_rle_2frame.dcm"), "colour_frames"),
    "dicom series": (lambda folder: _series(folder / "series"), "volume"),
}


def test_every_layout_is_read_from_some_file() -> None:
    assert {layout for _, layout in READ_LAYOUTS.values()} == set(LAYOUTS)


@pytest.mark.parametrize("kind", READ_LAYOUTS)
def test_readers_name_their_layout_from_the_one_vocabulary(kind: str, tmp_path: Path) -> None:
    make, expected = READ_LAYOUTS[kind]

    image = read_image(make(tmp_path))

    assert image.meta.layout == expected


def test_stacks_are_made_of_layouts_a_denoiser_takes() -> None:
    for stack, part in STACK_PARTS.items():
        assert stack in LAYOUTS
        assert part == layout_of(np.zeros((4, 5, 3) if is_colour(stack) else (4, 5, 6)))


def test_colour_frames_reach_a_denoiser_one_rgb_frame_at_a_time() -> None:
    shapes: list[tuple[int, ...]] = []

    def record(part: np.ndarray) -> np.ndarray:
        shapes.append(part.shape)
        return part

    run_on_layout(record, np.zeros((2, 4, 5, 3), np.float32), "colour_frames")

    assert shapes == [(4, 5, 3), (4, 5, 3)]


def _compared_layout_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants compared with (==, !=, in, not in) anything whose name ends in 'layout'."""

    def names_a_layout(node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id.endswith("layout")
        if isinstance(node, ast.Attribute):
            return node.attr.endswith("layout")
        return False

    def strings(node: ast.expr) -> list[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, ast.Tuple | ast.List | ast.Set):
            return [value for element in node.elts for value in strings(element)]
        return []

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and len(node.comparators) == 1:
            left, right = node.left, node.comparators[0]
            for side, other in ((left, right), (right, left)):
                if names_a_layout(side):
                    found.extend((node.lineno, value) for value in strings(other))
    return found


def test_code_compares_layouts_only_with_names_of_the_vocabulary() -> None:
    strays = [
        f"{path.relative_to(PACKAGE)}:{line}: {value!r}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for line, value in _compared_layout_strings(ast.parse(path.read_text(encoding="utf-8")))
        if value not in LAYOUTS
    ]

    assert strays == []


def test_the_layout_check_finds_a_stray_value() -> None:
    tree = ast.parse("if image.meta.layout in ('grey', 'colour-frames'):\n    pass\n")

    assert [value for _, value in _compared_layout_strings(tree)] == ["grey", "colour-frames"]
