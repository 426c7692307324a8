"""AutoDDPM (Bercea et al., "Mask, stitch, and re-sample: enhancing robustness and generalizability in anomaly
detection through automatic diffusion models", ICML Workshops 2023), as evaluated in the paper (Sec. 5.5, App. A).

The DDPM is ANDi's, trained with Gaussian noise (``configs/autoddpm_train.yaml``). For the brain slices
x_0 of a volume:

1. **Mask**: reconstruct x_rec from t_upper = 200 (Gaussian noise, full reverse chain); r = |x_0 - x_rec|; the
   anomaly mask is m = dilate(any_c r_c > tau_c) (3 x 3 dilation for ``dilation_radius`` 1, shared by the channels).
   tau is the ``masking_percentile`` (paper: 99th, the original: 95th) of the residuals of *healthy validation*
   slices, computed once with :func:`calibrate_masking_threshold` (``run calibrate``, see the config, writes it to a
   value file that inference reads: ``scripts.values``); without it, the percentile of the volume's own brain
   residuals is used (the original code's fallback).
2. **Stitch**: x_stitch = m * x_rec + (1 - m) * x_0.
3. **Re-sample**: RePaint over the last ``t_inpaint`` = 50 steps with ``resamplings`` = 5: x_stitch is noised to
   t_inpaint; at every step the unknown region (m = 1) comes from the model's reverse step and the known region
   from x_0 noised to t - 1 (x_0 itself at the last step); each step but the last of its resamplings is noised back
   to t and repeated.
4. **Map**: a_m = |x_0 - x_inp|, weighted (``first_stage_weighting``, as the original) by the first residual r
   divided by its 95th percentile in the slice's brain and clipped to [0, 1].

Left out: the LPIPS weighting of the original residual (its mask and final map multiply the residual by a learned
perceptual distance). It needs pretrained AlexNet/SqueezeNet weights, which cannot be installed here; the masks and
maps here use the intensity residual alone. Other differences: multi-channel input with one mask for all channels
(the paper's extension); no clipping of x_rec or of the predicted x_0 (paper Sec. 5.6); the re-noising between
resamplings uses beta_t of the step (the original code uses beta_{t-1}), and the step at t = 0 is resampled too.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from monai.networks.schedulers import DDPMScheduler
from scripts.baselines.sampling import ReverseChainInferer, forward_step
from scripts.diffusion import q_sample
from scripts.intensity import brain_mask
from scripts.progress import progress
from scripts.slices import healthy_slice_indices


def dilate(mask: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Binary dilation of (K, 1, H, W) masks with a (2 radius + 1)^2 square, per slice."""
    if radius <= 0:
        return mask
    return F.max_pool2d(mask.float(), kernel_size=2 * radius + 1, stride=1, padding=radius) > 0


class AutoDDPMInferer(ReverseChainInferer):
    """Mask, stitch and re-sample (see the module docstring); per-channel maps |x_0 - x_inp| (K, C, H, W).

    Args:
        scheduler: the DDPM schedule the network was trained with.
        t_upper: noise level of the first reconstruction (AutoDDPM: 200).
        t_inpaint: steps of the re-sampling (AutoDDPM: 50).
        resamplings: RePaint resamplings per step (AutoDDPM: 5).
        masking_threshold: tau, one number or one per channel (from :func:`calibrate_masking_threshold`); None
            uses the ``masking_percentile`` of each volume's own brain residuals.
        masking_percentile: percentile used when ``masking_threshold`` is None.
        dilation_radius: the mask's dilation (1: 3 x 3, as AutoDDPM).
        first_stage_weighting: multiply the final residual by the normalised first residual (AutoDDPM does).
        noise_type: noise of the chains (AutoDDPM: ``"gaussian"``).
        kwargs: ``batch_size``, ``seed``, ``amp``, ``channels_last`` of
            :class:`~scripts.baselines.sampling.ReverseChainInferer`.
    """

    def __init__(
        self,
        scheduler: DDPMScheduler,
        t_upper: int = 200,
        t_inpaint: int = 50,
        resamplings: int = 5,
        masking_threshold: float | Sequence[float] | None = None,
        masking_percentile: float = 99.0,
        dilation_radius: int = 1,
        first_stage_weighting: bool = True,
        noise_type: str = "gaussian",
        **kwargs: object,
    ) -> None:
        super().__init__(scheduler, t_upper, noise_type, **kwargs)
        if not 0 <= int(t_inpaint) < scheduler.num_train_timesteps:
            raise ValueError(f"t_inpaint must be in [0, {scheduler.num_train_timesteps}), got {t_inpaint}")
        if int(resamplings) < 1:
            raise ValueError(f"resamplings must be >= 1, got {resamplings}")
        self.t_inpaint = int(t_inpaint)
        self.resamplings = int(resamplings)
        self.masking_threshold = masking_threshold
        self.masking_percentile = float(masking_percentile)
        self.dilation_radius = int(dilation_radius)
        self.first_stage_weighting = bool(first_stage_weighting)

    def anomaly_mask(self, residual: torch.Tensor, brain: torch.Tensor) -> torch.Tensor:
        """m = dilate(any_c residual_c > tau_c) for residuals (K, C, H, W) and brain (K, 1, H, W); bool (K, 1, H, W)."""
        c = residual.shape[1]
        if self.masking_threshold is None:
            values = residual.transpose(0, 1)[:, brain.squeeze(1)]  # (C, brain pixels)
            tau = torch.quantile(values.float().cpu(), self.masking_percentile / 100.0, dim=1)
        else:
            tau = torch.as_tensor(self.masking_threshold, dtype=torch.float32).flatten()
            if tau.numel() not in (1, c):
                raise ValueError(f"masking_threshold needs 1 or {c} values (one per channel), got {tau.numel()}")
            tau = tau.expand(c)
        above = (residual > tau.to(residual.device).view(1, c, 1, 1)).any(dim=1, keepdim=True) & brain
        return dilate(above, self.dilation_radius)

    def inpaint(
        self,
        x_0: torch.Tensor,
        x_stitch: torch.Tensor,
        mask: torch.Tensor,
        network: Callable,
        generator: torch.Generator,
    ) -> torch.Tensor:
        """RePaint from ``x_stitch`` noised to ``t_inpaint``: the unknown region (``mask`` (K, 1, H, W) True) from the
        model, the known region from ``x_0`` noised to t - 1, in the diffusion's range. Returns the in-painted slices
        (K, C, H, W) on the image's scale, as ``x_0`` and ``x_stitch``; outside the mask they equal ``x_0`` exactly.
        """
        image = x_0
        x_0, x_stitch = self.diffusion_range.to_diffusion(x_0), self.diffusion_range.to_diffusion(x_stitch)
        x_t = q_sample(x_stitch, self.noise(x_0, generator), self.terms(self.t_inpaint, x_0.device))
        for t in progress(range(self.t_inpaint, -1, -1), desc=f"{x_0.shape[0]} slices, re-sampling", unit="step"):
            terms = self.terms(t, x_0.device)
            for u in range(self.resamplings):
                z = self.noise(x_0, generator)
                known = terms.alpha_bar_prev.sqrt() * x_0 + (1.0 - terms.alpha_bar_prev).sqrt() * z  # x_0 at t - 1
                unknown = self.denoise(network, x_t, t, terms, generator)
                x_prev = torch.where(mask, unknown, known)
                if u < self.resamplings - 1:
                    x_t = forward_step(x_prev, terms, self.noise(x_0, generator))
            x_t = x_prev
        return torch.where(mask, self.diffusion_range.to_image(x_t), image)  # the last known step is x_0 itself

    def score_slices(self, x_0: torch.Tensor, network: Callable) -> torch.Tensor:
        """|x_0 - x_inp| (weighted by the normalised first residual) for brain slices ``x_0`` (K, C, H, W)."""
        generator = self.generator(x_0.device)
        brain = brain_mask(x_0, channel_dim=1)
        x_rec = self.reconstruct(x_0, network, generator)
        residual = (x_0 - x_rec).abs()
        mask = self.anomaly_mask(residual, brain)
        x_stitch = torch.where(mask, x_rec, x_0)
        x_inp = self.inpaint(x_0, x_stitch, mask, network, generator)
        a_m = (x_0 - x_inp).abs()
        if self.first_stage_weighting:
            a_m = a_m * normalised_residual(residual, brain)
        return a_m


def with_masking_threshold(
    inferer: AutoDDPMInferer, masking_threshold: float | Sequence[float] | None
) -> AutoDDPMInferer:
    """A copy of ``inferer`` with tau set to ``masking_threshold`` (None: each volume's own percentile).

    The config builds the chain once without tau (``run calibrate`` calibrates that one, so it never reads the file
    it is about to write) and scores with this copy.
    """
    scored = copy.copy(inferer)
    scored.masking_threshold = masking_threshold
    return scored


def normalised_residual(residual: torch.Tensor, brain: torch.Tensor, percentile: float = 95.0) -> torch.Tensor:
    """``residual`` (K, C, H, W) divided by its ``percentile`` over each slice's brain pixels, per channel, clipped
    to [0, 1] (AutoDDPM's weighting of the final map; the original takes the percentile over the whole slice)."""
    k, c = residual.shape[:2]
    inside = torch.where(brain, residual, torch.full_like(residual, float("nan"))).reshape(k, c, -1)
    scale = torch.nanquantile(inside.float().cpu(), percentile / 100.0, dim=-1).to(residual.device)
    return (residual / scale.clamp_min(1e-12).view(k, c, 1, 1)).clamp(0.0, 1.0)


@torch.inference_mode()
def calibrate_masking_threshold(
    studies: Sequence[dict[str, str]],
    transform: Callable[[dict], dict],
    inferer: AutoDDPMInferer,
    network: torch.nn.Module | Callable,
    percentile: float = 99.0,
    slices_per_study: int = 16,
    device: torch.device | str | None = None,
) -> list[float]:
    """AutoDDPM's masking threshold tau per channel: the ``percentile`` (paper: 99th) of the first-stage residuals
    |x_0 - x_rec| over the brain pixels of healthy validation slices.

    Args:
        studies: validation studies (their labelled slices, if any, are skipped).
        transform: the volume preprocessing (``data["image"]`` (C, H, W, D), optional ``data["label"]``).
        inferer: the AutoDDPM inferer whose reconstruction (``t_upper``, noise, seed) is calibrated.
        network: the trained noise-prediction network.
        slices_per_study: healthy brain slices used per study, evenly spaced (the reconstruction is costly).
        device: where to run (default: the network's device).

    Returns:
        tau_c for every channel, ready for the config's ``masking_threshold`` (``run calibrate`` writes it to the
        config's ``masking_threshold_file``).
    """
    if not studies:
        raise ValueError("no validation studies to calibrate the masking threshold on")
    if device is None:
        params = list(network.parameters()) if isinstance(network, torch.nn.Module) else []
        device = params[0].device if params else torch.device("cpu")
    residuals: list[np.ndarray] = []
    for study in studies:
        data = transform(dict(study))
        image = torch.as_tensor(data["image"])
        keep = healthy_slice_indices(image, data.get("label_slices"))
        if keep.numel() == 0:
            continue
        keep = keep[torch.linspace(0, keep.numel() - 1, min(slices_per_study, keep.numel())).round().long()]
        x_0 = image[..., keep].permute(3, 0, 1, 2).float().to(device)
        x_rec = inferer.reconstruct(x_0, network, inferer.generator(x_0.device))
        r = (x_0 - x_rec).abs().transpose(0, 1)[:, brain_mask(x_0, channel_dim=1).squeeze(1)]  # (C, brain pixels)
        residuals.append(r.cpu().numpy())
    if not residuals:
        raise ValueError(f"no healthy brain slice in {len(studies)} validation studies")
    return [float(v) for v in np.percentile(np.concatenate(residuals, axis=1), percentile, axis=1)]
