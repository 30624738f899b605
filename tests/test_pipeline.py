"""The array entry point `denoise` and the Image path `transform_image` / `denoise_image`."""

from __future__ import annotations

import numpy as np
import pytest

from meddenoise.intensity import IntensityMapping
from meddenoise.io.base import Image, ImageMeta
from meddenoise.methods import list_methods, resolve
from meddenoise.pipeline import (
    denoise,
    denoise_image,
    run_on_layout,
    transform_image,
)

from .conftest import skip_without

SHAPES = {"grey": (32, 48), "colour": (32, 48, 3), "volume": (4, 32, 48)}
# BM3D takes seconds even on small images; it gets one grey test of its own below.
FAST_METHODS = [name for name in list_methods() if name != "bm3d"]


def noisy(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    clean = np.full(shape, 0.5)
    return np.clip(clean + rng.normal(0.0, 0.1, size=shape), 0.0, 1.0)


@pytest.mark.parametrize("layout", SHAPES)
@pytest.mark.parametrize("method", FAST_METHODS)
def test_denoise_returns_float32_of_the_same_shape(method: str, layout: str) -> None:
    image = noisy(SHAPES[layout])

    result = denoise(image, method=method, sigma=0.1)

    assert result.dtype == np.float32
    assert result.shape == image.shape
    assert np.all(np.isfinite(result))


@pytest.mark.parametrize("layout", SHAPES)
def test_denoise_with_sigma_estimated(layout: str) -> None:
    image = noisy(SHAPES[layout])

    result = denoise(image)

    assert result.dtype == np.float32
    assert result.shape == image.shape


def test_default_method_reduces_noise() -> None:
    image = noisy((32, 48))

    result = denoise(image, sigma=0.1)

    assert np.mean((result - 0.5) ** 2) < 0.5 * np.mean((image - 0.5) ** 2)


@pytest.mark.skipif(skip_without("bm3d"), reason="bm3d not installed")
def test_bm3d_on_a_small_grey_image() -> None:
    image = noisy((32, 48))

    result = denoise(image, method="bm3d", sigma=0.1)

    assert result.dtype == np.float32
    assert result.shape == image.shape


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", SHAPES)
def test_identity_returns_the_input_exactly(layout: str, dtype: type) -> None:
    image = noisy(SHAPES[layout]).astype(dtype)

    result = denoise(image, method="identity")

    assert np.array_equal(result, image.astype(np.float32))


def test_denoise_does_not_modify_its_input() -> None:
    image = noisy((32, 48)).astype(np.float32)
    before = image.copy()

    denoise(image, method="nlm", sigma=0.1)

    assert np.array_equal(image, before)


def test_unknown_method_lists_the_known_names() -> None:
    with pytest.raises(ValueError, match="unknown method 'no-such-method'") as caught:
        denoise(noisy((8, 8)), method="no-such-method")

    for name in list_methods():
        assert name in str(caught.value)


def test_checkpoint_path_is_refused_with_an_explanation() -> None:
    with pytest.raises(ValueError, match="checkpoint"):
        denoise(noisy((8, 8)), method="model.safetensors")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused(bad: float) -> None:
    image = noisy((16, 16))
    image[3, 4] = bad

    with pytest.raises(ValueError, match="NaN or infinite"):
        denoise(image, method="gaussian", sigma=0.1)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, bool])
def test_integer_input_is_a_type_error(dtype: type) -> None:
    image = np.zeros((16, 16), dtype=dtype)

    with pytest.raises(TypeError, match="float"):
        denoise(image, method="gaussian", sigma=0.1)


@pytest.mark.parametrize("sigma", [-0.1, -1e-9, np.nan, np.inf])
def test_invalid_sigma_is_refused(sigma: float) -> None:
    with pytest.raises(ValueError, match="sigma"):
        denoise(noisy((16, 16)), method="gaussian", sigma=sigma)


@pytest.mark.parametrize(
    "values",
    [
        lambda image: image * 4000 - 1000,  # HU
        lambda image: image * 255,  # 8-bit values as floats
        lambda image: image - 1.5,
    ],
    ids=["hu", "0-255", "shifted"],
)
def test_values_outside_the_unit_range_are_refused_naming_the_fix(values) -> None:
    with pytest.raises(ValueError, match=r"not \[0, 1\].*image\.meta\.mapping\.to_unit"):
        denoise(values(noisy((16, 16))), method="gaussian", sigma=0.1)


def test_noise_a_little_outside_the_unit_range_is_accepted() -> None:
    rng = np.random.default_rng(2)
    image = np.linspace(0, 1, 32 * 32).reshape(32, 32) + rng.normal(0, 0.2, (32, 32))
    assert -1.0 < image.min() < 0 and 1 < image.max() < 2.0

    assert denoise(image, method="gaussian", sigma=0.2).shape == (32, 32)


@pytest.mark.parametrize("sigma", [25.0, 1.5])
def test_sigma_above_1_is_refused_as_0_255_units(sigma: float) -> None:
    with pytest.raises(ValueError, match=f"sigma={sigma / 255:.4g}"):
        denoise(noisy((16, 16)), method="gaussian", sigma=sigma)


def test_denoise_image_takes_a_method_name_and_keeps_the_units() -> None:
    hu = noisy((24, 24)) * 2000 - 1000
    image = image_of(hu, "grey")

    by_name = denoise_image(image, "gaussian")

    assert by_name.meta.derivation["method"] == "gaussian"
    assert abs(by_name.array.mean() - hu.mean()) < 20  # still HU, not [0, 1]


def test_the_readme_python_example_runs_on_a_ct_file(tmp_path, monkeypatch) -> None:
    import re
    import shutil
    from pathlib import Path

    from .conftest import data_file

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    code = next(
        block for block in re.findall(r"```python\n(.*?)```", readme, re.S) if "HU" in block
    )
    shutil.copyfile(data_file("CT_small.dcm"), tmp_path / "ct.dcm")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}

    exec(compile(code, "README.md", "exec"), namespace)

    from meddenoise.io import read_image

    source, written = read_image(tmp_path / "ct.dcm"), read_image(tmp_path / "out" / "ct.dcm")
    assert written.array.shape == source.array.shape
    assert np.abs(written.array - source.array).mean() < 100  # HU in, HU out
    assert np.abs(namespace["hu"] - source.array).mean() < 100
    with pytest.raises(ValueError, match="not \\[0, 1\\]"):
        denoise(source.array.astype(np.float32))


def test_zero_sigma_is_accepted() -> None:
    assert denoise(noisy((16, 16)), method="gaussian", sigma=0.0).shape == (16, 16)


@pytest.mark.parametrize("shape", [(16,), (2, 3, 16, 16), (16, 16, 3, 1)])
def test_unsupported_shapes_are_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="shape"):
        denoise(np.zeros(shape), method="gaussian", sigma=0.1)


def test_list_methods_has_default_first_and_identity() -> None:
    methods = list_methods()

    assert next(iter(methods)) == "default"
    assert "identity" in methods
    assert all(isinstance(text, str) and text for text in methods.values())


# --- transform_image and denoise_image on Image objects ---


def image_of(array: np.ndarray, layout: str, keep_mask: np.ndarray | None = None) -> Image:
    return Image(
        array=array,
        meta=ImageMeta(
            format="tiff",
            layout=layout,  # type: ignore[arg-type]
            mapping=IntensityMapping.from_array(array),
            keep_mask=keep_mask,
            details={"dtype": array.dtype.str},
        ),
    )


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.float32, np.float64])
def test_transform_with_identity_gives_back_the_modality_values_exactly(dtype: type) -> None:
    rng = np.random.default_rng(3)
    array = (rng.normal(size=(16, 24)) * 1000).astype(dtype)
    image = image_of(array, "grey")

    result = transform_image(image, lambda unit: unit, method="identity", parameters={})

    assert np.array_equal(result.array, array.astype(np.float64))


def test_denoise_image_records_the_derivation_and_keeps_the_source_intact() -> None:
    array = (noisy((16, 24)) * 4000 - 1000).astype(np.float64)
    image = image_of(array.copy(), "grey")
    denoiser = resolve("gaussian", sigma=0.1, colour=False)

    result = denoise_image(image, denoiser)

    assert result.meta.derivation["method"] == "gaussian"
    assert result.meta.derivation["parameters"] == dict(denoiser.parameters)
    assert image.meta.derivation == {}
    assert np.array_equal(image.array, array)
    assert result.array.shape == array.shape
    assert not np.array_equal(result.array, array)


def test_padding_pixels_come_back_unchanged() -> None:
    array = noisy((16, 24)) * 1000
    mask = np.zeros(array.shape, bool)
    mask[:3, :] = True
    array[mask] = -2000.0
    image = image_of(array, "grey", keep_mask=mask)

    result = transform_image(image, lambda unit: unit * 0.5, method="halve", parameters={})

    assert np.array_equal(result.array[mask], array[mask])
    assert not np.array_equal(result.array[~mask], array[~mask])


def test_a_function_that_changes_the_shape_is_an_error() -> None:
    image = image_of(noisy((16, 24)), "grey")

    with pytest.raises(RuntimeError, match="shape"):
        transform_image(image, lambda unit: unit[:-1], method="crop", parameters={})


def test_a_function_that_returns_nan_is_an_error() -> None:
    image = image_of(noisy((16, 24)), "grey")

    with pytest.raises(RuntimeError, match="NaN"):
        transform_image(image, lambda unit: unit * np.nan, method="broken", parameters={})


def test_volume_of_width_3_goes_slice_by_slice_not_as_colour() -> None:
    seen: list[tuple[int, ...]] = []

    def record(part: np.ndarray) -> np.ndarray:
        seen.append(part.shape)
        return part

    run_on_layout(record, np.zeros((5, 8, 3), np.float32), "volume")

    assert seen == [(8, 3)] * 5


def test_4d_volumes_go_one_volume_at_a_time() -> None:
    seen: list[tuple[int, ...]] = []

    def record(part: np.ndarray) -> np.ndarray:
        seen.append(part.shape)
        return part

    result = run_on_layout(record, np.zeros((2, 4, 8, 9), np.float32), "volumes")

    assert seen == [(4, 8, 9)] * 2
    assert result.shape == (2, 4, 8, 9)
