"""The study's channels in one buffer: the stack and the orientation of the preprocessing (``pre#stack`` and
``pre#orient`` in ``configs/inference.yaml``), with one copy of a BraTS-sized study at their peak instead of two.

* :class:`ConcatItemsd`: MONAI's ``ConcatItemsd`` with ``release``: each modality is copied into the stacked
  buffer and then dropped from the dictionary it came in, so that the four modalities and their stack are never held
  side by side (about 136 MB less for 4 x 240 x 240 x 155 float32 voxels);
* :class:`Orientationd`: MONAI's ``Orientationd`` with ``inplace``: an orientation that only flips axes flips the
  image in its own buffer, a plane at a time, and the image takes the metadata MONAI's orientation gives (affine,
  applied operation), so that ``Invertd`` undoes it as before; the inverse flips ``Invertd``'s maps in place too.

Both give the values and metadata of MONAI's own transforms, bit for bit (``tests/test_stacking.py``). Both change
what they are given: the preprocessing sets them on its own dictionary and image, which nothing else holds.
"""

from __future__ import annotations

import functools
from collections.abc import Hashable, Mapping, MutableMapping, Sequence

import monai.transforms
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from scripts import as_bool


class ConcatItemsd(monai.transforms.ConcatItemsd):
    """MONAI's ``ConcatItemsd`` (``keys`` concatenated along ``dim`` into ``data[name]``), with ``release``.

    Args:
        keys, name, dim, allow_missing_keys: as MONAI's.
        release: copy each item into one preallocated buffer and remove it from ``data`` itself once copied (the
            mapping given is changed): the items and their concatenation are then not held side by side. The values,
            dtype and metadata (the first item's, as ``torch.cat`` of MetaTensors gives) are those of MONAI's
            transform. Items that are not all tensors of one type and device, a key named twice, or a ``data`` that
            cannot be changed get MONAI's own path.
    """

    not_settings = ("release",)  # memory: the same stack

    def __init__(
        self,
        keys: KeysCollection,
        name: str,
        dim: int = 0,
        allow_missing_keys: bool = False,
        release: bool | str = False,
    ) -> None:
        super().__init__(keys, name, dim, allow_missing_keys)
        self.release = as_bool(release)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        keys = list(self.key_iterator(data))
        items = [data[k] for k in keys]
        releasable = (
            self.release
            and isinstance(data, MutableMapping)
            and items
            and all(isinstance(x, torch.Tensor) for x in items)
            and len({(type(x), x.device) for x in items}) == 1  # else MONAI's error (or cross-device copy)
            and len(set(keys)) == len(keys)  # a key named twice cannot be popped twice
        )
        if not releasable:
            return super().__call__(data)
        dim = self.dim % items[0].ndim
        shape = list(items[0].shape)
        shape[dim] = sum(x.shape[dim] for x in items)
        dtype = functools.reduce(torch.promote_types, (x.dtype for x in items))
        buffer = torch.empty(shape, dtype=dtype, device=items[0].device)  # its pages become resident as written
        out = buffer
        if isinstance(items[0], MetaTensor):  # the first item's metadata, as torch.cat of MetaTensors gives
            out = MetaTensor(buffer).copy_meta_from(items[0])
            out.is_batch = False
        del items
        start = 0
        for key in keys:
            item = data.pop(key)  # its last reference, unless the caller keeps one
            size = item.shape[dim]
            buffer.narrow(dim, start, size).copy_(item.as_tensor() if isinstance(item, MetaTensor) else item)
            start += size
            del item
        d = dict(data)
        d[self.name] = out
        return d


def flip_in_place(x: torch.Tensor, dims: Sequence[int]) -> torch.Tensor:
    """``x`` flipped along each of ``dims``, in its own buffer: planes are swapped pairwise through one plane's copy
    (``torch.flip`` would allocate a second ``x``). Returns ``x``."""
    for dim in dims:
        n = x.shape[dim]
        for i in range(n // 2):
            low, high = x.select(dim, i), x.select(dim, n - 1 - i)
            kept = low.clone()
            low.copy_(high)
            high.copy_(kept)
    return x


def flipped_axes(before: torch.Tensor, after: torch.Tensor) -> list[int] | None:
    """The spatial axes (1-based, as in a (C, H, W, D) image) that an orientation flipped, read from the affines
    (4 x 4) before and after it: axis i is flipped where its column is negated. None when the orientation did more
    than flip (axes permuted)."""
    dims = []
    for i in range(before.shape[0] - 1):
        if torch.allclose(after[:-1, i], before[:-1, i]):
            continue
        if not torch.allclose(after[:-1, i], -before[:-1, i]):
            return None
        dims.append(i + 1)
    return dims


class Orientationd(monai.transforms.Orientationd):
    """MONAI's ``Orientationd``, with ``inplace``.

    Args:
        inplace: when the orientation only flips axes (the usual case: BraTS and most scanners store axial slices
            along the last axis), flip the image in its own buffer (:func:`flip_in_place`), and give it the metadata
            that MONAI's orientation gives a one-byte stand-in of its shape and metadata (affine, applied operation).
            The same in :meth:`inverse` (``Invertd``). The image given is changed, and so is a map given to the
            inverse: in the bundle's pipeline that map is the resize inverse's own new tensor. An orientation that
            also permutes axes, a lazy call, or an image that is not a MetaTensor gets MONAI's own path (a new tensor).
        Other arguments: as MONAI's.
    """

    not_settings = ("inplace",)  # memory: the same image

    def __init__(self, *args, inplace: bool | str = False, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.inplace = as_bool(inplace)

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict[Hashable, torch.Tensor]:
        if not self.inplace or (self.lazy if lazy is None else lazy):
            return super().__call__(data, lazy=lazy)
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.orient_in_place(d[key])
        return d

    def inverse(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        if not self.inplace:
            return super().inverse(data)
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.orient_in_place(d[key], inverse=True)
        return d

    def orient_in_place(self, img: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """``img`` (C, H, W, D) oriented (``inverse``: the orientation undone): itself, flipped in place, when the
        orientation only flips."""
        monai_path = self.ornt_transform.inverse if inverse else functools.partial(self.ornt_transform, lazy=False)
        if not isinstance(img, MetaTensor) or img.pending_operations:
            return monai_path(img)
        stand_in = MetaTensor(torch.zeros((1, *img.shape[1:]), dtype=torch.uint8)).copy_meta_from(img)
        oriented = monai_path(stand_in)  # MONAI's metadata of the result, on 1 byte a voxel
        dims = flipped_axes(img.affine, oriented.affine) if oriented.shape[1:] == img.shape[1:] else None
        if dims is None:
            return monai_path(img)  # the axes are permuted: MONAI's new tensor
        flip_in_place(img.as_tensor(), dims)
        return img.copy_meta_from(oriented)
