"""Which axial slices: those holding brain (scored), those holding a labelled voxel (decided on the label at its own
resolution, before the in-plane resize), and the healthy ones (training)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform


def brain_slices(volume: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
    """Indices of the axial slices of ``volume`` (C, H, W, D) that hold any voxel above ``threshold``; (K,) long."""
    return torch.nonzero(volume.abs().amax(dim=(0, 1, 2)) > threshold).flatten()


def healthy_slice_indices(
    image: torch.Tensor,
    labelled_slices: torch.Tensor | None = None,
    min_brain_fraction: float = 0.0,
    channel: int | None = None,
) -> torch.Tensor:
    """Axial slices of ``image`` (C, H, W, D) with a non-empty brain and no labelled voxel; (K,) long.

    ``labelled_slices`` (D,) bool flags the slices whose label holds a voxel, decided on the label at its own
    resolution (:class:`LabelledSlicesd`); None: no label. The brain is where any channel is non-zero, or with
    ``channel`` where that channel is (e.g. FLAIR's, as "FLAIR non-empty").
    """
    brain = (image.abs() > 0).any(dim=0) if channel is None else image[int(channel)].abs() > 0  # (H, W, D)
    fraction = brain.float().mean(dim=(0, 1))
    keep = (brain.any(dim=(0, 1))) & (fraction >= min_brain_fraction)
    if labelled_slices is not None:
        keep &= ~torch.as_tensor(labelled_slices, dtype=torch.bool).to(keep.device)
    return torch.nonzero(keep).flatten()


class LabelledSlicesd(MapTransform):
    """Store which axial slices of ``data[key]`` (a label (1, H, W, D)) hold a labelled voxel, as a bool (D,) tensor
    in ``data[out_key]``.

    Placed before the in-plane resize, so that training keeps or drops a slice on the label at its own resolution, as
    the authors' ``split_healthy.py`` does: a small tumour fragment can vanish from a nearest-neighbour 128 x 128
    label, and its slice would then pass for healthy. The resize keeps the axial slices, so the flags stay aligned.
    Studies without a label get no flags.
    """

    def __init__(self, keys: KeysCollection, out_key: str = "label_slices", allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.out_key = out_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = torch.as_tensor(d[key]).as_subclass(torch.Tensor)
            d[self.out_key] = (label != 0).flatten(0, -2).any(dim=0)
        return d
