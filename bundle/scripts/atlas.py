"""The atlas a study is registered to and scored on: a choice (``atlas`` in ``configs/inference.yaml``).

* ``sri24`` (the default): the SRI24 T1 brain, "BraTS space" (240 x 240 x 155 at 1 mm), as BraTS 2021 studies come;
  shipped in ``bundle/atlas`` with its notice (``docs/data_license.txt``).
* ``mni152``: the MNI152 2009a symmetric T1 template (197 x 233 x 189 at 1 mm, skull-stripped) that ships inside the
  ``nilearn`` wheel; BraTS 2025 moved adult glioma to MNI152 space.

Each atlas is its own lattice: ``register: auto`` passes a study through when it already lies on the chosen atlas's
lattice, and the study is scored on that grid. A path to any other skull-stripped T1 atlas works too.
"""

from __future__ import annotations

import importlib.util
import os
from functools import lru_cache
from pathlib import Path

import SimpleITK as sitk  # noqa: N813
from scripts.grid import Grid, read_grid, read_image

SRI24_FILE = "sri24_t1_brain.nii.gz"
MNI152_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
ATLASES: tuple[str, ...] = ("sri24", "mni152")

PathLike = str | os.PathLike


def nilearn_data_dir() -> Path:
    """The folder of the nilearn wheel that holds the MNI152 2009a templates, found without importing nilearn (a
    submodule's ``find_spec`` would import the package). nilearn is optional: pyproject.toml's 'demo' extra."""
    spec = importlib.util.find_spec("nilearn")
    locations = list(spec.submodule_search_locations or []) if spec else []
    folder = Path(locations[0]) / "datasets" / "data" if locations else None
    if folder is None or not folder.is_dir():
        raise FileNotFoundError(
            "nilearn is not installed: the MNI152 templates of its wheel are needed (pip install nilearn, or the "
            "bundle's 'demo' extra)"
        )
    return folder


def atlas_path(atlas: str | PathLike | None = None) -> Path:
    """The file of ``atlas``: a name of ``ATLASES`` (None: ``sri24``) or a path to an atlas file."""
    if atlas is None or str(atlas) == "sri24":
        return Path(__file__).parents[1] / "atlas" / SRI24_FILE
    if str(atlas) == "mni152":
        return nilearn_data_dir() / MNI152_FILE
    path = Path(atlas)
    if not path.is_file():
        raise FileNotFoundError(f"{atlas}: no such atlas; use one of {ATLASES} or the path of an atlas file")
    return path


@lru_cache(maxsize=4)
def _cached_atlas(path: str) -> sitk.Image:
    return read_image(path)


def load_atlas(atlas: str | PathLike | sitk.Image | None = None) -> sitk.Image:
    """The atlas as a 3D float32 image (``atlas`` as in :func:`atlas_path`, or an image already).

    Do not modify the returned image in place: reads are cached.
    """
    if isinstance(atlas, sitk.Image):
        return sitk.Cast(atlas, sitk.sitkFloat32)
    return _cached_atlas(str(atlas_path(atlas)))


def atlas_grid(atlas: str | PathLike | sitk.Image | None = None) -> Grid:
    """The lattice of ``atlas``, from its header."""
    return Grid.of(atlas) if isinstance(atlas, sitk.Image) else read_grid(atlas_path(atlas))
