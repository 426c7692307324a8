"""The methods of the tables and their steps, each a bundle workflow: :func:`train` (``run training``),
:func:`evaluate` (``run evaluate``, figures from its ``metrics.json``), :func:`calibrate` (AutoDDPM's ``run
calibrate``) and :func:`tune_threshold` (FLAIR's ``run tune_threshold``). The last two point the workflow at a value
file in the work folder (``masking_threshold_file``, ``segmentation_threshold_file``) and read the value from it
(``scripts.values``). The specifications are shared by both tables, so that a run of one reuses the other's work.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.bench.data import Data
from benchmarks.bench.jobs import BenchmarkError, Step, bundle_command, cached_step
from benchmarks.bench.settings import DATA_NOTE, FAMILIES, Settings
from scripts.collect import load_maps
from scripts.errors import StudyError
from scripts.metrics import dice, median_filtered
from scripts.values import read_value_file


@dataclass(frozen=True)
class Method:
    """A trainable method: its training configs (merged over nothing else) and its scoring configs (``evaluate.yaml``
    is merged after them), its network preset, and training overrides beyond the common budget."""

    name: str
    train_configs: tuple[str, ...]
    score_configs: tuple[str, ...]
    dae: bool = False
    train_overrides: tuple[tuple[str, object], ...] = ()


METHODS: dict[str, Method] = {
    "dae": Method("dae", ("train.yaml", "dae_train.yaml"), ("inference.yaml", "dae.yaml"), True),
    "anoddpm": Method("anoddpm", ("train.yaml", "anoddpm_train.yaml"), ("inference.yaml", "anoddpm.yaml")),
    "autoddpm": Method("autoddpm", ("train.yaml", "autoddpm_train.yaml"), ("inference.yaml", "autoddpm.yaml")),
    "andi": Method("andi", ("train.yaml",), ("inference.yaml",), train_overrides=(("noise_type", "pyramid"),)),
    # Table 2's Gaussian-trained ANDi: the same recipe as AutoDDPM's network, but recorded as ANDi's weights (the
    # weights record their method, and ANDi's inference refuses another method's)
    "andi_gaussian": Method(
        "andi_gaussian", ("train.yaml",), ("inference.yaml",), train_overrides=(("noise_type", "gaussian"),)
    ),
}
FLAIR_CONFIGS: tuple[str, ...] = ("inference.yaml", "flair.yaml")
# FLAIR thresholding is evaluated with Yen (the main table needs no threshold): no threshold file is read, whatever
# bundle/models holds.
FLAIR_OVERRIDES: dict[str, object] = {"segmentation_threshold_file": "null"}


def preset_of(method: Method, s: Settings) -> str:
    return s.dae_preset if method.dae else s.preset


def weights_path(work_dir: Path, method: Method) -> Path:
    return work_dir / "models" / f"{method.name}.pt"


@dataclass
class Trained:
    """A trained method: its weights and budget."""

    method: Method
    weights: Path
    step: Step


def train(work_dir: Path, method: Method, s: Settings, log: Callable[[str], None] = print) -> Trained:
    """Train ``method`` with ``run training`` on the healthy set and the common budget (unless done already).

    Every method gets the same data, iterations, batch size, validation and bf16 setting; the slice cache is shared
    (``<work_dir>/cache``; the first training builds it). A killed training resumes from its checkpoint.
    """
    weights = weights_path(work_dir, method)
    overrides: dict[str, object] = {
        "dataset_dir": work_dir / "data" / "healthy" / "datalist.json",
        "output_dir": work_dir / "runs" / method.name,
        "cache_dir": work_dir / "cache",
        "weights": weights,
        "network_preset": preset_of(method, s),
        "image_size": s.image_size,
        "register": False,
        "batch_size": s.batch_size,
        "epoch_iterations": s.epoch_iterations,
        "max_epochs": s.max_epochs,
        "checkpoint_interval": s.epoch_iterations,
        "val_batches": s.val_batches,
        "autocast": s.autocast,
        **dict(method.train_overrides),
    }
    cmd = bundle_command("training", method.train_configs, overrides)
    step = cached_step(
        f"train_{method.name}", cmd, work_dir / "models" / f"{method.name}.json", weights.is_file, s, work_dir, log=log
    )
    return Trained(method, weights, step)


@dataclass
class Evaluation:
    """The figures of one ``run evaluate``: ``metrics[median_filter]`` is that row of ``metrics.json``."""

    name: str
    family: str
    out_dir: Path
    metrics: dict[int, dict[str, float | None]]
    step: Step


def evaluate(
    work_dir: Path,
    name: str,
    family: str,
    data: Data,
    configs: Sequence[str],
    overrides: Mapping[str, object],
    s: Settings,
    log: Callable[[str], None] = print,
) -> Evaluation:
    """``run evaluate`` of ``configs`` + ``evaluate.yaml`` on the ``family`` test set (unless done already with the
    same command); the metrics are read from its ``metrics.json``."""
    out = work_dir / "eval" / f"{name}_{family}"
    full = {
        "dataset_dir": data.test[family],
        "output_dir": out,
        "image_size": s.image_size,
        "register": False,
        # The note names the module these commands came from before benchmarks/bench/; it is part of every
        # evaluation's command, which keys the cache: changing it redoes every evaluation of an existing work folder.
        "report_note": f"{DATA_NOTE}: {FAMILIES[family]} test set of benchmarks/tables.py ({name})",
        **overrides,
    }
    cmd = bundle_command("evaluate", [*configs, "evaluate.yaml"], full)
    metrics_file = out / "metrics.json"
    step = cached_step(
        f"eval_{name}_{family}", cmd, out / "table_command.json", metrics_file.is_file, s, work_dir, log=log
    )
    rows = json.loads(metrics_file.read_text())["metrics"]
    rows = [r for r in rows if r.get("voxel_set") == rows[0].get("voxel_set")]  # the scoring's own voxel set
    return Evaluation(name, family, out, {int(r["median_filter"]): r for r in rows}, step)


def scoring_overrides(trained: Trained, s: Settings) -> dict[str, object]:
    """What every scoring of a trained method is given: its weights and its network preset."""
    return {"weights": trained.weights, "network_preset": preset_of(trained.method, s)}


def andi_overrides(trained: Trained, s: Settings, aggregation: str, reduction: str, noise: str) -> dict[str, object]:
    """ANDi scoring (t in [75, 200] every ``t_stride``) with the three Table 2 switches, all given explicitly so that
    Table 1 and Table 2 build the same command for the same configuration (and reuse each other's evaluation)."""
    return {
        **scoring_overrides(trained, s),
        "t_stride": s.t_stride,
        "aggregation": aggregation,
        "channel_reduction": reduction,
        "scoring_noise": noise,
    }


def andi_name(training_noise: str, aggregation: str, reduction: str, noise: str) -> str:
    """Evaluation name of an ANDi configuration, e.g. ``andi_train-pyramid_geometric_max_gaussian``."""
    return f"andi_train-{training_noise}_{aggregation}_{reduction}_{noise}"


def anoddpm_overrides(trained: Trained, s: Settings) -> dict[str, object]:
    return {**scoring_overrides(trained, s), "t_upper": s.anoddpm_t_upper}


def autoddpm_chain(s: Settings) -> dict[str, object]:
    return {
        "t_upper": s.autoddpm_t_upper,
        "t_inpaint": s.autoddpm_t_inpaint,
        "resamplings": s.autoddpm_resamplings,
    }


def autoddpm_overrides(trained: Trained, s: Settings, tau: Sequence[float]) -> dict[str, object]:
    """AutoDDPM scoring with tau given explicitly (so that the evaluation's command, which keys its cache, holds it)."""
    return {
        **scoring_overrides(trained, s),
        **autoddpm_chain(s),
        "masking_threshold": "[" + ", ".join(f"{t:.6g}" for t in tau) + "]",
    }


def _value_file_step(
    name: str,
    cmd: Sequence[str],
    folder: Path,
    value_file: Path,
    expected: Mapping[str, object],
    weights: Path | None,
    s: Settings,
    work_dir: Path,
    log: Callable[[str], None],
) -> Step:
    """A step whose workflow writes ``value_file``: run (unless done with a file that fits ``expected`` and
    ``weights``), then the value read from that file into ``result``."""

    def fits() -> bool:
        try:
            read_value_file(value_file, expected, weights)
        except StudyError:
            return False
        return True

    step = cached_step(name, cmd, folder / "table_command.json", fits, s, work_dir, log=log)
    try:
        step.result = read_value_file(value_file, expected, weights)
    except StudyError as err:
        raise BenchmarkError(f"{name}: {err}") from err
    return step


def calibrate(work_dir: Path, data: Data, trained: Trained, s: Settings, log: Callable[[str], None] = print) -> Step:
    """AutoDDPM's ``run calibrate``: tau per channel from the healthy validation studies, written to a value file in
    ``<work_dir>/eval/autoddpm_calibration``; ``result["masking_threshold"]`` is tau."""
    folder = work_dir / "eval" / "autoddpm_calibration"
    value_file = folder / "masking_threshold.json"
    overrides = {
        **scoring_overrides(trained, s),
        **autoddpm_chain(s),
        "dataset_dir": data.healthy,
        "output_dir": folder,
        "image_size": s.image_size,
        "register": False,
        "calibration_slices": s.calibration_slices,
        "masking_threshold_file": value_file,
    }
    cmd = bundle_command("calibrate", METHODS["autoddpm"].score_configs, overrides)
    expected = {"t_upper": s.autoddpm_t_upper, "image_size": s.image_size, "calibration_slices": s.calibration_slices}
    return _value_file_step("calibrate_autoddpm", cmd, folder, value_file, expected, trained.weights, s, work_dir, log)


def tune_threshold(
    work_dir: Path, data: Data, family: str, median_filter: int, s: Settings, log: Callable[[str], None] = print
) -> Step:
    """FLAIR's ``run tune_threshold`` on the labelled validation studies of ``family``, after the median filter
    ``median_filter``, written to a value file in ``<work_dir>/eval/flair_tuning``; ``result`` holds
    ``threshold``, ``dice`` and ``studies``."""
    folder = work_dir / "eval" / "flair_tuning" / f"{family}_mf{median_filter}"
    value_file = folder / "threshold.json"
    overrides = {
        "dataset_dir": data.val[family],
        "datalist_key": "testing",
        "output_dir": work_dir / "eval" / "flair_tuning",
        "image_size": s.image_size,
        "register": False,
        "median_filter_size": median_filter,
        "segmentation_threshold_file": value_file,
    }
    cmd = bundle_command("tune_threshold", FLAIR_CONFIGS, overrides)
    expected = {"median_filter_size": median_filter, "image_size": s.image_size}
    name = f"tune_flair_{family}_mf{median_filter}"
    return _value_file_step(name, cmd, folder, value_file, expected, None, s, work_dir, log)


def dice_at_threshold(evaluation: Evaluation, threshold: float, median_filter: int) -> float:
    """Pooled Dice over the brain voxels of an evaluation's test set (its saved maps) of ``map > threshold`` after
    the 3D median filter ``median_filter``: the segmentation FLAIR thresholding would give with a tuned threshold."""
    preds, truths = [], []
    for path in sorted((evaluation.out_dir / "maps").glob("*.npz")):
        subject = load_maps(path)
        preds.append(median_filtered(subject.a, median_filter)[subject.mask] > threshold)
        truths.append(subject.label[subject.mask])
    if not preds:
        raise BenchmarkError(f"no saved maps in {evaluation.out_dir / 'maps'}")
    return dice(np.concatenate(preds), np.concatenate(truths))
