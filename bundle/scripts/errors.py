"""Errors a user can cause, and how they are reported.

* :class:`StudyError`: a study's input is unusable (a bad file, a missing modality, wrong weights); the message names
  the file (or folder) and the problem. :class:`StudiesFailed`: some studies of a batch failed; the others were done.
* :class:`Failure`: one study's failure, as the failures file (``failures.json``) records it.
* :func:`install_error_hook`: the first step of every workflow. A bundle error then ends the program with one line
  ``error: <file>: <problem>`` (or a short block for a batch) and exit status 1, and its traceback goes to the log
  file only (or to the terminal too with ``--debug true``). Any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path


class StudyError(ValueError):
    """A study's input is unusable; the message names the file (or folder) and the problem."""


class StudiesFailed(StudyError):
    """Some studies of a batch failed (the others were done); the message lists them, one line each."""


@dataclass
class Failure:
    """One study that could not be done: its name, the message (``<file>: <problem>``) and whether the cause was the
    input (``"input"``) or a fault of the bundle (``"unexpected"``, with its traceback in the log)."""

    study: str
    message: str
    kind: str = "input"

    def line(self) -> str:
        return f"error: {self.message}" if self.kind == "input" else f"error (unexpected, a bug): {self.message}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def bundle_error(exc: BaseException | None) -> StudyError | None:
    """The first :class:`StudyError` in ``exc``'s chain of causes (MONAI wraps them in RuntimeErrors), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, StudyError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def install_error_hook(debug: bool | str = False, log_file: str | None = None) -> None:
    """Report the bundle's own errors as ``error: ...`` lines (see the module docstring); ``log_file`` gets every
    traceback. Returns None, so that a workflow's ``initialize`` list can name it as a component."""
    from scripts import as_bool

    debug = as_bool(debug)
    default = sys.__excepthook__

    def hook(kind: type[BaseException], value: BaseException, tb) -> None:
        error = bundle_error(value)
        if log_file:
            try:
                Path(log_file).parent.mkdir(parents=True, exist_ok=True)
                with open(log_file, "a") as log:
                    log.write("".join(traceback.format_exception(kind, value, tb)) + "\n")
            except OSError:
                pass
        if error is None or debug:
            default(kind, value, tb)
        if error is not None:
            text = str(error)
            lines = text.splitlines() if isinstance(error, StudiesFailed) else [f"error: {text}"]
            sys.stderr.write("\n".join(lines) + "\n")
            sys.stderr.flush()

    sys.excepthook = hook
