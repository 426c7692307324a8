"""One collector of post-processed maps, for the workflows that score many studies and then compute on all of them:
``run evaluate`` (the metrics of :mod:`scripts.report`) and ``run calibrate`` (the thresholds and the normative model
of :mod:`scripts.calibration`).

The evaluator post-processes each study with inference's named steps (``post_order`` in ``configs/inference.yaml``).
Each workflow adds one step by name where it takes the map, ``post#collect`` (MONAI's ``CopyItemsd``: ``pred`` copied
to ``collected_map``): evaluation after ``mask_brain`` (its metrics apply the median filters themselves), calibration
after ``median_filter`` (the map that inference thresholds). Steps that follow, such as the inversion to the study's
own grid when evaluation also writes the study outputs, leave that copy as it was. :class:`MapCollector`, an ignite
handler on the evaluator (the configs' ``handlers``), reads it with the study's image, label and name after each
iteration and keeps one :class:`~scripts.metrics.Subject` per study, on the scoring grid. Evaluation and calibration
configure this one class with different options.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from scipy import ndimage
from scripts.errors import StudyError
from scripts.files import atomic_write_bytes
from scripts.grid import voxel_ml
from scripts.intensity import brain_mask
from scripts.metrics import Subject, binarize_label
from scripts.studies import study_name

LABEL_MARGIN = 3
"""Voxels within this many voxels of a study's label are not counted as healthy (:class:`MapCollector`'s
``healthy``)."""


def _identity(x: Any) -> Any:
    return x


def load_maps(path: str | os.PathLike) -> Subject:
    """A :class:`~scripts.metrics.Subject` from a ``maps/<name>.npz`` written by :class:`MapCollector` (its label is
    None when the study had none)."""
    with np.load(path) as z:
        label = z["label"] if "label" in z.files else None
        return Subject(name=str(z["name"]), a=z["a"], label=label, mask=z["mask"])


class MapCollector:
    """Keeps each study's map, brain mask and label on the scoring grid in ``subjects`` (:class:`~scripts.metrics.
    Subject`, in the order the studies are scored): an ignite handler that :meth:`attach` puts on the evaluator, called
    after each iteration, that is after the post-processing.

    Of each study it reads one dict: the engine's batch item updated with its output item, as MONAI's post-processing
    sees them (``batch_transform`` and ``output_transform`` select those lists from ``engine.state.batch`` and
    ``engine.state.output``, the convention of MONAI's handlers), and keeps

    * ``a``: the map ``data[map_key]`` (1, H, W, D) as float32 (H, W, D);
    * ``mask``: the brain, where any channel of ``data[image_key]`` (C, H, W, D) is non-zero, bool (H, W, D);
    * ``label``: ``data[label_key]`` (1, H, W, D) made binary (label > 0.5, :func:`~scripts.metrics.binarize_label`),
      bool (H, W, D); None for a study without one;
    * ``healthy`` (with ``healthy``): the brain less the label dilated by :data:`LABEL_MARGIN` voxels (the whole brain
      without a label), bool (H, W, D);
    * ``voxel_ml``: the volume of a voxel of the grid in ml.

    About 6 bytes a voxel (7 with ``healthy``): 15 MB a study on the 128 x 128 x 155 grid.

    Args:
        map_key: the map, one channel (1, H, W, D).
        image_key: the image (C, H, W, D) whose non-zero voxels are the brain.
        label_key: the label (1, H, W, D), None or absent for a study without one.
        name_key: the study's name; ``study_<n>`` when absent.
        require_label: a study without a label fails with a StudyError (evaluation).
        healthy: also keep the healthy voxels (calibration).
        maps_dir: also write the map, label, brain mask and the grid's affine to ``maps_dir/<name>.npz``
            atomically, so that the metrics can be recomputed (:func:`load_maps`); None for none.
        batch_transform: gives the list of per-study batch dicts from ``engine.state.batch``.
        output_transform: gives the list of per-study output dicts from ``engine.state.output``.

    A study name met twice is a StudyError: names must be unique.
    """

    def __init__(
        self,
        map_key: str = "pred",
        image_key: str = "image",
        label_key: str = "label",
        name_key: str = "name",
        require_label: bool = False,
        healthy: bool = False,
        maps_dir: str | os.PathLike | None = None,
        batch_transform: Callable[[Any], Sequence[Mapping[Hashable, Any]]] = _identity,
        output_transform: Callable[[Any], Sequence[Mapping[Hashable, Any]]] = _identity,
    ) -> None:
        self.map_key, self.image_key, self.label_key, self.name_key = map_key, image_key, label_key, name_key
        self.require_label = bool(require_label)
        self.healthy = bool(healthy)
        self.maps_dir = Path(maps_dir) if maps_dir else None
        self.batch_transform, self.output_transform = batch_transform, output_transform
        self.subjects: list[Subject] = []

    def attach(self, engine: Engine) -> None:
        """Call this collector after each iteration of ``engine`` (MONAI's ``val_handlers`` call this)."""
        if not engine.has_event_handler(self, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        """Collect every study of the engine's last iteration (:meth:`collect`)."""
        batch = self.batch_transform(engine.state.batch)
        output = self.output_transform(engine.state.output)
        if isinstance(output, Mapping):  # an engine that does not decollate: one study
            batch, output = [batch], [output]
        for b, o in zip(batch, output, strict=True):
            self.collect({**b, **o})

    def add(self, subject: Subject) -> None:
        """Keep ``subject``; a StudyError when a study of its name is kept already."""
        if any(s.name == subject.name for s in self.subjects):
            raise StudyError(f"study {subject.name} was scored twice; study names must be unique")
        self.subjects.append(subject)

    def collect(self, data: Mapping[Hashable, Any]) -> Subject:
        """Keep one study of a post-processed data dict (see the class docstring); returns it."""
        name = study_name(data, self.name_key) if self.name_key in data else f"study_{len(self.subjects):04d}"
        has_label = data.get(self.label_key) is not None
        if self.require_label and not has_label:
            raise StudyError(f"study {name}: no label to evaluate against")
        a = data[self.map_key]
        if a.shape[0] != 1:
            raise ValueError(f"study {name}: expected a one-channel map (1, H, W, D), got {tuple(a.shape)}")
        image = data[self.image_key]
        mask = brain_mask(image)[0].cpu().numpy()
        label = binarize_label(data[self.label_key][0].detach().cpu().numpy()) if has_label else None
        healthy = None
        if self.healthy:
            healthy = mask.copy()
            if label is not None:
                healthy &= ~ndimage.binary_dilation(label, iterations=LABEL_MARGIN)
        subject = Subject(
            name=name,
            a=a[0].detach().cpu().numpy().astype(np.float32),
            label=label,
            mask=mask,
            healthy=healthy,
            voxel_ml=voxel_ml(image),
        )
        self.add(subject)
        if self.maps_dir is not None:
            self.save(subject, getattr(a, "affine", None))
        return subject

    def save(self, subject: Subject, affine: torch.Tensor | None) -> Path:
        """Write ``subject`` (map, label, brain mask) and the grid's ``affine`` (4, 4) to ``maps_dir/<name>.npz``."""
        affine = np.eye(4) if affine is None else np.asarray(torch.as_tensor(affine).cpu().numpy(), dtype=np.float64)
        label = {} if subject.label is None else {"label": subject.label}
        arrays = {"name": subject.name, "a": subject.a, **label, "mask": subject.mask, "affine": affine}
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        return atomic_write_bytes(buffer.getvalue(), self.maps_dir / f"{subject.name}.npz")
