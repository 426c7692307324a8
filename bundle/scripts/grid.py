"""Voxel grids and the conversions between the three image types the bundle meets: NIfTI files, MONAI MetaTensors
(channel-first, RAS affine) and SimpleITK images (LPS world, what registration works on).

* :class:`Grid`: size, spacing, origin and direction of a voxel grid in ITK's LPS world; from an image, a file header
  (:func:`read_grid`) or a shape with a RAS affine (:meth:`Grid.from_affine`).
* :func:`same_grid` (identical grids) and :func:`same_lattice` (the same physical points, maybe in another voxel
  order: a BraTS file and the SRI24 atlas).
* :func:`voxel_ml`: the volume of one voxel of an affine's grid.
* :func:`read_image` (a file as a 3D float32 SimpleITK image, read once with nibabel so that NaN survive to be
  refused), :func:`image_from_array`, :func:`to_sitk` and :func:`to_metatensor`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import SimpleITK as sitk  # noqa: N813
import torch
from monai.data import MetaTensor
from scripts.errors import StudyError

PathLike = str | os.PathLike

# LPS (ITK) <-> RAS (MONAI / nibabel) world coordinates differ by a flip of x and y.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def voxel_ml(img: object) -> float:
    """The volume in ml of one voxel of the grid of ``img`` (anything with an ``affine``, e.g. a MetaTensor);
    1 mm^3 without one."""
    affine = getattr(img, "affine", None)
    if affine is None:
        return 1e-3
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0


@dataclass(frozen=True)
class Grid:
    """A voxel grid in ITK's LPS world: size (x, y, z), spacing (mm), origin (mm), direction (3 x 3, columns = axes)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @classmethod
    def of(cls, image: sitk.Image) -> Grid:
        return cls(image.GetSize(), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    @classmethod
    def from_affine(cls, shape: tuple[int, ...], affine_ras: np.ndarray) -> Grid:
        """The grid of an array of spatial ``shape`` (x, y, z) with a 4 x 4 RAS ``affine`` (nibabel, MONAI)."""
        affine = LPS_TO_RAS @ np.asarray(affine_ras, dtype=np.float64)
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        direction = affine[:3, :3] / spacing
        return cls(
            tuple(int(s) for s in shape[:3]),
            tuple(float(s) for s in spacing),
            tuple(float(o) for o in affine[:3, 3]),
            tuple(float(d) for d in direction.ravel()),
        )

    @classmethod
    def of_tensor(cls, tensor: MetaTensor) -> Grid:
        """The grid of a channel-first MetaTensor (C, x, y, z)."""
        return cls.from_affine(tuple(tensor.shape[1:]), np.asarray(tensor.affine, dtype=np.float64))

    def index_to_world(self) -> np.ndarray:
        """4 x 4 matrix mapping a continuous index (x, y, z, 1) to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = np.reshape(self.direction, (3, 3)) @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    def blank(self) -> sitk.Image:
        """An empty uint8 image on this grid (a cheap resampling reference)."""
        image = sitk.Image([int(s) for s in self.size], sitk.sitkUInt8)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def read_grid(path: PathLike) -> Grid:
    """The grid of an image file from its header alone (a trailing singleton 4th axis is dropped).

    Raises:
        StudyError: unreadable header or not 3D.
    """
    fname = str(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(fname)
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise StudyError(f"{fname}: unreadable as an image ({str(err).strip().splitlines()[-1]})") from err
    dim = reader.GetDimension()
    size = reader.GetSize()
    if dim == 4 and size[3] == 1:
        direction = np.reshape(reader.GetDirection(), (4, 4))[:3, :3].ravel()
        return Grid(tuple(size[:3]), reader.GetSpacing()[:3], reader.GetOrigin()[:3], tuple(direction))
    if dim != 3:
        raise StudyError(f"{fname}: expected a 3D volume (or 4D with a singleton 4th axis), got size {size}")
    return Grid(tuple(size), reader.GetSpacing(), reader.GetOrigin(), reader.GetDirection())


def same_grid(a: Grid, b: Grid, tol_mm: float = 1e-2, tol_direction: float = 1e-4) -> bool:
    """True when two grids are identical (same size, voxel order and geometry within tolerance)."""
    return (
        tuple(a.size) == tuple(b.size)
        and np.allclose(a.spacing, b.spacing, atol=tol_mm)
        and np.allclose(a.origin, b.origin, atol=tol_mm)
        and np.allclose(a.direction, b.direction, atol=tol_direction)
    )


def same_lattice(grid: Grid, target: Grid, tol_mm: float = 1e-2, tol_direction: float = 1e-4) -> bool:
    """True when ``grid`` samples exactly the points of ``target``, possibly in another voxel order.

    The voxel order may differ by axis flips and permutations: a BraTS file (LPS header) and the SRI24 atlas (LAS
    header) hold the same 240 x 240 x 155 physical points, with the anterior-posterior axis stored in opposite
    orders. Formally, the index-to-index map ``target^-1 o grid`` must be a signed permutation (within
    ``tol_direction``) whose image of ``grid``'s index box is ``target``'s index box (within ``tol_mm``).
    """
    to_target = np.linalg.inv(target.index_to_world()) @ grid.index_to_world()
    linear = to_target[:3, :3]
    rounded = np.round(linear)
    if not np.allclose(linear, rounded, atol=tol_direction):
        return False
    if not (np.count_nonzero(rounded, axis=0) == 1).all() or abs(abs(np.linalg.det(rounded)) - 1) > 1e-6:
        return False
    corners = np.array(
        [[i, j, k, 1.0] for i in (0, grid.size[0] - 1) for j in (0, grid.size[1] - 1) for k in (0, grid.size[2] - 1)]
    )
    mapped = (to_target @ corners.T).T[:, :3]
    tol_index = tol_mm / min(target.spacing)
    low, high = mapped.min(axis=0), mapped.max(axis=0)
    return bool(np.allclose(low, 0, atol=tol_index) and np.allclose(high, np.array(target.size) - 1, atol=tol_index))


def image_from_array(array: np.ndarray, affine_ras: np.ndarray) -> sitk.Image:
    """SimpleITK image from a MONAI/nibabel-style array (x, y, z) and its 4 x 4 RAS affine."""
    grid = Grid.from_affine(np.shape(array), affine_ras)
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array).transpose(2, 1, 0)))
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(grid.direction)
    return image


def affine_ras(image: sitk.Image | Grid) -> np.ndarray:
    """4 x 4 RAS affine (MONAI's convention) of a SimpleITK image's grid, voxel order (x, y, z)."""
    grid = image if isinstance(image, Grid) else Grid.of(image)
    return LPS_TO_RAS @ grid.index_to_world()


def to_metatensor(image: sitk.Image, filename: PathLike | None = None) -> MetaTensor:
    """Channel-first MetaTensor (1, x, y, z) float32 with the RAS affine, as ``LoadImage(ensure_channel_first)``."""
    array = sitk.GetArrayFromImage(sitk.Cast(image, sitk.sitkFloat32)).transpose(2, 1, 0)[None]
    affine = torch.as_tensor(affine_ras(image), dtype=torch.float64)
    meta = {
        "spatial_shape": np.asarray(image.GetSize()),
        "original_affine": affine.clone(),
        "original_channel_dim": "no_channel",
        "space": "RAS",
    }
    if filename is not None:
        meta["filename_or_obj"] = str(filename)
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(array)), affine=affine, meta=meta)


def to_sitk(volume: np.ndarray | torch.Tensor | sitk.Image, grid: Grid | None = None) -> sitk.Image:
    """``volume`` as a SimpleITK image: a MetaTensor (1, x, y, z) or (x, y, z) keeps its own affine; a plain array
    (x, y, z) lies on ``grid``."""
    if isinstance(volume, sitk.Image):
        return volume
    affine = volume.affine if isinstance(volume, MetaTensor) else None
    array = volume.detach().cpu().numpy() if isinstance(volume, torch.Tensor) else np.asarray(volume)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise ValueError(f"expected a (x, y, z) or (1, x, y, z) volume, got shape {array.shape}")
    if affine is not None:
        return image_from_array(array, np.asarray(affine, dtype=np.float64))
    if grid is None:
        raise ValueError("a plain array needs the grid it lies on")
    if tuple(array.shape) != tuple(grid.size):
        raise ValueError(f"a plain array must be on the grid {grid.size} in (x, y, z) order, got {array.shape}")
    return image_from_array(array, affine_ras(grid))


def with_header_geometry(image: sitk.Image, path: PathLike) -> sitk.Image:
    """``image`` with the grid that ITK reads from the header of ``path``, when that is ``image``'s grid up to the
    rounding of the header's float32 fields (nibabel derives spacing from the affine, ITK from pixdim: they differ in
    the 8th digit). Registration then sees exactly the geometry ITK would read; otherwise ``image`` is returned as is.
    """
    try:
        header = read_grid(path)
    except (StudyError, OSError):
        return image
    if same_grid(header, Grid.of(image), tol_mm=1e-4, tol_direction=1e-5):
        image.SetSpacing(header.spacing)
        image.SetOrigin(header.origin)
        image.SetDirection(header.direction)
    return image


def read_image(path: PathLike) -> sitk.Image:
    """Read a NIfTI volume as a 3D float32 SimpleITK image, decoding its voxels once (nibabel; ITK's reader would
    turn NaN into 0 silently), with the geometry ITK reads from the header (:func:`with_header_geometry`).

    Raises:
        StudyError: unreadable or truncated file, not 3D (a trailing singleton 4th axis is accepted), or NaN/infinite
            voxels.
    """
    fname = str(path)
    if not fname.lower().endswith((".nii", ".nii.gz")):  # another ITK format: ITK reads it
        try:
            image = sitk.ReadImage(fname, sitk.sitkFloat32)
        except RuntimeError as err:
            raise StudyError(f"{fname}: unreadable as an image ({str(err).strip().splitlines()[-1]})") from err
        array, affine = sitk.GetArrayFromImage(image).transpose(2, 1, 0), affine_ras(image)
    else:
        array, affine = None, None
    try:
        if array is None:
            img = nib.load(fname)
            array, affine = np.asarray(img.dataobj, dtype=np.float32), img.affine
    except Exception as err:  # nibabel raises several types for unreadable or truncated files
        raise StudyError(f"{fname}: unreadable as NIfTI ({type(err).__name__}: {err})") from err
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise StudyError(f"{fname}: expected a 3D volume (or 4D with a singleton 4th axis), got shape {array.shape}")
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise StudyError(f"{fname}: holds {bad} NaN or infinite voxels")
    return with_header_geometry(image_from_array(array, affine), fname)
