"""Checkpoint files: weights saved atomically, loaded safely (``weights_only=True``) with clear errors.

Two kinds of file are written by training:

* ``<ckpt_dir>/checkpoint_*.pt`` (ignite ``Checkpoint`` through MONAI's ``CheckpointSaver``): a dict with the
  network, its EMA copy, the optimiser, the LR scheduler and the trainer state, to resume a run;
* ``models/model.pt``: ``{"model": the EMA network's state_dict, "settings": {...}}``, which inference loads. The
  settings are what the weights were trained under and scoring must repeat, read from the configured objects
  (``weights_settings``, :func:`scripts.settings.settings_of`): the method, the diffusion range (``diffusion_range``:
  the authors train on 2x - 1), the modalities and their order, the slice size and the scheduler as it describes
  itself (``scheduler.schedule``, ``scheduler.schedule_args.beta_end``, ...); plus, for the record
  (``training_record`` of train.yaml), the network's shape, the training noise and the preprocessing of the training
  slices. Every value is a plain number, string or list, so ``torch.load(weights_only=True)`` reads the file, and
  MONAI's ``CheckpointLoader`` with ``load_dict={"model": network}`` loads its weights.

Weights saved before version 0.7.0 (the shipped demo weights among them) recorded the scheduler's arguments by config
key (``num_train_timesteps``, ``beta_start``, ...): :func:`upgraded` reads such a record as the description of the
scheduler those arguments make.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.handlers import DiskSaver
from monai.handlers import CheckpointSaver
from scripts.diffusion import make_scheduler
from scripts.errors import StudyError
from scripts.files import atomic_path, remove_partials
from scripts.settings import differences, joined, plain, settings_of


def latest_checkpoint(ckpt_dir: str | os.PathLike) -> str | None:
    """The resumable checkpoint with the highest iteration in ``ckpt_dir``, or None when there is none."""
    folder = Path(ckpt_dir)
    if not folder.is_dir():
        return None
    found = []
    for path in folder.glob("checkpoint_*.pt"):
        numbers = re.findall(r"=(\d+)", path.name)
        found.append((int(numbers[-1]) if numbers else -1, path))
    return str(max(found)[1]) if found else None


WEIGHTS_KEY = "model"
SETTINGS_KEY = "settings"
# Settings recorded only since the v2 profile (the schedule and what the network predicts): weights saved before
# (the shipped demo weights among them) were all trained under these values, so a record without the key reads so.
LEGACY_DEFAULTS: dict[str, object] = {"schedule": "linear_beta", "schedule_base_size": 64, "prediction_type": "epsilon"}
LEGACY_SCHEDULER_KEYS = ("num_train_timesteps", "beta_start", "beta_end", *LEGACY_DEFAULTS)
"""The scheduler's arguments as records before version 0.7.0 named them (with ``image_size``, which stays a key)."""


def upgraded(recorded: Mapping[str, object]) -> dict[str, object]:
    """``recorded`` in this version's form: where it names the scheduler's arguments by key (before version 0.7.0),
    they are replaced by the description of the scheduler they make (``scripts.diffusion.make_scheduler``; a key of
    :data:`LEGACY_DEFAULTS` it lacks reads as its legacy value). Any other record is returned as it is."""
    if not any(key in recorded for key in LEGACY_SCHEDULER_KEYS):
        return dict(recorded)
    args = {**LEGACY_DEFAULTS, **{k: recorded[k] for k in (*LEGACY_SCHEDULER_KEYS, "image_size") if k in recorded}}
    out = {k: v for k, v in recorded.items() if k not in LEGACY_SCHEDULER_KEYS}
    return {**out, **settings_of({"scheduler": make_scheduler(**args)})}


def save_weights(
    weights: Mapping[str, torch.Tensor], path: str | os.PathLike, settings: Mapping[str, object] | None = None
) -> Path:
    """Save a ``state_dict`` to ``path`` atomically (temporary file in the same folder, then rename): bare, or with
    ``settings`` as ``{"model": state_dict, "settings": settings}`` (plain values only)."""
    weights = {k: v.detach().cpu() for k, v in weights.items()}
    content = weights if settings is None else {WEIGHTS_KEY: weights, SETTINGS_KEY: plain(dict(settings))}
    with atomic_path(path) as tmp:
        torch.save(content, tmp)
    return Path(path)


def save_state_dict(
    network: torch.nn.Module, path: str | os.PathLike, settings: Mapping[str, object] | None = None
) -> Path:
    """Save ``network``'s weights (the wrapped module's under DDP) with :func:`save_weights`."""
    module = network.module if hasattr(network, "module") else network
    return save_weights(module.state_dict(), path, settings)


def check_settings(path: str | os.PathLike, recorded: Mapping | None, expected: Mapping[str, object]) -> None:
    """Raise StudyError, naming the file and each difference, unless ``recorded`` (read with :func:`upgraded`) agrees
    with ``expected`` on every key of ``expected``."""
    if not expected:
        return
    if recorded is None:
        raise StudyError(
            f"{path}: the weights record no training settings (they predate the record, or were not saved by this "
            f"bundle's training), so the scoring settings {sorted(expected)} cannot be checked against them; retrain, "
            "or record what they were trained with: python -m scripts.cli record-weights WEIGHTS OUT --settings '{...}'"
        )
    differ = differences(upgraded(recorded), expected, made="trained with")
    if differ:
        raise StudyError(f"{path}: the weights do not fit this configuration ({joined(differ)})")


def load_network(
    network: torch.nn.Module,
    path: str | os.PathLike,
    key: str | None = None,
    expected: Mapping[str, object] | None = None,
) -> torch.nn.Module:
    """Load weights from ``path`` into ``network`` with ``torch.load(weights_only=True)``.

    ``path`` is ``models/model.pt`` (weights and their settings), a bare ``state_dict``, or a training checkpoint
    dict, from which ``key`` (default: ``"ema"`` if present, else ``"model"``) is taken. With ``expected``, the
    settings recorded with the weights must agree with it on each of its keys (:func:`check_settings`).

    Raises:
        StudyError (a ValueError): no file at ``path``, the file is not a checkpoint, its settings differ from
            ``expected`` (or are missing), or its weights do not fit the network (names the file and the first
            mismatching parameters).
    """
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"{path}: no checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise StudyError(f"{path}: not a loadable weights file ({type(err).__name__}: {err})") from err
    if not isinstance(state, dict):
        raise StudyError(f"{path}: expected a state_dict, got {type(state).__name__}")
    recorded = state.get(SETTINGS_KEY) if isinstance(state.get(SETTINGS_KEY), dict) else None
    check_settings(path, recorded, dict(expected or {}))
    if key is None and "ema" in state and isinstance(state["ema"], dict):
        key = "ema"
    if key is None and "model" in state and isinstance(state["model"], dict):
        key = "model"
    if key is not None:
        if key not in state:
            raise StudyError(f"{path}: checkpoint has no '{key}' entry (entries: {sorted(state)})")
        state = state[key]
    own = network.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(
            part
            for part in (
                f"missing {missing[:3]}" if missing else "",
                f"unexpected {unexpected[:3]}" if unexpected else "",
                (
                    f"shape mismatch {[(k, tuple(state[k].shape), tuple(own[k].shape)) for k in wrong[:3]]}"
                    if wrong
                    else ""
                ),
            )
            if part
        )
        raise StudyError(f"{path}: weights do not fit the configured network ({detail}); wrong checkpoint or preset?")
    network.load_state_dict(state)
    return network


class SaveFinalWeights:
    """Ignite handler: when training COMPLETES (not on an exception), save ``network``'s weights to ``path``, with
    the ``settings`` they were trained under (see the module docstring)."""

    def __init__(
        self, network: torch.nn.Module, path: str | os.PathLike, settings: Mapping[str, object] | None = None
    ) -> None:
        self.network = network
        self.path = path
        self.settings = None if settings is None else plain(dict(settings))
        remove_partials(Path(path).parent)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if getattr(engine.state, "rank", 0) == 0 and int(os.environ.get("RANK", "0")) == 0:
            save_state_dict(self.network, self.path, self.settings)
            engine.logger.info(f"saved final weights to {self.path}")


class _AtomicDiskSaver(DiskSaver):
    """ignite's ``DiskSaver`` writing through :func:`scripts.files.atomic_path` (a recognisable temporary file that
    the next run removes when a kill left it)."""

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        with atomic_path(Path(self.dirname) / filename) as tmp:
            torch.save(checkpoint, tmp)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` whose interval checkpoints are written atomically (temporary file, then rename).

    MONAI's own saver writes in place (``atomic=False``), so a run killed while saving leaves a truncated
    ``checkpoint_*.pt`` that the next run cannot resume from. A temporary file a kill left behind is removed when the
    saver starts.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        remove_partials(self.save_dir)
        if getattr(self, "_interval_checkpoint", None) is not None:
            self._interval_checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, require_empty=False)
