"""Note on finished step records what their wall time holds besides the step's work, for the reports' wall-time tables.

    python -m benchmarks.note_step --note "includes a pause (SIGSTOP) for checks" \\
        <work_dir>/eval/v2_s1_bright/table_command.json benchmarks/kept/v2/eval/v2_s1_bright/table_command.json

A benchmark step records its wall clock from start to end (:mod:`benchmarks.bench.jobs`). When its process was paused
(``kill -STOP`` while other checks used the cores), that time is in its figure. The benchmark cannot see the pause;
this notes it on the record (the work folder's copy and the kept one), and the report prints the note beside the time
(:func:`benchmarks.bench.report.step_time`). Only the note changes: the command, the seconds and the rest stay.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.bench.kept import write_record


def note_step(record: Path, note: str) -> None:
    """Set the ``note`` of the finished step record ``record`` (``table_command.json``); an empty note removes it.

    Raises:
        ValueError: ``record`` is not a finished step's record.
    """
    saved = json.loads(record.read_text())
    if not isinstance(saved, dict) or not saved.get("finished") or "seconds" not in saved:
        raise ValueError("not a finished step's record")
    saved.pop("note", None)
    if note:
        saved["note"] = note
    write_record(record, saved)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records", nargs="+", type=Path, help="table_command.json files of finished steps")
    parser.add_argument("--note", required=True, help="what the wall time holds; an empty string removes the note")
    args = parser.parse_args(argv)
    failed = 0
    for record in args.records:
        try:
            note_step(record, args.note)
        except (OSError, ValueError) as error:  # one line per bad record; the others are still noted
            print(f"error: {record}: {getattr(error, 'strerror', None) or error}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
