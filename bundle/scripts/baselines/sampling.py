"""The DDPM reverse chain shared by the reconstruction baselines (AnoDDPM, AutoDDPM), in ``scripts.diffusion``'s
notation and MONAI's indexing (the step at t maps x_t to x_{t-1}; the step at t = 0 gives the clean image):

    x_t     = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps                      (noise the input to t_upper)
    x_{t-1} = mu_theta(x_t, t) + sigma_t z,   sigma_t^2 = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t

for t = t_upper, ..., 0 (sigma_0 = 0), with eps and z of the method's noise type (Gaussian, or simplex for
AnoDDPM), and no clipping of the implied x_0 (paper Sec. 5.6). All brain slices of a volume advance together, one
network call per step (in chunks of ``batch_size`` slices for memory). Every noise draw covers all slices at once and
comes from one generator seeded with ``seed`` per volume, so a result is reproducible and does not depend on
``batch_size``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from monai.networks.schedulers import DDPMScheduler
from scripts.diffusion import DiffusionRange, ScheduleTerms, eps_from_prediction, mu_theta, q_sample, schedule_terms
from scripts.noise import get_noise_fn
from scripts.progress import progress
from scripts.scoring import BrainSliceInferer


def posterior_std(terms: ScheduleTerms) -> torch.Tensor:
    """sigma_t = sqrt(beta~_t), the standard deviation of q(x_{t-1} | x_t, x_0) (DDPM's "fixed small"); 0 at t = 0."""
    return ((1.0 - terms.alpha_bar_prev) / (1.0 - terms.alpha_bar) * terms.beta).clamp_min(0.0).sqrt()


def reverse_step(x_t: torch.Tensor, eps_hat: torch.Tensor, terms: ScheduleTerms, z: torch.Tensor) -> torch.Tensor:
    """A sample of p_theta(x_{t-1} | x_t): mu_theta(x_t, eps_hat) + sigma_t z. Shapes (N, C, H, W)."""
    return mu_theta(x_t, eps_hat, terms) + posterior_std(terms) * z


def forward_step(x_prev: torch.Tensor, terms: ScheduleTerms, z: torch.Tensor) -> torch.Tensor:
    """A sample of q(x_t | x_{t-1}): sqrt(alpha_t) x_{t-1} + sqrt(beta_t) z (RePaint's re-noising). (N, C, H, W)."""
    return terms.alpha.sqrt() * x_prev + terms.beta.sqrt() * z


class ReverseChainInferer(BrainSliceInferer):
    """Base of the DDPM reconstruction baselines: noise brain slices to ``t_upper`` and denoise them back to t = 0.

    Args:
        scheduler: the DDPM schedule the network was trained with; under ``v_prediction`` the network's output is
            turned into its noise estimate (``scripts.diffusion.eps_from_prediction``) at every step.
        t_upper: the noise level the reconstruction starts from.
        noise_type: noise of the forward noising and of every reverse step (``scripts.noise.NOISE_TYPES``).
        levels, discount: pyramid levels / simplex octaves, and their discount / persistence.
        seed: seed of all the noise of one volume.
        batch_size, amp, channels_last: network calls, see :class:`~scripts.scoring.BrainSliceInferer`.
        diffusion_range: ``[low, high]`` the network was trained on (``scripts.diffusion.DiffusionRange``); the chain
            runs there, and its reconstructions come back on the preprocessed image's scale.
    """

    def __init__(
        self,
        scheduler: DDPMScheduler,
        t_upper: int,
        noise_type: str = "gaussian",
        levels: int = 6,
        discount: float = 0.8,
        seed: int = 0,
        batch_size: int = 64,
        amp: bool | str | None = "auto",
        channels_last: bool | str = True,
        diffusion_range: DiffusionRange | Sequence[float] | str | None = (-1.0, 1.0),
    ) -> None:
        super().__init__(batch_size, amp, channels_last)
        self.diffusion_range = DiffusionRange.of(diffusion_range)
        if not 0 <= int(t_upper) < scheduler.num_train_timesteps:
            raise ValueError(f"t_upper must be in [0, {scheduler.num_train_timesteps}), got {t_upper}")
        self.scheduler = scheduler
        self.t_upper = int(t_upper)
        kwargs = {} if noise_type == "gaussian" else {"levels": levels, "discount": discount}
        self.noise_fn = get_noise_fn(noise_type, **kwargs)
        self.seed = int(seed)

    def generator(self, device: torch.device) -> torch.Generator:
        """A fresh generator seeded with ``seed``: all the noise of one volume is drawn from it, in order."""
        return torch.Generator(device=device).manual_seed(self.seed)

    def noise(self, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Noise of the method's type shaped like ``like`` (K, C, H, W), for all slices at once."""
        return self.noise_fn(tuple(like.shape), generator=generator, device=like.device)

    def terms(self, t: int, device: torch.device) -> ScheduleTerms:
        """Schedule terms of timestep ``t``, each (1, 1, 1, 1) so that they broadcast over the slices."""
        return schedule_terms(self.scheduler, torch.tensor([int(t)]), device=device)

    def denoise(
        self, network: Callable, x_t: torch.Tensor, t: int, terms: ScheduleTerms, generator: torch.Generator
    ) -> torch.Tensor:
        """One reverse step x_t -> x_{t-1} for all slices (K, C, H, W)."""
        timesteps = torch.full((x_t.shape[0],), int(t), device=x_t.device, dtype=torch.long)
        prediction = self.run_network(network, x_t, timesteps=timesteps)
        eps_hat = eps_from_prediction(prediction, x_t, terms, self.scheduler.prediction_type)
        return reverse_step(x_t, eps_hat, terms, self.noise(x_t, generator) if t > 0 else torch.zeros_like(x_t))

    def reconstruct(self, x_0: torch.Tensor, network: Callable, generator: torch.Generator) -> torch.Tensor:
        """The pseudo-healthy reconstruction x_hat (K, C, H, W) of slices ``x_0``: noise to ``t_upper``, then the
        full reverse chain to t = 0, in the diffusion's range; ``x_0`` and x_hat on the preprocessed image's scale."""
        x_t = self.diffusion_range.to_diffusion(x_0)
        x_t = q_sample(x_t, self.noise(x_0, generator), self.terms(self.t_upper, x_0.device))
        for t in progress(range(self.t_upper, -1, -1), desc=f"{x_0.shape[0]} slices, reverse steps", unit="step"):
            x_t = self.denoise(network, x_t, t, self.terms(t, x_0.device), generator)
        return self.diffusion_range.to_image(x_t)
