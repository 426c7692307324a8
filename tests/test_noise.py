"""Pyramidal noise (paper Eq. 9-10) and its variants."""

import pytest
import torch

from scripts.noise import NOISE_TYPES, get_noise_fn, pyramid_noise, pyramid_noise_authors


def radial_energy_fraction(noise: torch.Tensor, cutoff: float = 0.1) -> float:
    """Fraction of the spectral energy at spatial frequencies below ``cutoff`` cycles/pixel (averaged over maps)."""
    spec = torch.fft.fft2(noise.double()).abs().square()
    h, w = noise.shape[-2:]
    fy = torch.fft.fftfreq(h).abs().view(-1, 1)
    fx = torch.fft.fftfreq(w).abs().view(1, -1)
    low = (torch.sqrt(fy**2 + fx**2) < cutoff) & ~((fy == 0) & (fx == 0))
    return float(spec[..., low].sum() / spec[..., ~((fy == 0) & (fx == 0))].sum())


@pytest.mark.parametrize("noise_type", NOISE_TYPES)
def test_unit_variance_and_shape(noise_type):
    g = torch.Generator().manual_seed(0)
    noise = get_noise_fn(noise_type)((16, 4, 64, 64), generator=g)
    assert noise.shape == (16, 4, 64, 64)
    assert noise.dtype == torch.float32
    assert abs(float(noise.var()) - 1.0) < 0.05
    assert abs(float(noise.mean())) < 0.15


def test_paper_variant_normalises_each_sample():
    noise = pyramid_noise((8, 4, 32, 32), generator=torch.Generator().manual_seed(1))
    per_sample = noise.view(8, -1)
    torch.testing.assert_close(per_sample.std(1), torch.ones(8), atol=1e-4, rtol=0)
    torch.testing.assert_close(per_sample.mean(1), torch.zeros(8), atol=1e-4, rtol=0)


@pytest.mark.parametrize("fn", [pyramid_noise, pyramid_noise_authors])
def test_more_coarse_energy_than_white_noise(fn):
    g = torch.Generator().manual_seed(2)
    white = torch.randn((32, 4, 128, 128), generator=g)
    pyramid = fn((32, 4, 128, 128), generator=g)
    white_low, pyr_low = radial_energy_fraction(white), radial_energy_fraction(pyramid)
    # white noise has ~3% of its energy below 0.1 cycles/pixel; pyramid noise several times more
    assert white_low < 0.05
    assert pyr_low > 3 * white_low


def test_seeded_generator_reproducible_and_variants_differ():
    a = pyramid_noise((2, 4, 32, 32), generator=torch.Generator().manual_seed(3))
    b = pyramid_noise((2, 4, 32, 32), generator=torch.Generator().manual_seed(3))
    c = pyramid_noise_authors((2, 4, 32, 32), generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_unknown_noise_type():
    with pytest.raises(ValueError, match="unknown noise type"):
        get_noise_fn("simplex_typo")


@pytest.mark.parametrize("fn", [pyramid_noise, pyramid_noise_authors])
def test_low_frequency_share_rises_with_the_discount_and_with_the_levels(fn):
    """Planted bugs: "forgets the discount" (level i weighted 0.8**i whatever the discount) and "ignores the levels"
    (always 10): the low-frequency share must rise with each."""

    def low(**kwargs: float) -> float:
        noise = fn((16, 2, 64, 64), generator=torch.Generator().manual_seed(4), **kwargs)
        return radial_energy_fraction(noise)

    by_discount = [low(levels=6, discount=c) for c in (0.3, 0.6, 0.9)]
    assert by_discount[0] < by_discount[1] < by_discount[2], by_discount
    assert by_discount[2] > 1.5 * by_discount[0]
    by_levels = [low(levels=n, discount=0.8) for n in (1, 3, 6)]
    assert by_levels[0] < by_levels[1] < by_levels[2], by_levels
    assert by_levels[2] > 1.5 * by_levels[0]
