"""``run.json``: what made a run's outputs, as the configured objects describe themselves.

A run of ``run inference`` (or training, calibration, evaluation) writes ``<output_dir>/run.json`` before its first
study: each named object of the config (the inferer, the post-processing, a trainer's noise) described by
:func:`scripts.fingerprint.describe` (its class and public settings, recursively), with the bundle's version. So a
map can be traced to the timesteps, filter sizes and noise that made it, read from the objects that ran rather than
from a hand-kept list of settings. Rank 0 alone writes it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from scripts.files import atomic_write_bytes
from scripts.fingerprint import describe
from scripts.selection import check_writable

RUN_RECORD_FILE = "run.json"


class RunRecord:
    """Writes ``output_dir/run.json``: ``{"workflow": ..., "version": ..., "objects": {name: describe(obj)}}``.

    Args:
        output_dir: the run's output folder.
        objects: the configured objects to describe, by name (e.g. ``{"inferer": @inferer}``).
        workflow: the workflow's name (``inference``, ``training``, ...).
        metadata: the bundle's ``configs/metadata.json``, whose ``version`` is recorded (None where it is absent).
        rank: the process's rank; only rank 0 writes.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        objects: Mapping[str, object],
        workflow: str,
        metadata: str | os.PathLike,
        rank: int = 0,
    ) -> None:
        self.output_dir = os.fspath(output_dir)
        self.objects = dict(objects)
        self.workflow = workflow
        self.metadata = os.fspath(metadata)
        self.rank = int(rank)

    def content(self) -> dict[str, object]:
        """The record (JSON-able)."""
        described = {name: describe(obj) for name, obj in self.objects.items()}
        try:
            with open(self.metadata, encoding="utf-8") as f:
                version = json.load(f).get("version")
        except (OSError, ValueError):
            version = None
        return {"workflow": self.workflow, "version": version, "objects": described}

    def write(self) -> str | None:
        """Write ``run.json`` atomically (rank 0); returns its path, or None on other ranks."""
        if self.rank != 0:
            return None
        check_writable(self.output_dir)  # one line, not a traceback, when it cannot be written
        path = os.path.join(self.output_dir, RUN_RECORD_FILE)
        text = json.dumps(self.content(), indent=4, sort_keys=True, default=str) + "\n"
        atomic_write_bytes(text.encode(), path)
        return path
