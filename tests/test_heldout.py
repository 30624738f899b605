"""The held-out MR set (issue 13): installed offline, in the test split, in no config's data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from meddenoise import benchmark as bench
from meddenoise.config import ConfigError, load_config
from meddenoise.data import DataError, packaged_image
from meddenoise.splits import TEST_SPLIT, in_test_split

REPOSITORY = Path(__file__).resolve().parents[1]
HELDOUT_ENTRIES = sorted({image.entry for image in bench.HELDOUT_MR})
# Images used to select models before issue 13: never in the held-out set.
SELECTION_IMAGES = ("MR_small", "examples_overlay", "t1_coronal_slice", "S0_10slices")


def test_the_set_has_six_mr_images_from_three_sources():
    assert len(bench.HELDOUT_MR) >= 6
    assert {image.modality for image in bench.HELDOUT_MR} == {"MR"}
    assert len({entry.split(":", 1)[0] for entry in HELDOUT_ENTRIES}) >= 3


@pytest.mark.parametrize("entry", HELDOUT_ENTRIES)
def test_every_heldout_file_is_in_the_test_split_and_installed(entry):
    assert entry in TEST_SPLIT
    assert in_test_split(entry)
    assert not any(name in entry for name in SELECTION_IMAGES)
    found = packaged_image(entry)
    assert isinstance(found, np.ndarray) or Path(found).is_file()


@pytest.mark.parametrize("image", bench.HELDOUT_MR, ids=lambda image: image.label)
def test_every_heldout_image_loads_as_a_2d_unit_range_plane(image):
    plane = bench.load_test_image(image)
    assert plane.ndim == 2 and min(plane.shape) >= 64
    assert plane.min() == 0.0 and plane.max() == 1.0


def test_a_copy_of_a_heldout_file_anywhere_is_in_the_test_split(tmp_path):
    source = packaged_image("nibabel:tests/data/example4d.nii.gz")
    copy = tmp_path / "data" / "example4d.nii.gz"
    copy.parent.mkdir()
    copy.write_bytes(Path(source).read_bytes())
    assert in_test_split(str(copy))
    assert in_test_split(str(tmp_path / "data"))
    assert in_test_split(str(source))
    assert not in_test_split("nibabel:tests/data/anatomical.nii")


def test_a_config_training_on_a_heldout_image_is_refused(tmp_path):
    config = {
        "model": {"name": "dncnn", "arguments": {"depth": 3, "features": 8}},
        "data": {"train": ["matplotlib:s1045.ima.gz"], "val": ["pydicom:CT_small.dcm"]},
    }
    with pytest.raises(ConfigError, match="s1045"):
        load_config(config)


@pytest.mark.parametrize("path", sorted((REPOSITORY / "configs").glob("*.yaml")), ids=str)
def test_no_config_names_a_heldout_image(path):
    data = (yaml.safe_load(path.read_text()) or {}).get("data") or {}
    for entry in [*(data.get("train") or []), *(data.get("val") or [])]:
        assert entry not in HELDOUT_ENTRIES


def test_images_heldout_mr_names_the_set():
    images, _ = bench.select_cases(images=["heldout-mr", "pydicom:CT_small.dcm"])
    assert images[: len(bench.HELDOUT_MR)] == bench.HELDOUT_MR
    assert images[-1].entry == "pydicom:CT_small.dcm"


def test_a_package_file_entry_that_is_not_installed_says_so():
    with pytest.raises(DataError, match="not installed"):
        packaged_image("nibabel:tests/data/no-such-file.nii")


def test_the_raw_matplotlib_mr_slice_decodes_to_its_stored_values():
    slice_ = packaged_image("matplotlib:s1045.ima.gz")
    assert isinstance(slice_, np.ndarray)
    assert slice_.shape == (256, 256) and slice_.dtype == np.uint16
    assert 200 <= int(slice_.max()) <= 255  # 8-bit values stored big-endian in 16 bits
