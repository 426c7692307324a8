"""Denoising autoencoder (Kascenas et al., "Denoising autoencoders for unsupervised anomaly detection in brain MRI",
MIDL 2022), trained on the same healthy slices as ANDi and scored with the same post-processing.

Training (``configs/dae_train.yaml``, MONAI's ``SupervisedTrainer`` with ``SimpleInferer``): a 2D UNet
f (MONAI's ``BasicUNet``, 4 -> 4 channels) learns to recover a slice x from x + coarse noise inside the brain
(:func:`scripts.noise.coarse_noise`: N(0, 0.2^2) at 16 x 16, bilinearly upsampled and randomly rolled), with the
squared error on the clean slice inside the brain as the loss. :class:`CoarseNoisePrepareBatch` hands the trainer
``(noisy slice, clean slice)``; nothing of the diffusion model (timesteps, scheduler) is used.

Scoring (``configs/dae.yaml``): the clean slice goes through f once, no noise, and the per-channel map is

    a_m = |x - f(x)| inside the brain mask eroded per slice (5 x 5 square for ``erosion_radius`` 2), 0 elsewhere.

Differences from the original: the UNet is MONAI's ``BasicUNet`` (four downsamplings by max pooling, plain
convolutions; the original has three by average pooling, weight-standardised convolutions and reflection padding);
the ANDi recipe's EMA weights are kept (the original: Adam with AMSGrad, lr 1e-4, weight decay 1e-5, as here, but
cosine annealing restarted every 100 epochs instead of one cosine decay to 0); the brain is "any channel
non-zero" (the original: channel sum > 0.01) and the erosion is strict (the original keeps pixels with > 95% of
their 5 x 5 neighbourhood in the brain). The original reduces the channels by their mean; the paper (and the
configs' ``channel_reduction: max``) by their max.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from monai.engines.utils import PrepareBatch
from monai.networks.nets import BasicUNet
from scripts.intensity import brain_mask
from scripts.noise import coarse_noise
from scripts.scoring import BrainSliceInferer

DAE_DEFAULTS: dict[str, Any] = {"norm": ("group", {"num_groups": 8}), "act": "swish", "upsample": "deconv"}
DAE_PRESETS: dict[str, dict[str, Any]] = {
    # ~7.8M parameters, as the original (depth 4, width 64: ~7.7M)
    "paper": {"features": (32, 64, 128, 256, 512, 32)},
    # ~1.2M parameters, small enough to train on a laptop CPU, like the ANDi demo preset
    "cpu": {"features": (16, 32, 64, 128, 128, 16)},
    # ~13k parameters, for checking the workflows (tests, benchmark smoke runs): it learns nothing useful
    "tiny": {"features": (8, 8, 8, 8, 8, 8)},
}


def make_dae_network(preset: str | Mapping[str, Any] = "cpu", in_channels: int = 4, **overrides: Any) -> BasicUNet:
    """A 2D MONAI ``BasicUNet`` mapping slices (N, C, H, W) to reconstructions (N, C, H, W).

    ``BasicUNet`` is the plain UNet of the original (two 3 x 3 convolutions with normalisation per block, transposed
    convolutions up, a final 1 x 1 convolution) with four downsamplings (the original: three).

    Args:
        preset: a name in ``DAE_PRESETS`` or a dict of ``BasicUNet`` arguments (``features``, ...); group norm
            (8 groups), swish and transposed-convolution upsampling are the defaults either way.
        in_channels: number of modalities C (input and output channels).
        overrides: arguments that replace the preset's.
    """
    if isinstance(preset, str):
        if preset not in DAE_PRESETS:
            raise ValueError(f"unknown DAE preset {preset!r}; choose one of {sorted(DAE_PRESETS)}")
        preset = DAE_PRESETS[preset]
    kwargs = {**DAE_DEFAULTS, **dict(preset), **overrides}
    return BasicUNet(spatial_dims=2, in_channels=in_channels, out_channels=in_channels, **kwargs)


def erode(mask: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Binary erosion of (N, 1, H, W) masks with a (2 radius + 1)^2 square, per slice (outside the image counts as
    inside the mask)."""
    if radius <= 0:
        return mask
    outside = F.max_pool2d((~mask).float(), kernel_size=2 * radius + 1, stride=1, padding=radius)
    return outside == 0


class CoarseNoisePrepareBatch(PrepareBatch):
    """``(x + brain * coarse noise, x)`` from a batch ``{"image": x (N, C, H, W)}``: the DAE's input and target.

    Args:
        resolution: side of the coarse noise grid (DAE: 16).
        std: standard deviation of the coarse draw (DAE: 0.2).
        image_key: the batch's image key.
    """

    def __init__(self, resolution: int = 16, std: float = 0.2, image_key: str = "image") -> None:
        self.resolution = int(resolution)
        self.std = float(std)
        self.image_key = image_key

    def __call__(
        self, batchdata: dict[str, torch.Tensor], device=None, non_blocking: bool = False, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = batchdata[self.image_key].to(device=device, non_blocking=non_blocking, **kwargs)
        noise = coarse_noise(tuple(x.shape), self.resolution, self.std, device=x.device, dtype=x.dtype)
        return x + noise * brain_mask(x, channel_dim=1), x


class MaskedMSELoss(torch.nn.Module):
    """Mean over all elements of (prediction - target)^2 inside the target's brain (the DAE's loss): the
    reconstruction outside the brain is not trained."""

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((prediction.float() - target.float()).square() * brain_mask(target, channel_dim=1)).mean()


class DAEInferer(BrainSliceInferer):
    """Per-channel maps |x - f(x)| inside the eroded brain of each slice, 0 elsewhere.

    Args:
        erosion_radius: the brain mask's erosion per slice (2: a 5 x 5 square, as the original's 5 x 5 pooling).
        batch_size, amp, channels_last: network calls, see :class:`~scripts.scoring.BrainSliceInferer`.
    """

    def __init__(
        self,
        erosion_radius: int = 2,
        batch_size: int = 64,
        amp: bool | str | None = "auto",
        channels_last: bool | str = True,
    ) -> None:
        super().__init__(batch_size, amp, channels_last)
        self.erosion_radius = int(erosion_radius)

    def score_slices(self, x_0: torch.Tensor, network: Callable) -> torch.Tensor:
        """|x_0 - f(x_0)| * eroded brain for slices ``x_0`` (K, C, H, W); returns (K, C, H, W)."""
        x_hat = self.run_network(network, x_0)
        return (x_0 - x_hat).abs() * erode(brain_mask(x_0, channel_dim=1), self.erosion_radius)
