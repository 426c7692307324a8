"""Many studies in one run, one study's failure that study's alone.

A workflow first validates every study's headers (``scripts.selection.select_studies``), then does the valid ones one
after the other (:func:`run_studies`): a study that fails while it is loaded, registered, scored or written is
recorded, its partial outputs are removed, and the run goes on. At the end :class:`BatchReport` prints one summary
(N done, M skipped because already done, K failed, one ``error: <file>: <problem>`` line each), writes it to
``failures.json`` in the output folder (``failures_rank<r>.json`` per process under torchrun) and, when any study
failed, ends the program with exit status 1 (:class:`~scripts.errors.StudiesFailed`). ``on_error: stop`` stops at
the first failure instead.

:class:`StudyBatch` runs a MONAI engine (the evaluator of ``run inference`` and ``run evaluate``) study by study,
through public interfaces only: the evaluator's ``data_loader`` is set to one study's loader (a view of the
configured loader's dataset), and an ignite ``EXCEPTION_RAISED`` handler ends that study's run cleanly, so that the
engine starts the next study afresh; the study's error is then raised to :func:`run_studies`, which records it.
"""

from __future__ import annotations

import json
import logging
import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ignite.engine import Events
from monai.data import DataLoader
from scripts.errors import Failure, StudiesFailed, bundle_error
from scripts.files import atomic_write_bytes, remove_partials
from scripts.memory import release
from scripts.outputs import STUDY_FILES
from scripts.progress import progress
from scripts.selection import StudySelection, study_folder, study_output
from torch.utils.data import Subset

logger = logging.getLogger(__name__)

ON_ERROR = ("continue", "stop")


@dataclass
class BatchReport:
    """What a batch did: the studies ``done``, ``skipped`` (already done) and ``failures``."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    def summary(self, verb: str = "scored") -> str:
        """One line of counts, then one line per failure."""
        head = f"{len(self.done)} {verb}, {len(self.skipped)} skipped (already done), {len(self.failures)} failed"
        return "\n".join([head, *[f.line() for f in self.failures]])

    def write(self, path: str | os.PathLike) -> Path:
        """The report as JSON (``done``, ``skipped``, ``failed``), written atomically."""
        content = {"done": self.done, "skipped": self.skipped, "failed": [f.as_dict() for f in self.failures]}
        return atomic_write_bytes((json.dumps(content, indent=2) + "\n").encode(), path)

    def raise_if_failed(self, verb: str = "scored") -> None:
        if self.failures:
            raise StudiesFailed(self.summary(verb))


def failures_file(output_dir: str | os.PathLike, rank: int = 0, world_size: int = 1) -> Path:
    """``failures.json``, or ``failures_rank<r>.json`` for each process of a torchrun job."""
    return Path(output_dir) / ("failures.json" if int(world_size) == 1 else f"failures_rank{int(rank)}.json")


def run_studies(
    studies: Sequence[dict],
    do_one: Callable[[dict], None],
    report: BatchReport,
    on_error: str = "continue",
    clean_up: Callable[[dict], None] | None = None,
    desc: str = "studies",
) -> BatchReport:
    """``do_one(study)`` for each study, with a progress bar; a failure is added to ``report`` (its partial outputs
    removed by ``clean_up``) and the next study follows, unless ``on_error`` is ``"stop"``: then it is raised.

    A bundle error (a bad input) is recorded with its message; any other exception is a bug: recorded as
    unexpected, its traceback logged at once.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    for study in progress(studies, desc=desc, unit="study", leave=True):
        name = str(study.get("name", "?"))
        try:
            do_one(study)
        except Exception as err:
            if clean_up is not None:
                clean_up(study)
            if on_error == "stop":
                raise
            error = bundle_error(err)
            if error is not None:
                report.failures.append(Failure(name, str(error)))
                logger.info("%s failed: %s", name, error)
            else:
                report.failures.append(Failure(name, f"{name}: {type(err).__name__}: {err}", kind="unexpected"))
                logger.error("%s failed unexpectedly:\n%s", name, traceback.format_exc())
            continue
        report.done.append(name)
    return report


class StudyBatch:
    """Run ``engine`` (a MONAI evaluator) on the studies of ``selection`` one by one (see the module docstring).

    Args:
        engine: the evaluator; its ``data_loader`` is set to one of a single study before each run.
        selection: from ``scripts.selection.select_studies``: the studies to do, the skipped ones and the failures
            found in the headers.
        loader: the configured loader of all studies (``dataloader``: its dataset holds ``selection.studies`` in
            order, with the preprocessing); each study's loader takes that study's item of its dataset.
        output_dir: where the outputs and the failures file go.
        on_error: ``"continue"`` (the default) or ``"stop"``.
        output_files: the names of a study's output files, removed from ``<output_dir>/<study>`` when it fails
            (``scripts.outputs.STUDY_FILES``).
        rank, world_size: under torchrun, the process's share (for the failures file's name).
        method: the method's name, for the progress bar and the summary.
    """

    def __init__(
        self,
        engine,
        selection: StudySelection,
        loader: DataLoader,
        output_dir: str | os.PathLike,
        on_error: str = "continue",
        output_files: Sequence[str] = STUDY_FILES,
        rank: int = 0,
        world_size: int = 1,
        method: str = "ANDi",
    ) -> None:
        self.engine = engine
        self.selection = selection
        self.loader = loader
        if len(loader.dataset) != len(selection.studies):
            raise ValueError(f"the loader holds {len(loader.dataset)} studies, the selection {len(selection.studies)}")
        self._index = {id(study): i for i, study in enumerate(selection.studies)}
        self._error: BaseException | None = None
        self.output_dir = Path(output_dir)
        self.on_error = str(on_error)
        self.output_files = list(output_files)
        self.rank, self.world_size = int(rank), int(world_size)
        self.method = method
        self.report = BatchReport(skipped=list(selection.skipped), failures=list(selection.failures))
        # one engine run per study: its start and end lines would only repeat the progress bar, and its "Engine run is
        # terminating due to exception" line the failure that run_studies records and reports (with the traceback
        # in the log when it is a bug)
        engine.logger.setLevel(logging.CRITICAL)
        # ignite re-raises an exception only when no handler takes it; this one keeps it, the run ends cleanly and the
        # next run starts afresh
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._keep_error)

    def _keep_error(self, engine, error: BaseException) -> None:
        self._error = error

    def score(self, study: dict) -> None:
        remove_partials(study_folder(self.output_dir, study))  # what a killed run was writing
        index = self._index[id(study)]
        self.engine.data_loader = DataLoader(
            Subset(self.loader.dataset, [index]),
            batch_size=1,
            shuffle=False,
            num_workers=self.loader.num_workers,
            collate_fn=self.loader.collate_fn,
        )
        self.engine.state.epoch_length = 1  # the configured loader's length is the number of studies
        self._error = None
        try:
            self.engine.run()
        finally:
            release(self.engine)  # this study's data go before the next one's come (scripts.memory)
        if self._error is not None:
            raise self._error

    def clean_up(self, study: dict) -> None:
        """Remove what a failed study wrote (outputs are atomic, but a study writes several)."""
        folder = study_folder(self.output_dir, study)
        for name in self.output_files:
            study_output(self.output_dir, study, name).unlink(missing_ok=True)
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

    def run(self) -> BatchReport:
        """Score every study and write the failures file; print the counts when nothing failed (failures end the
        program with the summary: :meth:`raise_if_failed`). Returns the report."""
        if self.on_error == "stop":
            self.report.raise_if_failed()
        run_studies(self.selection.studies, self.score, self.report, self.on_error, self.clean_up, desc=self.method)
        path = self.report.write(failures_file(self.output_dir, self.rank, self.world_size))
        if not self.report.failures:
            print(f"{self.method}: {self.report.summary()} (summary: {path})", flush=True)
        return self.report

    def raise_if_failed(self) -> None:
        """End with exit status 1 and the summary when a study failed (after the workflow's other steps)."""
        self.report.raise_if_failed()
