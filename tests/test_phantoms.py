"""Digital abdomen phantoms (issue 14): noise-free body CT in HU, reproducible from a seed."""

from __future__ import annotations

import numpy as np
import pytest

from meddenoise.data import DataError, packaged_image
from meddenoise.phantoms import AIR_HU, abdomen_phantom


def test_a_phantom_is_a_body_in_air_with_fat_soft_tissue_and_bone() -> None:
    image = abdomen_phantom(np.random.default_rng(3), side=256)
    assert image.shape == (256, 256) and image.dtype == np.float32
    assert np.all(image[:4] == AIR_HU)  # air above the body: the trunk never fills the field
    inside = image[image > -500]
    fraction = inside.size / image.size
    assert 0.15 < fraction < 0.65, fraction  # 62-92 % of the field across, flatter down
    assert np.mean((inside > -130) & (inside < -70)) > 0.05  # fat
    assert np.mean((inside > 20) & (inside < 130)) > 0.2  # soft tissue and organs
    assert inside.max() > 400  # bone
    assert np.isfinite(image).all()


def test_phantoms_come_from_the_seed_and_differ_between_seeds() -> None:
    first = abdomen_phantom(np.random.default_rng(5), side=192)
    again = abdomen_phantom(np.random.default_rng(5), side=192)
    other = abdomen_phantom(np.random.default_rng(6), side=192)
    np.testing.assert_array_equal(first, again)
    assert np.mean(np.abs(first - other)) > 20.0


def test_detailed_phantoms_add_fine_anatomy_to_the_same_body() -> None:
    from scipy.ndimage import laplace

    plain = abdomen_phantom(np.random.default_rng(8), side=256)
    detailed = abdomen_phantom(np.random.default_rng(8), side=256, detail=np.random.default_rng(1))
    changed = np.abs(detailed - plain) > 1.0
    assert 0.05 < changed.mean() < 0.6  # the same body: air, bone and outline stay
    assert np.all(detailed[:4] == AIR_HU)
    tissue = (plain > -150) & (plain < 150)  # fat and soft tissue, where fine detail goes
    # The median |Laplacian| reads pixel-scale detail and not the organs' edges.
    fine = np.median(np.abs(laplace(detailed.astype(np.float64))[tissue]))
    assert fine > 2.0 * np.median(np.abs(laplace(plain.astype(np.float64))[tissue]))


def test_phantom_entries_load_like_packaged_images() -> None:
    image = packaged_image("phantom:abdomen:2")
    assert isinstance(image, np.ndarray) and image.shape == (512, 512)
    np.testing.assert_array_equal(image, packaged_image("phantom:abdomen:2"))
    detailed = packaged_image("phantom:abdomen-detailed:2")
    assert isinstance(detailed, np.ndarray) and not np.array_equal(detailed, image)
    for bad in ("phantom:brain:1", "phantom:abdomen:x", "phantom:abdomen"):
        with pytest.raises(DataError, match="phantom:abdomen:SEED"):
            packaged_image(bad)
