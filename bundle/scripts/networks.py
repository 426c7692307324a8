"""The noise-prediction network: MONAI's ``DiffusionModelUNet`` with named presets.

``paper`` has the shape of the authors' UNet (``modules.py`` of their code) as far as MONAI's network allows: five
resolutions, 128 to 8 pixels, with 32, 64, 128, 256, 256 channels; self-attention at the three lowest (32, 16 and 8
pixels) with 4 heads each (``num_head_channels`` = channels / 4); one residual block per level on the way down. It
has 17.98M parameters where the authors' UNet has 9.72M: each of MONAI's residual blocks holds two 3x3 convolutions
where the authors' (modified) double convolution holds one, and MONAI's way up runs ``num_res_blocks + 1`` blocks per
level. ``cpu`` (1.11M parameters) is small enough to train on a laptop CPU in minutes; the shipped demo weights use
it. ``cpu_lean`` (1.09M parameters: 16 channels at full resolution, a fourth level, attention only at 16 x 16 pixels)
runs a scoring pass in half the time of ``cpu`` on a CPU, but trained at the demo budget it scored far lower AUPRC
(``benchmarks/frontier.py``, made data), so the demo keeps ``cpu``; it stays for that comparison. ``tiny``
(:data:`TINY_NETWORK`, about 45k parameters) is for checking the workflows, in the tests and the smoke runs of the
benchmarks (``--network_preset tiny``): it learns nothing useful.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.networks.nets import DiffusionModelUNet
from scripts import as_bool

TINY_NETWORK: dict[str, Any] = {
    "channels": (8, 16),
    "attention_levels": (False, True),
    "num_res_blocks": 1,
    "num_head_channels": 8,
    "norm_num_groups": 8,
}
"""A ~45k-parameter ``DiffusionModelUNet``: the workflows are checked with it, not the model."""

NETWORK_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "channels": (32, 64, 128, 256, 256),
        "attention_levels": (False, False, True, True, True),
        "num_res_blocks": 1,
        "num_head_channels": (8, 16, 32, 64, 64),  # 4 heads at every level, as the authors' nn.MultiheadAttention
        "norm_num_groups": 32,
    },
    "cpu": {
        "channels": (32, 64, 64),
        "attention_levels": (False, False, True),
        "num_res_blocks": 1,
        "num_head_channels": 32,
        "norm_num_groups": 32,
    },
    "cpu_lean": {
        "channels": (16, 32, 64, 64),
        "attention_levels": (False, False, False, True),
        "num_res_blocks": 1,
        "num_head_channels": 32,
        "norm_num_groups": 16,
    },
    "tiny": TINY_NETWORK,
}


def make_network(
    preset: str | Mapping[str, Any] = "cpu", in_channels: int = 4, fused_attention: bool | str = True, **overrides: Any
) -> DiffusionModelUNet:
    """A 2D ``DiffusionModelUNet`` mapping (N, C, H, W) noisy slices and (N,) timesteps to predicted noise (N, C, H, W).

    Args:
        preset: a name in ``NETWORK_PRESETS`` or a dict of ``DiffusionModelUNet`` arguments.
        in_channels: number of modalities C (input and output channels).
        fused_attention: run the attention blocks through PyTorch's fused ``scaled_dot_product_attention``
            (MONAI's ``use_flash_attention``) rather than an explicit softmax(QK^T)V. The weights are the same either
            way; the fused kernel is faster and does not hold the attention matrix (about 1.6x the whole ``cpu``
            preset's forward pass on this project's CPU, fp32 and bf16: ``benchmarks/scoring_speed.py``).
        overrides: arguments that replace the preset's.
    """
    if isinstance(preset, str):
        if preset not in NETWORK_PRESETS:
            raise ValueError(f"unknown network preset {preset!r}; choose one of {sorted(NETWORK_PRESETS)}")
        kwargs = dict(NETWORK_PRESETS[preset])
    else:
        kwargs = dict(preset)
    kwargs.setdefault("use_flash_attention", as_bool(fused_attention))
    kwargs.update(overrides)
    return DiffusionModelUNet(spatial_dims=2, in_channels=in_channels, out_channels=in_channels, **kwargs)


class FixedTimestep(torch.nn.Module):
    """``network(x, timesteps=t)`` at one fixed ``timestep`` for every input: a one-input module for the model zoo's
    ``verify_net_in_out``, which feeds a single tensor (the UNet itself takes the noisy slice and its timestep)."""

    def __init__(self, network: torch.nn.Module, timestep: int = 100) -> None:
        super().__init__()
        self.network = network
        self.timestep = int(timestep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        timesteps = torch.full((x.shape[0],), self.timestep, dtype=torch.long, device=x.device)
        return self.network(x, timesteps=timesteps)
