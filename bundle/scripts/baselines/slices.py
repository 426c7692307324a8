"""The inferer contract every method follows, with the volume handling and the network calls written once.

A subclass implements :meth:`BrainSliceInferer.score_slices` on the brain slices of a volume (K, C, H, W); the base
class cuts the axial slices holding any brain voxel out of each volume (B, C, H, W, D), scores them together and
puts the maps back, leaving 0 on the slices with no brain (exactly as ``scripts.scoring.ANDiInferer`` does), and runs
networks in chunks of slices with the same bf16-autocast and channels-last options as ANDi.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.inferers import Inferer

from scripts import as_bool, as_flag_or_auto
from scripts.scoring import brain_slices


def use_amp(amp: bool | str | None, device: torch.device) -> bool:
    """Whether to autocast in bf16 on ``device``: ``amp`` True, False, or "auto"/None (on CUDA, and on CPUs with
    native bf16), the rule of ``ANDiInferer.use_amp``."""
    amp = "auto" if amp is None else as_flag_or_auto(amp)
    if amp != "auto":
        return bool(amp)
    return device.type == "cuda" or (device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))


class BrainSliceInferer(Inferer):
    """Base inferer: per-channel anomaly maps of the brain slices of each volume; 0 on slices with no brain.

    Args:
        batch_size: slices per network call; the memory knob.
        amp: autocast the network in bfloat16: True, False, or "auto" (on CUDA, and on CPUs with native bf16).
        channels_last: run the network in channels-last memory format.
    """

    def __init__(self, batch_size: int = 64, amp: bool | str | None = "auto", channels_last: bool | str = True) -> None:
        super().__init__()
        self.batch_size = int(batch_size)
        self.amp = amp
        self.channels_last = as_bool(channels_last)

    def run_network(self, network: Callable, x: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        """``network(x, **kwargs)`` in chunks of ``batch_size`` slices, returned in float32. ``x`` is (K, C, H, W);
        every tensor in ``kwargs`` (e.g. ``timesteps``) is (K, ...) and is chunked alongside."""
        out = []
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start : start + self.batch_size]
            if self.channels_last:
                chunk = chunk.contiguous(memory_format=torch.channels_last)
            chunk_kwargs = {k: v[start : start + self.batch_size] for k, v in kwargs.items()}
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=use_amp(self.amp, x.device)):
                out.append(network(chunk, **chunk_kwargs).float())
        return torch.cat(out).contiguous()

    def score_slices(self, x_0: torch.Tensor, network: Callable) -> torch.Tensor:
        """Per-channel maps (K, C, H, W) float32 of the brain slices ``x_0`` (K, C, H, W)."""
        raise NotImplementedError

    def score_volume(self, volume: torch.Tensor, network: Callable) -> torch.Tensor:
        """Per-channel map a_m for one volume (C, H, W, D); slices with no brain get 0. Returns (C, H, W, D)."""
        out = torch.zeros(volume.shape, dtype=torch.float32, device=volume.device)
        keep = brain_slices(volume)
        if keep.numel() == 0:
            return out
        slices = volume[..., keep].permute(3, 0, 1, 2).float()  # (K, C, H, W)
        out[..., keep] = self.score_slices(slices, network).float().permute(1, 2, 3, 0)
        return out

    @torch.inference_mode()
    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs) -> torch.Tensor:
        """Score a batch of volumes (B, C, H, W, D), or one volume (C, H, W, D); returns maps of the same shape."""
        if inputs.ndim == 4:
            return self.score_volume(inputs, network)
        if inputs.ndim != 5:
            raise ValueError(f"expected (B, C, H, W, D) or (C, H, W, D) volumes, got shape {tuple(inputs.shape)}")
        return torch.stack([self.score_volume(v, network) for v in inputs])
