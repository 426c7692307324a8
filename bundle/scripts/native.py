"""The way back from the atlas to a study's native grid, and transforms on disk.

Transform convention (SimpleITK's): resampling onto grid A with transform T reads the moving image at ``T(p)`` for
every point ``p`` of A, so the transform ``scripts.registration`` returns maps *atlas* points to *native* points of a
modality. Bringing a map computed on the atlas grid back to the native reference grid (:func:`to_native`) therefore
resamples with the inverse transform. Transforms travel through MONAI's batching as 4 x 4 matrices
(:func:`transform_matrix`, :func:`matrix_transform`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Hashable, Mapping
from pathlib import Path

import numpy as np
import SimpleITK as sitk  # noqa: N813
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from scripts.atlas import atlas_grid
from scripts.files import atomic_write_bytes
from scripts.grid import Grid, read_grid, same_lattice, to_metatensor, to_sitk

PathLike = str | os.PathLike


def transform_matrix(transform: sitk.Transform) -> np.ndarray:
    """The 4 x 4 homogeneous matrix (LPS mm -> LPS mm) of an affine ``transform`` (composites of rigid and affine
    maps included), found from the images of four points. A matrix, unlike a SimpleITK object, passes through
    MONAI's batching and can be saved anywhere."""
    points = np.array([[0.0, 0, 0], [100.0, 0, 0], [0, 100.0, 0], [0, 0, 100.0]])
    mapped = np.array([transform.TransformPoint(tuple(p)) for p in points])
    matrix = np.eye(4)
    matrix[:3, :3] = (mapped[1:] - mapped[0]).T / 100.0
    matrix[:3, 3] = mapped[0]
    return matrix


def matrix_transform(matrix: np.ndarray | torch.Tensor) -> sitk.AffineTransform:
    """The SimpleITK transform of a 4 x 4 homogeneous matrix from :func:`transform_matrix`."""
    m = np.asarray(matrix.detach().cpu().numpy() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.float64)
    if m.shape != (4, 4):
        raise ValueError(f"expected a 4 x 4 matrix, got shape {m.shape}")
    return sitk.AffineTransform(m[:3, :3].ravel().tolist(), m[:3, 3].tolist())


def to_native(
    volume: np.ndarray | torch.Tensor | sitk.Image,
    transform: sitk.Transform | np.ndarray | torch.Tensor | None,
    reference_native: sitk.Image | PathLike,
    interpolator: str = "linear",
    atlas: PathLike | sitk.Image | None = None,
) -> sitk.Image:
    """Resample a map from atlas space back onto the reference modality's original grid.

    Args:
        volume: the map: a SimpleITK image, a MetaTensor (its affine is used, so it may have been reoriented), or a
            plain array (x, y, z) / (1, x, y, z) on the grid of ``atlas`` in the atlas file's voxel order.
        transform: the reference modality's composed transform (atlas points -> native points), as a SimpleITK
            transform or its 4 x 4 matrix (``data["atlas_transform"]``); None for a study that passed through.
        reference_native: the reference modality's native image or its file (only the header is read).
        interpolator: "linear" (float32 output) or "nearest" (labels; keeps the pixel type).
        atlas: the atlas a plain array lies on (``scripts.atlas``; None: SRI24).

    Returns:
        an image with exactly the size, spacing, origin and direction of ``reference_native``; zero outside the
        atlas field of view.
    """
    kinds = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
    if interpolator not in kinds:
        raise ValueError(f"interpolator must be one of {sorted(kinds)}, got {interpolator!r}")
    image = to_sitk(volume, None if isinstance(volume, (sitk.Image, MetaTensor)) else atlas_grid(atlas))
    if interpolator == "linear":
        image = sitk.Cast(image, sitk.sitkFloat32)
    target = reference_native if isinstance(reference_native, sitk.Image) else read_grid(reference_native).blank()
    if transform is None:
        # a study that passed through: same points, maybe another voxel order; nearest copies them exactly
        exact = same_lattice(Grid.of(image), Grid.of(target))
        kind = sitk.sitkNearestNeighbor if exact else kinds[interpolator]
        return sitk.Resample(image, target, sitk.Transform(), kind, 0.0, image.GetPixelID())
    if not isinstance(transform, sitk.Transform):
        transform = matrix_transform(transform)
    # Resampling onto the native grid reads the atlas-space map at T^-1(p) for every native point p.
    return sitk.Resample(image, target, transform.GetInverse(), kinds[interpolator], 0.0, image.GetPixelID())


def write_transform(transform: sitk.Transform, path: PathLike) -> Path:
    """Write ``transform`` to ``path`` (.tfm, or any ITK transform format by suffix) atomically."""
    path = Path(path)
    with tempfile.TemporaryDirectory(dir=path.parent if path.parent.exists() else None) as tmp:
        staged = Path(tmp) / f"transform{''.join(path.suffixes) or '.tfm'}"
        sitk.WriteTransform(transform, str(staged))
        return atomic_write_bytes(staged.read_bytes(), path)


class ToNatived(MapTransform):
    """Bring maps of a registered study from the atlas grid back onto its reference modality's native grid.

    Does nothing for a study that was not registered (no ``transform_key`` in the data). Use after ``Invertd``, when
    the maps are back on the grid the study was loaded (registered) on.

    Args:
        keys: the maps, MetaTensors (1, X, Y, Z) on the atlas grid.
        interpolators: one per key, ``"linear"`` for maps (and for segmentations as floats), ``"nearest"`` for
            labels.
        transform_key: the composed atlas -> native transform (4 x 4 matrix) set by ``RegisterToAtlasd``.
        reference_key: the reference modality's native file, whose grid the outputs take.
    """

    def __init__(
        self,
        keys: KeysCollection,
        interpolators: str | list[str] = "linear",
        transform_key: str = "atlas_transform",
        reference_key: str = "native_reference",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.interpolators = [interpolators] * len(self.keys) if isinstance(interpolators, str) else interpolators
        self.transform_key, self.reference_key = transform_key, reference_key

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if d.get(self.transform_key) is None:
            return d
        for key, interpolator in zip(self.keys, self.interpolators, strict=True):
            if key not in d and self.allow_missing_keys:
                continue
            native = to_native(d[key], d[self.transform_key], d[self.reference_key], interpolator)
            d[key] = to_metatensor(native, d[self.reference_key])
        return d
