"""Every file the bundle writes goes through here: written to a temporary name beside the target, then renamed onto
it, so that an interrupted run never leaves a half-written file (and a study whose last file exists is complete).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

PARTIAL = ".partial-"
"""Marks the temporary files of :func:`atomic_path`."""


def remove_partials(folder: str | os.PathLike) -> int:
    """Remove the temporary files a killed run left in ``folder`` (not below it); returns how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.iterdir() if p.is_file() and p.name.startswith(".") and PARTIAL in p.name]
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def _umask_mode() -> int:
    """The permission bits a newly created file gets under the process umask (mkstemp alone would give 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary file name beside ``path`` (``.<name>.partial-XXXX``); on success it is renamed onto
    ``path``, on failure removed.

    Every file the bundle writes goes through this, so an interrupted run never leaves a half-written file under a
    real name. A process killed outright (SIGKILL) cannot remove its temporary file: the next run that writes into
    the folder removes it (:func:`remove_partials`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{PARTIAL}", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_nifti(
    array: np.ndarray, affine: np.ndarray, path: str | os.PathLike, dtype: np.dtype | type = np.float32
) -> Path:
    """Write ``array`` (H, W, D) with ``affine`` (4x4, RAS world) to ``path`` atomically."""
    img = nib.Nifti1Image(np.asarray(array).astype(dtype), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return Path(path)
