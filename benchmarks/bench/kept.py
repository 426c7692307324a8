"""Results kept beside the code, for a benchmark run spread over sittings on machines that do not keep its work folder.

A step of :func:`~benchmarks.bench.jobs.cached_step` leaves its record (``table_command.json``: the command, whether it
finished, its wall time) and, for an evaluation, a few small files of figures in its folder under the work folder.
With ``Settings.keep_dir`` set, each finished step's record and small files are copied to the same place under that
folder (e.g. one in the repository, committed after each sitting), and a later run with a fresh work folder copies
them back before it decides what to run. A step found there is not run again: an evaluation that is kept needs
neither its model's weights nor its training. Only the small files travel; slice caches and maps stay in the work
folder, and so do weights unless ``Settings.keep_weights``.

With ``keep_weights``, an unfinished training travels too: its newest resumable checkpoint is copied to the kept
folder while it runs (:func:`keep_checkpoint`), beside the command it belongs to, and a later sitting with a fresh
work folder puts it back (:func:`restore_checkpoint`), so that the training resumes there rather than starting over.
When the training finishes, its kept checkpoint is removed (:func:`drop_checkpoints`): its weights are kept instead.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

from scripts.checkpoints import latest_checkpoint
from scripts.files import atomic_path, atomic_write_bytes

EVALUATION_FILES: tuple[str, ...] = ("metrics.json", "metrics_per_subject.csv", "metrics.md")
CHECKPOINT_COMMAND = "checkpoint_command.json"
"""Beside a kept checkpoint: the command (``{"command": [...]}``) of the training it belongs to."""


def kept_path(path: Path, work_dir: Path, keep_dir: str | Path) -> Path:
    """Where ``path`` (a step record or a folder under ``work_dir``) is kept: the same relative path under
    ``keep_dir``."""
    return Path(keep_dir) / path.resolve().relative_to(work_dir.resolve())


RENAMED_OPTIONS: dict[str, str] = {"--final_weights": "--weights"}
"""Options of the bundle renamed since a step was recorded (old -> new): a record made under the old name is the same
step (the bundle stopped reading ``final_weights`` in 0.9.0; records kept before then name it)."""


PINNED_OPTIONS: dict[str, tuple[tuple[str, str], ...]] = {"evaluate": (("--amp", "false"),)}
"""Options the benchmarks pin since some steps were kept, per bundle workflow: a record of the workflow without the
option was made with the value. The benchmarks pin ``--amp false`` on evaluations (December 2026); before,
inference's ``amp: auto`` chose, and every kept step was made on the project's machine of those sittings (AMD EPYC
Zen 1), which has no native bf16, so ``auto`` scored in float32 there."""

BUNDLE_RUN = ["-m", "monai.bundle", "run"]


def recorded_command(saved: dict) -> list[str] | None:
    """The command a step record holds, under the bundle's current option names (:data:`RENAMED_OPTIONS`), with the
    options pinned since it was recorded (:data:`PINNED_OPTIONS`) added where it lacks them."""
    command = saved.get("command")
    if command is None:
        return None
    command = [RENAMED_OPTIONS.get(part, part) for part in command]
    if command[:3] == BUNDLE_RUN and len(command) > 3:
        for option, value in PINNED_OPTIONS.get(command[3], ()):
            if option not in command:
                command += [option, value]
    return command


def command_form(command: Sequence[str]) -> tuple:
    """What identifies a command: for ``-m monai.bundle run WORKFLOW --key value ...``, the workflow and the set of
    its options (their order does not change what runs, as no option is given twice); any other command as it is."""
    head, options = list(command[:4]), list(command[4:])
    keys, values = options[::2], options[1::2]
    plain = len(keys) == len(values) and all(k.startswith("--") for k in keys) and len(set(keys)) == len(keys)
    if head[:3] != BUNDLE_RUN or not plain:
        return tuple(command)
    return tuple(head), tuple(sorted(zip(keys, values, strict=True)))


def same_command(saved: dict, key: Sequence[str]) -> bool:
    """Whether the step record ``saved`` holds the command ``key`` (:func:`recorded_command`, :func:`command_form`)."""
    recorded = recorded_command(saved)
    return recorded is not None and command_form(recorded) == command_form(key)


def write_record(record: Path, saved: dict) -> None:
    """Write a step record (``table_command.json``: the command, whether it finished, its wall time, ...)
    atomically, in the one form every record has."""
    atomic_write_bytes((json.dumps(saved, indent=2) + "\n").encode(), record)


def finished_record(record: Path, key: list[str]) -> dict | None:
    """The record at ``record`` when it holds the command ``key`` and says it finished; else None."""
    if not record.is_file():
        return None
    saved = json.loads(record.read_text())
    return saved if same_command(saved, key) and saved.get("finished") else None


def restore(record: Path, work_dir: Path, keep_dir: str | Path, key: list[str], files: Sequence[str]) -> bool:
    """Copy a kept, finished step of the command ``key`` (its record and ``files``) into the step folder of
    ``record`` where the work folder holds no record of its own; True when it did. A kept step of another command, or
    one without all its files, is left alone (the step runs, and is then kept anew). A step without files (a
    training, whose weights are not kept) is never restored."""
    source = kept_path(record, work_dir, keep_dir)
    if not files or record.is_file() or finished_record(source, key) is None:
        return False
    if not all((source.parent / name).is_file() for name in files):
        return False
    for name in files:  # the figures first, the record last: an interrupted copy leaves no finished record
        atomic_write_bytes((source.parent / name).read_bytes(), record.parent / name)
    atomic_write_bytes(source.read_bytes(), record)
    return True


def keep(record: Path, work_dir: Path, keep_dir: str | Path, files: Sequence[str]) -> Path:
    """Copy a finished step's ``files`` and its record from its folder to the kept folder; returns the kept record."""
    target = kept_path(record, work_dir, keep_dir)
    for name in files:
        atomic_write_bytes((record.parent / name).read_bytes(), target.parent / name)
    atomic_write_bytes(record.read_bytes(), target)
    return target


def restore_figures(store: Path, kept: Path, context: dict) -> int:
    """Merge the figures kept at ``kept`` into the JSON ``store`` (a dict of figures, key -> value) where ``kept`` was
    written for the same ``context`` (what the figures depend on: weights, studies, seeds); returns how many figures
    came back. Kept figures of another context are left alone, and the work folder's own figures win."""
    if not kept.is_file():
        return 0
    saved = json.loads(kept.read_text())
    if saved.get("context") != context:
        return 0
    figures = json.loads(store.read_text()) if store.is_file() else {}
    new = {k: v for k, v in saved["figures"].items() if k not in figures}
    if new:
        atomic_write_bytes(json.dumps({**figures, **new}).encode(), store)
    return len(new)


def keep_figures(store: Path, kept: Path, context: dict) -> None:
    """Copy the figures of the JSON ``store`` to ``kept``, with the ``context`` they were made in."""
    figures = json.loads(store.read_text())
    atomic_write_bytes(json.dumps({"context": context, "figures": figures}, indent=1, sort_keys=True).encode(), kept)


def keep_checkpoint(checkpoints: Path, work_dir: Path, keep_dir: str | Path, key: list[str]) -> Path | None:
    """Copy the newest checkpoint in the training's folder ``checkpoints`` to the kept folder, with the command
    ``key`` it belongs to, replacing the one kept before; returns the kept file, or None when there was nothing new
    (no checkpoint yet, or the newest already kept)."""
    newest = latest_checkpoint(checkpoints)
    target_dir = kept_path(checkpoints, work_dir, keep_dir)
    if newest is None or (target_dir / Path(newest).name).is_file():
        return None
    target = target_dir / Path(newest).name
    try:
        with atomic_path(target) as tmp:
            shutil.copyfile(newest, tmp)
    except FileNotFoundError:  # replaced by a newer checkpoint while copying: the next call keeps that one
        return None
    atomic_write_bytes(json.dumps({"command": key}, indent=2).encode(), target_dir / CHECKPOINT_COMMAND)
    for old in target_dir.glob("checkpoint_*.pt"):
        if old != target:
            old.unlink()
    return target


def restore_checkpoint(checkpoints: Path, work_dir: Path, keep_dir: str | Path, key: list[str]) -> Path | None:
    """Put the kept checkpoint of the training of command ``key`` back into ``checkpoints`` where that folder holds
    none; returns the restored file, or None (nothing kept, one of another command, or the work folder has its own)."""
    source_dir = kept_path(checkpoints, work_dir, keep_dir)
    kept = latest_checkpoint(source_dir)
    if kept is None or latest_checkpoint(checkpoints) is not None:
        return None
    command = source_dir / CHECKPOINT_COMMAND
    if not command.is_file() or not same_command(json.loads(command.read_text()), key):
        return None
    target = checkpoints / Path(kept).name
    with atomic_path(target) as tmp:
        shutil.copyfile(kept, tmp)
    return target


def drop_checkpoints(checkpoints: Path, work_dir: Path, keep_dir: str | Path) -> None:
    """Remove the kept checkpoints of the training whose folder is ``checkpoints`` (it finished)."""
    shutil.rmtree(kept_path(checkpoints, work_dir, keep_dir), ignore_errors=True)
