"""The DDPM closed forms ANDi needs (paper Sec. 3 and Eq. 2, 6), in the notation of the paper.

Timesteps follow MONAI's ``DDPMScheduler`` indexing: ``t`` in ``0 .. T-1`` reads ``alphas_cumprod[t]`` and
``alpha_bar_{t-1}`` is ``alphas_cumprod[t-1]`` (1 for ``t == 0``). All coefficient tensors are returned shaped
(N, 1, 1, 1) so that they broadcast over a batch of images (N, C, H, W).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from monai.networks.schedulers import DDPMScheduler


@dataclass
class ScheduleTerms:
    """Schedule coefficients gathered for a batch of timesteps, each (N, 1, 1, 1)."""

    alpha: torch.Tensor  # alpha_t = 1 - beta_t
    alpha_bar: torch.Tensor  # alpha_bar_t = prod_{k<=t} alpha_k
    alpha_bar_prev: torch.Tensor  # alpha_bar_{t-1}
    beta: torch.Tensor  # beta_t


@dataclass(frozen=True)
class DiffusionRange:
    """The affine map from the preprocessed image to what the diffusion sees: x -> low + (high - low) x.

    The preprocessing divides each channel by its 99th percentile, so the background is 0 and the brain lies about in
    [0, 1.2]. The authors' code trains and scores on ``2x - 1`` (``DiffusionRange(-1, 1)``: background -1, brain
    about [-1, 1.4]); ``DiffusionRange(0, 1)`` is the identity. The range sets the signal-to-noise ratio
    alpha_bar_t / (1 - alpha_bar_t) that a scoring window [T_l, T_u] sees: halving the signal divides it by 4.
    Brain masks and empty-slice detection work on the image before this map.
    """

    low: float = -1.0
    high: float = 1.0

    @classmethod
    def of(cls, value: DiffusionRange | Sequence[float] | str | None) -> DiffusionRange:
        """A range from ``[low, high]`` (a list, or its JSON text from a command line); None is the identity."""
        if isinstance(value, DiffusionRange):
            return value
        if value is None:
            return cls(0.0, 1.0)
        if isinstance(value, str):
            value = json.loads(value)
        low, high = (float(v) for v in value)
        if not high > low:
            raise ValueError(f"diffusion_range must be [low, high] with high > low, got {list(value)}")
        return cls(low, high)

    def as_list(self) -> list[float]:
        return [self.low, self.high]

    def to_diffusion(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed image -> diffusion input, any shape."""
        if (self.low, self.high) == (0.0, 1.0):
            return x
        return x * (self.high - self.low) + self.low

    def to_image(self, y: torch.Tensor) -> torch.Tensor:
        """Diffusion space -> preprocessed image scale (the inverse of :meth:`to_diffusion`)."""
        if (self.low, self.high) == (0.0, 1.0):
            return y
        return (y - self.low) / (self.high - self.low)


def make_scheduler(num_train_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> DDPMScheduler:
    """The paper's schedule: T = 1000, linear betas from 1e-4 to 0.02, epsilon prediction, no clipping."""
    return DDPMScheduler(
        num_train_timesteps=num_train_timesteps,
        schedule="linear_beta",
        beta_start=beta_start,
        beta_end=beta_end,
        prediction_type="epsilon",
        clip_sample=False,
    )


def schedule_terms(scheduler: DDPMScheduler, t: torch.Tensor, device=None) -> ScheduleTerms:
    """Gather alpha_t, alpha_bar_t, alpha_bar_{t-1} and beta_t for integer timesteps ``t`` (N,), in float32."""
    device = device if device is not None else t.device
    t = t.long().to(scheduler.alphas_cumprod.device)
    alpha_bar = scheduler.alphas_cumprod.float()
    alpha_bar_prev = torch.where(t > 0, alpha_bar[(t - 1).clamp_min(0)], torch.ones_like(alpha_bar[t]))

    def shaped(x: torch.Tensor) -> torch.Tensor:
        return x.float().to(device).view(-1, 1, 1, 1)

    return ScheduleTerms(
        alpha=shaped(scheduler.alphas[t]),
        alpha_bar=shaped(alpha_bar[t]),
        alpha_bar_prev=shaped(alpha_bar_prev),
        beta=shaped(scheduler.betas[t]),
    )


def q_sample(x_0: torch.Tensor, eps: torch.Tensor, terms: ScheduleTerms) -> torch.Tensor:
    """Forward process, Eq. 1: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps. Shapes (N, C, H, W)."""
    return terms.alpha_bar.sqrt() * x_0 + (1.0 - terms.alpha_bar).sqrt() * eps


def mu_q(x_t: torch.Tensor, x_0: torch.Tensor, terms: ScheduleTerms) -> torch.Tensor:
    """Posterior mean of q(x_{t-1} | x_t, x_0), Eq. 2 (the expected transition). Shapes (N, C, H, W)."""
    one_minus_bar = 1.0 - terms.alpha_bar
    coef_t = terms.alpha.sqrt() * (1.0 - terms.alpha_bar_prev) / one_minus_bar
    coef_0 = terms.alpha_bar_prev.sqrt() * terms.beta / one_minus_bar  # beta_t = 1 - alpha_t
    return coef_t * x_t + coef_0 * x_0


def mu_theta(x_t: torch.Tensor, eps_hat: torch.Tensor, terms: ScheduleTerms) -> torch.Tensor:
    """Mean of the learned reverse step p_theta(x_{t-1} | x_t) from the predicted noise (the predicted transition).

    mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps_hat) / sqrt(alpha_t), with no clipping of the implied
    x_0 (paper Sec. 5.6). Shapes (N, C, H, W).
    """
    return (x_t - terms.beta / (1.0 - terms.alpha_bar).sqrt() * eps_hat) / terms.alpha.sqrt()


def deviation(mu_q_t: torch.Tensor, mu_theta_t: torch.Tensor) -> torch.Tensor:
    """d_t = (mu_q - mu_theta)^2, Eq. 6, per pixel and channel. Shapes (N, C, H, W)."""
    return (mu_q_t - mu_theta_t).square()


def deviation_from_noise(eps: torch.Tensor, eps_hat: torch.Tensor, terms: ScheduleTerms) -> torch.Tensor:
    """The same d_t written with the noises: beta_t^2 / (alpha_t (1 - alpha_bar_t)) * (eps - eps_hat)^2."""
    return terms.beta.square() / (terms.alpha * (1.0 - terms.alpha_bar)) * (eps - eps_hat).square()
