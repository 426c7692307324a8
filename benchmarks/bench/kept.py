"""Results kept beside the code, for a benchmark run spread over sittings on machines that do not keep its work folder.

A step of :func:`~benchmarks.bench.jobs.cached_step` leaves its record (``table_command.json``: the command, whether it
finished, its wall time) and, for an evaluation, a few small files of figures in its folder under the work folder.
With ``Settings.keep_dir`` set, each finished step's record and small files are copied to the same place under that
folder (e.g. one in the repository, committed after each sitting), and a later run with a fresh work folder copies
them back before it decides what to run. A step found there is not run again: an evaluation that is kept needs
neither its model's weights nor its training. Only the small files travel; weights, slice caches and maps stay in
the work folder.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from scripts.files import atomic_write_bytes

EVALUATION_FILES: tuple[str, ...] = ("metrics.json", "metrics_per_subject.csv", "metrics.md")


def kept_record(record: Path, work_dir: Path, keep_dir: str | Path) -> Path:
    """Where the step record ``record`` (under ``work_dir``) is kept: the same relative path under ``keep_dir``."""
    return Path(keep_dir) / record.resolve().relative_to(work_dir.resolve())


RENAMED_OPTIONS: dict[str, str] = {"--final_weights": "--weights"}
"""Options of the bundle renamed since a step was recorded (old -> new): a record made under the old name is the same
step (the bundle stopped reading ``final_weights`` in 0.9.0; records kept before then name it)."""


def recorded_command(saved: dict) -> list[str] | None:
    """The command a step record holds, under the bundle's current option names (:data:`RENAMED_OPTIONS`)."""
    command = saved.get("command")
    return None if command is None else [RENAMED_OPTIONS.get(part, part) for part in command]


def finished_record(record: Path, key: list[str]) -> dict | None:
    """The record at ``record`` when it holds the command ``key`` and says it finished; else None."""
    if not record.is_file():
        return None
    saved = json.loads(record.read_text())
    return saved if recorded_command(saved) == key and saved.get("finished") else None


def restore(record: Path, work_dir: Path, keep_dir: str | Path, key: list[str], files: Sequence[str]) -> bool:
    """Copy a kept, finished step of the command ``key`` (its record and ``files``) into the step folder of
    ``record`` where the work folder holds no record of its own; True when it did. A kept step of another command, or
    one without all its files, is left alone (the step runs, and is then kept anew). A step without files (a
    training, whose weights are not kept) is never restored."""
    source = kept_record(record, work_dir, keep_dir)
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
    target = kept_record(record, work_dir, keep_dir)
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
