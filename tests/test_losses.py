"""Training losses: values against references, mixtures, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from meddenoise.losses import adversarial_loss, build_loss, parse_loss_terms, ssim_map


def pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    clean = torch.rand(1, 1, 48, 48, generator=generator)
    return clean, clean + 0.1 * torch.randn(clean.shape, generator=generator)


def test_ssim_agrees_with_skimage_on_the_valid_region():
    clean, noisy = pair()
    ours = float(ssim_map(noisy, clean).mean())
    _, full = structural_similarity(
        clean[0, 0].numpy(),
        noisy[0, 0].numpy(),
        data_range=1.0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        win_size=7,
        full=True,
    )
    assert ours == pytest.approx(float(full[3:-3, 3:-3].mean()), abs=1e-3)


def test_mixture_is_the_weighted_sum():
    clean, noisy = pair(1)
    mixed = build_loss("0.25*l1+0.75*mse")(noisy, clean)
    expected = 0.25 * torch.mean(torch.abs(noisy - clean)) + 0.75 * torch.mean((noisy - clean) ** 2)
    torch.testing.assert_close(mixed, expected)


def test_losses_are_zero_for_a_perfect_prediction():
    clean, _ = pair(2)
    for name in ("l1", "mse", "ssim"):
        assert float(build_loss(name)(clean, clean)) == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("text", ["l3", "0.5*", "l1+", "2*ssim*l1", ""])
def test_unreadable_loss_is_refused(text):
    with pytest.raises(ValueError, match="cannot read loss"):
        parse_loss_terms(text)


def test_adversarial_loss_prefers_confident_correct_logits():
    confident = torch.full((2, 1, 4, 4), 5.0)
    assert float(adversarial_loss(confident, real=True)) < float(
        adversarial_loss(confident, real=False)
    )
    assert np.isfinite(float(adversarial_loss(-confident, real=False)))
