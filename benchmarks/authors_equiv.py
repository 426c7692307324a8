"""Run ``../shared/tools/authors_equiv/compare.py`` (the bundle against the authors' own functions) on this bundle.

Usage (from the repository root)::

    python -m benchmarks.authors_equiv --authors SRC [--case ../shared/data/cases/glioma_sri24] [-- compare.py options]

SRC is the authors' source tree (``AlexanderFrotscher/ANDi``), extracted with
``git --git-dir=<mirror> archive HEAD | tar -x -C SRC``; the venv needs ``pip install --no-deps torchvision==0.28.0
lmdb`` beside it. The tool is not part of the project and is not changed here: this wrapper only meets two of its
expectations that the bundle has outgrown, on a throw-away copy of the bundle:

- the tool reads ``configs/common.yaml``, whose block is now the shared block of ``configs/inference.yaml`` (the
  zoo's layout: inference.yaml runs alone); the copy gets ``common.yaml`` as a link to ``inference.yaml``;
- PyPI's torchvision wheel is built against CUDA, so its C operators (``nms``, ``roi_align``, ...) cannot load beside
  the CPU torch, and ``import torchvision`` then fails while registering their fake and autograd kernels. Those
  registrations are skipped for ``torchvision::`` operators; nothing the comparison calls uses them (the authors'
  ``Resize(antialias=True)`` runs torch's own ``F.interpolate`` on tensors).

It prints the tool's lines as they come and exits with the tool's status (1 on any FAIL).
"""

from __future__ import annotations

import argparse
import os
import runpy
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks import REPO

COMPARE = REPO.parent / "shared" / "tools" / "authors_equiv" / "compare.py"
CASE = REPO.parent / "shared" / "data" / "cases" / "glioma_sri24"


def _skipping_torchvision(register: Callable, decorator: bool) -> Callable:
    """``register`` (a ``torch.library`` registration) made a no-op for ``torchvision::`` operators; ``decorator``:
    it is used as ``@register(op)`` (``register_fake``), so the no-op returns the function unchanged."""

    def wrapped(op, *args, **kwargs):
        if isinstance(op, str) and op.startswith("torchvision::"):
            return (lambda fn: fn) if decorator else None
        return register(op, *args, **kwargs)

    return wrapped


def import_torchvision_without_ops() -> None:
    """Import torchvision's Python parts where its compiled operators cannot load (a CUDA wheel on a CPU torch)."""
    fake, autograd = torch.library.register_fake, torch.library.register_autograd
    torch.library.register_fake = _skipping_torchvision(fake, decorator=True)
    torch.library.register_autograd = _skipping_torchvision(autograd, decorator=False)
    try:
        import torchvision  # noqa: F401
    finally:
        torch.library.register_fake, torch.library.register_autograd = fake, autograd


def bundle_copy(bundle: Path, into: Path) -> Path:
    """A copy of ``bundle`` under ``into`` whose ``configs/common.yaml`` links to ``configs/inference.yaml``."""
    copy = into / "bundle"
    shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("__pycache__", "runs", "cache", "demo"))
    (copy / "configs" / "common.yaml").symlink_to("inference.yaml")
    return copy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--authors", required=True, type=Path, help="the authors' source tree")
    parser.add_argument("--compare", type=Path, default=COMPARE, help="the tool (default: %(default)s)")
    parser.add_argument("--case", type=Path, default=CASE, help="a study folder with a segmentation")
    parser.add_argument("--bundle", type=Path, default=REPO / "bundle")
    parser.add_argument("rest", nargs="*", help="further options for compare.py (after --)")
    args = parser.parse_args(argv)
    for path in (args.authors, args.compare, args.case):
        if not path.exists():
            print(f"error: {path}: not found", file=sys.stderr)
            return 2
    import_torchvision_without_ops()
    with tempfile.TemporaryDirectory(prefix="andi_authors_equiv_") as tmp:
        bundle = bundle_copy(args.bundle.resolve(), Path(tmp))
        sys.argv = [str(args.compare), "--authors", str(args.authors.resolve()), "--bundle", str(bundle)]
        sys.argv += ["--case", str(args.case.resolve()), *args.rest]
        cwd = os.getcwd()
        os.chdir(tmp)
        try:
            runpy.run_path(str(args.compare), run_name="__main__")
        except SystemExit as stop:
            return int(stop.code or 0)
        finally:
            os.chdir(cwd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
