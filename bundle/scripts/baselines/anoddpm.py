"""AnoDDPM (Wyatt et al., "AnoDDPM: anomaly detection with denoising diffusion probabilistic models using simplex
noise", CVPR Workshops 2022), as evaluated in the paper (Sec. 5.5, Appendix A).

The DDPM (the same UNet, schedule and recipe as ANDi) is trained with multi-scale simplex noise instead of Gaussian
noise (``configs/anoddpm_train.yaml``: starting frequency 2^-6, 6 octaves, persistence 0.8). To score,
every brain slice x_0 is noised with simplex noise to t_upper = 250 and denoised by the full reverse chain to t = 0,
each reverse step adding simplex noise too (as AnoDDPM samples); the per-channel map is the squared residual

    a_m = (x_0 - x_hat)^2.

Differences from the original: multi-channel input (the paper's extension, maps reduced by max over modalities in
the post-processing); the simplex noise is normalised to unit variance; no clipping of the predicted x_0 (paper
Sec. 5.6); every slice gets its own noise (the paper's evaluation shared one noise sample per volume, rotated and
flipped, to save time).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.schedulers import DDPMScheduler
from scripts.baselines.sampling import ReverseChainInferer


class AnoDDPMInferer(ReverseChainInferer):
    """Per-channel maps (x_0 - x_hat)^2, x_hat the reverse chain from ``t_upper`` (AnoDDPM: 250) with simplex noise.

    Args:
        scheduler: the DDPM schedule the network was trained with.
        t_upper: the noise level the reconstruction starts from (AnoDDPM: 250).
        noise_type: noise of the noising and of every reverse step (AnoDDPM: ``"simplex"``).
        kwargs: the other arguments of :class:`~scripts.baselines.sampling.ReverseChainInferer` (octaves ``levels``,
            persistence ``discount``, ``batch_size``, ``seed``, ``amp``, ``channels_last``).
    """

    def __init__(
        self, scheduler: DDPMScheduler, t_upper: int = 250, noise_type: str = "simplex", **kwargs: object
    ) -> None:
        super().__init__(scheduler, t_upper, noise_type, **kwargs)

    def score_slices(self, x_0: torch.Tensor, network: Callable) -> torch.Tensor:
        """(x_0 - x_hat)^2 for brain slices ``x_0`` (K, C, H, W); returns (K, C, H, W)."""
        x_hat = self.reconstruct(x_0, network, self.generator(x_0.device))
        return (x_0 - x_hat).square()
