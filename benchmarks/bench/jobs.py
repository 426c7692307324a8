"""Bundle commands: built (:func:`bundle_command`), run from the repository root with their
output in a log (:func:`run_command`), cached in the work folder (:func:`cached_step`, :func:`step_done`) and, with
``Settings.keep_dir``, kept beside the code (:mod:`.kept`), run side by side (:func:`run_tasks`).

Every command runs with ``OMP_NUM_THREADS`` set (``--threads``); its output goes to ``<work_dir>/logs/<step>.log``.
A step runs under a lock in its folder (:func:`step_lock`): two benchmarks that share a step (v2.py and faithful.py
share the default's trainings) in one work folder run it once, the second waiting for the first.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import REPO
from benchmarks.bench.configs import config_files
from benchmarks.bench.kept import (
    drop_checkpoints,
    finished_record,
    keep,
    keep_checkpoint,
    kept_path,
    restore,
    restore_checkpoint,
    same_command,
    write_record,
)
from benchmarks.bench.settings import Settings


class BenchmarkError(RuntimeError):
    """A bundle command failed, or the work folder holds results of other settings."""


STOP = threading.Event()  # set on Ctrl-C (run_tasks): no further bundle command starts


def bundle_command(workflow: str, configs: Sequence[str], overrides: Mapping[str, object]) -> list[str]:
    """``python -m monai.bundle run WORKFLOW`` with the merged ``configs`` (:func:`~.configs.config_files`, as the list
    literal MONAI's runner reads) and ``--key value`` overrides (booleans as ``true``/``false``)."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", workflow, "--config_file", str(config_files(configs))]
    cmd += ["--bundle_root", "bundle"]
    for key, value in overrides.items():
        cmd += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return cmd


def run_command(cmd: Sequence[str], log_file: Path, s: Settings) -> str:
    """Run ``cmd`` from the repository root, its stdout and stderr into ``log_file``; returns its stdout.

    Raises:
        BenchmarkError: the command failed (with the end of its log).
    """
    if STOP.is_set():
        raise BenchmarkError("stopped (interrupted) before it started")
    env = {**os.environ, "OMP_NUM_THREADS": str(s.threads)}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as err:
        err.write(shlex.join(cmd) + "\n\n")
        err.flush()
        proc = subprocess.run(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
        err.write("\n--- stdout ---\n" + proc.stdout)
    if proc.returncode != 0:
        tail = log_file.read_text()[-3000:]
        raise BenchmarkError(f"command failed (exit {proc.returncode}); log {log_file}:\n{tail}")
    return proc.stdout


def _record_key(cmd: Sequence[str]) -> list[str]:
    """The part of a command that identifies a result (not the interpreter's path)."""
    return list(cmd[1:])


@dataclass
class Step:
    """One bundle command of a table, done now or found done in the work folder. ``result``: what the step made
    (e.g. the value of a value file), filled by the caller."""

    name: str
    seconds: float
    reused: bool
    result: dict = field(default_factory=dict)
    resumed: bool = False  # the wall time is that of the last attempt only
    note: str = ""  # what else the wall time holds, set on the record by hand (:mod:`benchmarks.note_step`)


def _recorded(name: str, saved: dict) -> Step:
    """The step that a finished record ``saved`` describes (its wall time, whether it was resumed, its note)."""
    return Step(name, float(saved["seconds"]), True, resumed=bool(saved.get("resumed")), note=saved.get("note", ""))


def step_done(
    name: str,
    cmd: Sequence[str],
    record: Path,
    done: Callable[[], bool],
    s: Settings,
    work_dir: Path,
    log: Callable[[str], None] = print,
    kept_files: Sequence[str] = (),
) -> Step | None:
    """The step of ``cmd`` when it need not run: ``record`` says that the same command finished and ``done()`` holds
    (its outputs are there and fit); else None. With ``s.keep_dir``, a kept step (its record and ``kept_files``) is
    first copied back into a work folder that lacks it, and a finished step is kept.

    Raises:
        BenchmarkError: ``record`` belongs to a different command (other settings).
    """
    key = _record_key(cmd)
    if s.keep_dir is not None and restore(record, work_dir, s.keep_dir, key, kept_files):
        log(f"  {name}: restored from {kept_path(record, work_dir, s.keep_dir).parent}")
    saved = json.loads(record.read_text()) if record.is_file() else None
    if saved is not None and not same_command(saved, key):
        raise BenchmarkError(
            f"{record.parent} holds a step of other settings ({record}); use another --work_dir (or the same options)"
        )
    if saved is None or not saved.get("finished") or not done():
        return None
    if s.keep_dir is not None:  # steps that finished before the run was given a keep_dir are kept too
        keep(record, work_dir, s.keep_dir, kept_files)
    return _recorded(name, saved)


def recorded_step(name: str, cmd: Sequence[str], record: Path, s: Settings, work_dir: Path) -> Step | None:
    """The finished step of ``cmd`` as its record in the work folder, else the kept one, has it (its wall time and
    whether it was resumed); None when neither holds it (e.g. a training whose evaluations were all kept, from
    before it was timed)."""
    key = _record_key(cmd)
    places = [record] + ([kept_path(record, work_dir, s.keep_dir)] if s.keep_dir is not None else [])
    for place in places:
        saved = finished_record(place, key)
        if saved is not None:
            return _recorded(name, saved)
    return None


LOCK_NAME = ".step.lock"


@contextmanager
def step_lock(record: Path, name: str, log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the lock of the step whose record is ``record`` (``.step.lock`` in its folder, ``flock``): another
    process on the same step waits here until this one is done, and then finds it done. The lock goes with the
    process, so a killed run leaves no stale lock."""
    record.parent.mkdir(parents=True, exist_ok=True)
    with open(record.parent / LOCK_NAME, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"  {name}: another process is running it; waiting for it to finish ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def keeping_checkpoints(
    checkpoints: Path | None, work_dir: Path, s: Settings, key: list[str], interval: float = 30.0
) -> Iterator[None]:
    """While the body runs, copy each new resumable checkpoint in ``checkpoints`` to the kept folder
    (:func:`~.kept.keep_checkpoint`, every ``interval`` seconds and once at the end), so that a sitting that ends
    in the middle of a training leaves it resumable; nothing without ``checkpoints`` or ``s.keep_dir``."""
    if checkpoints is None or s.keep_dir is None:
        yield
        return
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(interval):
            keep_checkpoint(checkpoints, work_dir, s.keep_dir, key)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
        keep_checkpoint(checkpoints, work_dir, s.keep_dir, key)


def cached_step(
    name: str,
    cmd: Sequence[str],
    record: Path,
    done: Callable[[], bool],
    s: Settings,
    work_dir: Path,
    log: Callable[[str], None] = print,
    kept_files: Sequence[str] = (),
    checkpoints: Path | None = None,
) -> Step:
    """Run ``cmd`` unless it need not run (:func:`step_done`); keep its wall time in ``record``. The record is written
    before the command starts, so that an interrupted step is run again (a training then resumes from its
    checkpoint) and a folder of other settings is refused. With ``s.keep_dir``, the finished step's record and
    ``kept_files`` are kept (:mod:`.kept`); a training that writes resumable checkpoints into the folder
    ``checkpoints`` (given with ``s.keep_weights``) keeps its newest one while it runs and, in a fresh work folder,
    resumes from the one kept.

    Raises:
        BenchmarkError: the command failed; or ``record`` belongs to a different command (other settings).
    """
    with step_lock(record, name, log):  # a step another process is running is found done once it has finished
        found = step_done(name, cmd, record, done, s, work_dir, log, kept_files)
        if found is None:
            return _run_step(name, cmd, record, s, work_dir, log, kept_files, checkpoints)
    log(f"  {name}: reused from {record.parent} ({found.seconds:.0f} s when it ran)")
    return found


def _run_step(
    name: str,
    cmd: Sequence[str],
    record: Path,
    s: Settings,
    work_dir: Path,
    log: Callable[[str], None],
    kept_files: Sequence[str],
    checkpoints: Path | None,
) -> Step:
    """Run the step of :func:`cached_step` (under its lock) and record it."""
    key = _record_key(cmd)
    restored = None
    if checkpoints is not None and s.keep_dir is not None:
        restored = restore_checkpoint(checkpoints, work_dir, s.keep_dir, key)
    resumed = record.is_file() or restored is not None  # an earlier attempt did not finish (or its outputs went)
    record.parent.mkdir(parents=True, exist_ok=True)
    write_record(record, {"command": key, "finished": False})
    where = f" from the kept {restored.name}" if restored is not None else ""
    log(f"  {name}: {'resuming' if resumed else 'running'}{where} ... (log: {work_dir / 'logs' / (name + '.log')})")
    start = time.perf_counter()
    with keeping_checkpoints(checkpoints, work_dir, s, key):
        run_command(cmd, work_dir / "logs" / f"{name}.log", s)
    seconds = time.perf_counter() - start
    text = {"command": key, "finished": True, "seconds": seconds, "resumed": resumed}
    write_record(record, text)
    if s.keep_dir is not None:
        keep(record, work_dir, s.keep_dir, kept_files)
        if checkpoints is not None:
            drop_checkpoints(checkpoints, work_dir, s.keep_dir)
    log(f"  {name}: done in {seconds:.0f} s")
    return Step(name, seconds, False, resumed=resumed)


def run_tasks(tasks: Sequence[Callable[[], None]], jobs: int) -> None:
    """Run ``tasks`` (each a chain of bundle commands), up to ``jobs`` at once, taken in the given order as workers
    free up (one thread each: the work is in the subprocesses). On Ctrl-C the running commands get it too (same
    process group), and no further command starts (:data:`STOP`)."""
    if jobs <= 1 or len(tasks) <= 1:
        try:
            for task in tasks:
                task()
        except BaseException:
            STOP.set()
            raise
        return

    def guarded(task: Callable[[], None]) -> None:
        if not STOP.is_set():
            task()

    pool = ThreadPoolExecutor(min(jobs, len(tasks)))
    futures = [pool.submit(guarded, task) for task in tasks]
    try:
        for future in futures:
            future.result()
    except BaseException:
        STOP.set()
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
