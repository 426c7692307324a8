"""The scoring against an oracle made of MONAI alone: x_t from ``DDPMScheduler.add_noise``, the two posterior means
from ``DDPMScheduler.step`` (once with the true noise, once with the network's, under one generator seed so that the
sampled noise of the step cancels), d_t their squared difference in float64. No project helper enters the oracle
(``noise_for``, ``schedule_terms``, ``q_sample``, ``deviation_from_noise`` and ``scripts.reference`` are what
it checks), so an error shared by the code's paths shows."""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDPMScheduler

from scripts.networks import make_network
from scripts.scoring import ANDiInferer

SEED = 3


def monai_scheduler() -> DDPMScheduler:
    """The paper's schedule built here from MONAI's own arguments (not ``scripts.diffusion.make_scheduler``)."""
    return DDPMScheduler(1000, "linear_beta", beta_start=1e-4, beta_end=0.02, clip_sample=False)


def toy_network(x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    return 0.7 * x_t + 0.001 * timesteps.view(-1, 1, 1, 1).to(x_t.dtype) - 0.2 * x_t.roll(1, dims=-1)


def oracle(x0: torch.Tensor, timesteps: list[int], network, geometric: bool = True) -> torch.Tensor:
    """Per-channel maps (K, C, H, W) of slices ``x0`` (K, C, H, W) in [0, 1], by MONAI's scheduler in float64."""
    s = monai_scheduler()
    x0 = (2 * x0 - 1).double()  # the authors' range, the inferer's default
    acc = torch.zeros_like(x0)
    for t in timesteps:
        # the documented noise of timestep t: a generator seeded with seed * 1_000_003 + t, one draw for all slices
        eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(SEED * 1_000_003 + t)).double()
        tt = torch.full((x0.shape[0],), t, dtype=torch.long)
        x_t = s.add_noise(x0, eps, tt)
        eps_hat = network(x_t.float(), timesteps=tt).double()
        mu_q, _ = s.step(eps, t, x_t, generator=torch.Generator().manual_seed(0))
        mu_theta, _ = s.step(eps_hat, t, x_t, generator=torch.Generator().manual_seed(0))
        d = (mu_q - mu_theta).square()
        # the documented floor: the smallest normal float32, which only exact zeros reach (issue 20: no 1e-12)
        acc += d.clamp_min(torch.finfo(torch.float32).tiny).log() if geometric else d
    acc /= len(timesteps)
    return acc.exp() if geometric else acc


@pytest.mark.parametrize("aggregation", ["geometric", "arithmetic"])
def test_scoring_equals_monai_oracle(aggregation):
    """Planted bugs: "q_sample with alpha_t for alpha_bar_t", "d_t without the 1 - alpha_bar_t" (both shared by the
    scoring and its plain-loop reference), "alpha_bar_{t-1} off by one" and "the noise of another timestep"."""
    x0 = torch.rand((5, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    inferer = ANDiInferer(
        monai_scheduler(), 75, 200, 25, batch_size=7, aggregation=aggregation, channels_last=False, seed=SEED
    )
    got = inferer.score_slices(x0, toy_network)
    expected = oracle(x0, inferer.timesteps, toy_network, aggregation == "geometric").float()
    torch.testing.assert_close(got, expected, rtol=2e-3, atol=1e-9)


def test_scoring_a_unet_equals_monai_oracle():
    """The same with MONAI's DiffusionModelUNet (tiny) in float32, no autocast."""
    torch.manual_seed(0)
    network = make_network("tiny").eval()
    x0 = torch.rand((3, 4, 32, 32), generator=torch.Generator().manual_seed(1))
    inferer = ANDiInferer(monai_scheduler(), 75, 200, 40, batch_size=4, amp=False, channels_last=False, seed=SEED)
    with torch.inference_mode():
        got = inferer.score_slices(x0, network)
        expected = oracle(x0, inferer.timesteps, network).float()
    torch.testing.assert_close(got, expected, rtol=5e-3, atol=1e-9)
