"""The entry point every benchmark shares: its parser (:func:`benchmark_parser`), its run (:func:`run_benchmark`);
and the command line of a table script (:func:`table_main`): the options, the work folder, the run (resumable), the
report."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.bench.jobs import BenchmarkError
from benchmarks.bench.report import write_report
from benchmarks.bench.settings import DATA_NOTE, add_arguments, settings_from_args, work_folder


def benchmark_parser(doc: str | None) -> argparse.ArgumentParser:
    """The argument parser of a benchmark, ``doc`` (its docstring, or its first paragraph) as the description of
    ``--help``, kept as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def run_benchmark(main: Callable[[], int | None]) -> None:
    """Run a benchmark's ``main`` as ``python -m benchmarks.<name>`` does; exit with its status (0 for None). A step
    that failed (:class:`~.jobs.BenchmarkError`: a bundle command, or a work folder of other settings) ends it with
    ``error: <what>`` (a failed command's message ends with its log's tail) and status 1, without a traceback."""
    try:
        status = main()
    except BenchmarkError as err:
        sys.stderr.write(f"error: {err}\n")
        sys.exit(1)
    sys.exit(status)


def table_main(
    name: str, title: str, table_cls: Callable, default_out: Path, doc: str | None, argv: list[str] | None = None
) -> int:
    """Parse the arguments, run ``table_cls`` (resumably), write the report; returns the exit status.

    Args:
        name: the script's short name in messages (``table1``).
        title: what is made (``Table 1``).
        table_cls: called as ``table_cls(work_dir, settings, log)``; has ``run()``, ``report(seconds)`` and
            ``failures``.
        default_out: the Markdown file written unless ``--out`` is given.
        doc: the script's docstring, for ``--help``.
    """
    p = benchmark_parser(doc)
    add_arguments(p)
    p.add_argument("--out", default=str(default_out), help="Markdown file to write (atomically)")
    args = p.parse_args(argv)
    s = settings_from_args(args)
    work_dir = work_folder(args.work_dir, f"andi_{name}_")
    print(f"[{name}] {title} on {DATA_NOTE}; work folder {work_dir}", flush=True)
    start = time.perf_counter()
    table = table_cls(work_dir, s, lambda text: print(text, flush=True))
    try:
        table.run()
    except KeyboardInterrupt:
        print(f"[{name}] interrupted; run the same command again (same --work_dir) to resume", flush=True)
        return 130
    text = table.report(time.perf_counter() - start)
    path = write_report(text, args.out)
    print("\n" + text, flush=True)
    print(f"[{name}] written to {path.resolve()}", flush=True)
    return 1 if table.failures else 0
