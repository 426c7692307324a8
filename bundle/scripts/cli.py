"""Command line for what is not a bundle workflow (run from the ``bundle`` folder: ``python -m scripts.cli --help``).

    python -m scripts.cli make-demo-data OUT_DIR [--n_healthy 20] [--n_anomalous 2] [--lesion tumour,ms]
    python -m scripts.cli make-demo-study OUT_DIR [--lesion tumour] [--seed 1000]
    python -m scripts.cli make-datalist BRATS_DIR OUT_JSON [--splits_dir DIR] [--absolute]
    python -m scripts.cli make-cohort-datalist "[FOLDER,...]" OUT_JSON [--modalities "[t1,t2,pd]"]   (docs/ixi.md)
    python -m scripts.cli build-histogram-landmarks DATASET_DIR OUT_JSON [--datalist_key training]
    python -m scripts.cli record-weights WEIGHTS OUT --settings '{"method": "ANDi", "diffusion_range": [0, 1], ...}'
    python -m scripts.cli upgrade-value-file FILE --config_file "['configs/inference.yaml',...]" [--settings_key KEY]
    python -m scripts.cli zoo-submission OUT --url_base URL [--name andi_brain_mri_anomaly_detection]

Every image the make-demo commands make is synthetic (made from the MNI152 templates that ship with nilearn).
``make-datalist`` turns an unpacked BraTS 2021 download into a datalist JSON for the paper's splits.
"""

from __future__ import annotations

import sys
from pathlib import Path

import fire
from scripts import MODALITIES, cohorts, histogram
from scripts import zoo_submission as zoo
from scripts.atlas import nilearn_data_dir
from scripts.datalists import SPLITS_DIR, DatalistError, make_brats21_datalist
from scripts.errors import StudyError
from scripts.synthetic import make_dataset, make_study, write_study

SIZES = {"full": ((240, 240, 155), (1.0, 1.0, 1.0)), "small": ((96, 96, 62), (2.5, 2.5, 2.5))}


def _size(size: str) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """The made study's shape and spacing, once the templates it is made from are known to be there."""
    if size not in SIZES:
        raise fire.core.FireError(f"--size must be one of {sorted(SIZES)}, got {size!r}")
    try:
        nilearn_data_dir()  # the MNI152 templates of nilearn, an optional package (the 'demo' extra)
    except FileNotFoundError as err:
        raise fire.core.FireError(str(err)) from err
    return SIZES[size]


def make_demo_data(
    out_dir: str,
    n_healthy: int = 20,
    n_anomalous: int = 2,
    lesion: str = "tumour",
    n_validation: int = 2,
    seed: int = 0,
    size: str = "full",
    modalities=MODALITIES,
) -> str:
    """Make a synthetic dataset: healthy studies for training/validation, anomalous ones for testing.

    Writes one folder per study (BraTS-style file names) and ``OUT_DIR/datalist.json`` with the lists
    ``training``, ``validation`` and ``testing``. Existing studies are kept, so an interrupted run resumes.

    Args:
        out_dir: folder to write to.
        n_healthy: healthy studies (training + validation).
        n_anomalous: anomalous studies (testing).
        lesion: the lesion families of the anomalous studies (``n_anomalous`` of each): ``tumour``, ``ms``,
            ``cortical``, ``bright``, or several separated by commas (``tumour,ms``).
        n_validation: healthy studies held out for the validation loss.
        seed: seed of the first study.
        size: ``full`` (240x240x155, 1 mm, as BraTS) or ``small`` (96x96x62, 2.5 mm, for quick tries).
        modalities: the made contrasts written, e.g. ``"[t1,t2,pd]"`` (PD is derived from the made T2).
    """
    shape, spacing = _size(size)
    path = make_dataset(
        out_dir, n_healthy, n_anomalous, lesion, seed, shape, spacing, n_validation, modalities=list(modalities)
    )
    print(f"synthetic dataset written; datalist: {path}")
    return str(path)


def make_demo_study(out_dir: str, lesion: str = "tumour", seed: int = 1000, name: str = "", size: str = "full") -> str:
    """Make one synthetic anomalous study in ``OUT_DIR/<name>/`` (the bundle's ``demo`` folder is made this way).

    Args:
        out_dir: folder that receives the study folder.
        lesion: ``tumour``, ``ms``, ``cortical``, ``bright`` or ``none``.
        seed: the study's seed.
        name: study name (default ``synthetic_<lesion>_<seed>``).
        size: ``full`` or ``small``.
    """
    shape, spacing = _size(size)
    name = name or f"synthetic_{lesion}_{seed}"
    paths = write_study(make_study(seed, lesion, shape, spacing), Path(out_dir), name)
    print(f"synthetic study written to {Path(paths['t1']).parent}")
    return str(Path(paths["t1"]).parent)


def make_cohort_datalist(
    folders, out_json: str, modalities=("t1", "t2", "pd"), validation_fraction: float = 0.1, absolute: bool = False
) -> str:
    """Write a datalist JSON ("training", "validation") of a healthy cohort whose files carry the study id in their
    names, in one or more folders searched recursively (IXI: ``IXI002-Guys-0828-T1.nii.gz`` in ``IXI-T1/``, its T2
    and PD in ``IXI-T2/`` and ``IXI-PD/``; a brain mask ``IXI002-Guys-0828-T1_mask.nii.gz`` joins its study). See
    ``docs/ixi.md``.

    Args:
        folders: a folder, or several (``"[IXI-T1,IXI-T2,IXI-PD,masks]"``).
        out_json: the datalist JSON to write.
        modalities: the modalities every study must have (others are left out).
        validation_fraction: the share of studies (the last ones by name, at least one) held out for validation.
        absolute: write absolute paths instead of paths relative to the JSON's folder.
    """
    try:
        summary = cohorts.make_cohort_datalist(
            [folders] if isinstance(folders, str) else list(folders),
            out_json,
            [modalities] if isinstance(modalities, str) else list(modalities),
            float(validation_fraction),
            bool(absolute),
        )
    except StudyError as err:
        raise fire.core.FireError(str(err)) from err
    counts = summary["counts"]
    print(f"datalist written: {summary['path']} (training {counts['training']}, validation {counts['validation']})")
    if summary["left_out"]:
        print(f"note: {len(summary['left_out'])} subject(s) left out, e.g. {summary['left_out'][0]}")
    return str(summary["path"])


def make_datalist(brats_dir: str, out_json: str, splits_dir: str = "", absolute: bool = False) -> str:
    """Write a datalist JSON ("training", "validation", "testing") for the paper's BraTS 2021 splits.

    BRATS_DIR is the unpacked BraTS 2021 training data: one folder per subject,
    ``BraTS2021_XXXXX/BraTS2021_XXXXX_{t1,t1ce,t2,flair,seg}.nii.gz``. Every item of the JSON has the keys
    ``name``, ``t1``, ``t1c``, ``t2``, ``flair`` and ``label``. Paths are relative to the JSON's folder unless
    ``--absolute`` is given. A subject of a split with no folder or a missing file stops the command with the
    problems named; subject folders that are in no split are counted and left out.

    Args:
        brats_dir: folder holding the ``BraTS2021_XXXXX`` subject folders.
        out_json: the datalist JSON to write, e.g. ``datalist.json``.
        splits_dir: folder with ``train.csv``, ``val.csv``, ``test.csv`` (default: the bundle's copy of the paper's
            splits in ``data/brats21_splits``: 938 / 62 / 251 subjects).
        absolute: write absolute paths instead of paths relative to the JSON's folder.
    """
    try:
        summary = make_brats21_datalist(str(brats_dir), str(out_json), str(splits_dir or SPLITS_DIR), bool(absolute))
    except DatalistError as err:
        raise fire.core.FireError(str(err)) from err
    counts = summary["counts"]
    print(
        f"datalist written: {summary['path']} "
        f"(training {counts['training']}, validation {counts['validation']}, testing {counts['testing']} subjects)"
    )
    unused = summary["unused"]
    if unused:
        print(f"note: {len(unused)} subject folder(s) in {brats_dir} are in no split and were left out")
    return str(summary["path"])


def build_histogram_landmarks(
    dataset_dir: str, out_json: str, datalist_key: str = "training", max_studies: int = 50, modalities=MODALITIES
):
    """Build the Nyul histogram landmarks (one set per modality) that ``--histogram_matching true`` matches to.

    DATASET_DIR is a datalist JSON (its ``datalist_key`` list) or a folder of study folders whose studies are each on
    one grid, e.g. the output of ``run preprocess``. Landmarks are intensity percentiles of the non-zero (brain)
    voxels, averaged over at most ``max_studies`` studies. Ship the file as ``models/histogram_landmarks.json``.

    Args:
        dataset_dir: the training datalist or study folder.
        out_json: the landmarks file to write.
        datalist_key: the datalist's list to read.
        max_studies: at most this many studies are read.
        modalities: the modalities to build landmarks for (e.g. ``"[t1,t2,pd]"``); the default four by default.
    """
    try:
        path = histogram.build_histogram_landmarks(
            dataset_dir, out_json, datalist_key, max_studies=int(max_studies), modalities=list(modalities)
        )
    except StudyError as err:
        raise fire.core.FireError(str(err)) from err
    print(f"histogram landmarks written: {path}")
    return str(path)


def record_weights(weights: str, out: str, settings: str | dict = "{}") -> str:
    """Write WEIGHTS to OUT with the training settings recorded beside the weights (``scripts.checkpoints``).

    For weights saved before the bundle recorded its settings (a bare ``state_dict``), or to correct a record. Give
    every setting that inference checks (``weights_settings`` of ``configs/inference.yaml``): ``method``,
    ``diffusion_range`` (the bundle before version 0.2 trained on ``[0, 1]``), ``modalities``, ``image_size``, and
    the scheduler by its arguments (``num_train_timesteps``, ``beta_start``, ``beta_end``, and ``schedule``,
    ``schedule_base_size``, ``prediction_type`` where they are not the paper's), which are recorded as the scheduler
    they make describes itself (``scripts.checkpoints.upgraded``). Settings already recorded are kept unless given
    again.

    Args:
        weights: the weights file (a bare state_dict, ``models/model.pt``, or a training checkpoint: its EMA weights).
        out: the file to write (atomically); may be WEIGHTS itself.
        settings: a JSON object (or a dict, from fire) of the settings to record.
    """
    import json

    import torch
    from scripts.checkpoints import SETTINGS_KEY, WEIGHTS_KEY, save_weights, upgraded

    given = json.loads(settings) if isinstance(settings, str) else dict(settings)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise fire.core.FireError(f"{weights}: not a weights file (a {type(state).__name__})")
    recorded = dict(state.get(SETTINGS_KEY) or {})
    for key in ("ema", WEIGHTS_KEY):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    path = save_weights(state, out, upgraded({**recorded, **given}))
    print(f"weights with their settings written: {path}")
    return str(path)


def upgrade_value_file(
    path: str,
    config_file: str | list[str],
    bundle_root: str = ".",
    settings_key: str = "calibration_settings",
    weights_key: str | None = "weights",
    out: str | None = None,
) -> str:
    """Write a value file made before version 0.7.0 (a calibration, AutoDDPM's tau, FLAIR's threshold) in this
    version's form, after checking that it fits the configuration ``config_file`` (``scripts.upgrade``).
    ``settings_key``: ``calibration_settings``, ``masking_calibration_settings`` (autoddpm.yaml) or
    ``threshold_settings`` (flair.yaml, with ``--weights_key null``)."""
    from scripts import is_unset
    from scripts.upgrade import upgrade_value_file as upgrade

    files = [config_file] if isinstance(config_file, str) else list(config_file)
    try:
        target = upgrade(path, files, bundle_root, settings_key, None if is_unset(weights_key) else weights_key, out)
    except StudyError as err:
        raise fire.core.FireError(str(err)) from err
    print(f"value file written in this version's form: {target}")
    return str(target)


def zoo_submission(out_dir: str, url_base: str, name: str = zoo.NAME) -> str:
    """Write the folder a MONAI model-zoo pull request adds (``OUT/models/<name>``: the bundle without its large
    files, ``large_files.yml`` with ``URL/<path>`` for each) and ``OUT/bundle_custom_data.md`` (the zoo CI entries
    to add). See docs/zoo_submission.md."""
    try:
        target = zoo.write_submission(out_dir, url_base, name=name)
    except zoo.SubmissionError as err:
        raise fire.core.FireError(str(err)) from err
    print(f"zoo submission written: {target} (and {Path(out_dir) / 'bundle_custom_data.md'})")
    return str(target)


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m scripts.cli COMMAND ...``."""
    commands = {
        "make-demo-data": make_demo_data,
        "make-demo-study": make_demo_study,
        "make-datalist": make_datalist,
        "make-cohort-datalist": make_cohort_datalist,
        "build-histogram-landmarks": build_histogram_landmarks,
        "record-weights": record_weights,
        "upgrade-value-file": upgrade_value_file,
        "zoo-submission": zoo_submission,
    }
    fire.Fire(commands, command=argv if argv is not None else sys.argv[1:], name="python -m scripts.cli")


if __name__ == "__main__":
    main()
