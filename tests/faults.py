"""Run ``python -m monai.bundle ARGS`` with one fault armed: the process kills itself (SIGKILL, which nothing can
catch or clean up after) at the n-th event of one phase of a training run.

    python tests/faults.py PHASE N -- run training --config_file ...

Phases: ``cache`` (while writing a study's healthy-slice cache: half the file is written, then the kill),
``iteration`` (inside a training iteration), ``checkpoint`` (half-way through writing a resumable checkpoint),
``validation`` (inside a validation iteration), ``final`` (half-way through writing the final weights); and of an
inference run, ``nifti`` (half-way through writing the n-th NIfTI output: a study's first file after the studies
before it were written whole). The bundle is not changed: the fault wraps the functions it calls (numpy.save,
torch.save, the training inferer, nibabel.save).
"""

from __future__ import annotations

import io
import os
import runpy
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = ("cache", "iteration", "checkpoint", "validation", "final")
INFERENCE_PHASES = ("nifti",)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(phase: str, n: int) -> None:
    """Kill this process at the ``n``-th (1-based) event of ``phase``."""
    seen = {"events": 0}

    def hit() -> bool:
        seen["events"] += 1
        return seen["events"] == n

    def half(data: bytes, target) -> None:
        Path(target).write_bytes(data[: len(data) // 2])
        die()

    if phase == "cache":
        import numpy as np

        save = np.save

        def cache_save(file, array, *args, **kwargs):
            if hit():
                buffer = io.BytesIO()
                save(buffer, array, *args, **kwargs)
                half(buffer.getvalue(), file)
            return save(file, array, *args, **kwargs)

        np.save = cache_save
    elif phase in ("checkpoint", "final"):
        import torch

        save = torch.save

        def torch_save(obj, f, *args, **kwargs):
            final = isinstance(obj, dict) and "settings" in obj
            checkpoint = isinstance(obj, dict) and "trainer" in obj
            if (final if phase == "final" else checkpoint) and hit():
                buffer = io.BytesIO()
                save(obj, buffer)
                half(buffer.getvalue(), f)
            return save(obj, f, *args, **kwargs)

        torch.save = torch_save
    elif phase in ("iteration", "validation"):
        sys.path.insert(0, str(REPO / "bundle"))
        from scripts.training import AutocastDiffusionInferer

        call = AutocastDiffusionInferer.__call__

        def inferer_call(self, inputs, diffusion_model, *args, **kwargs):
            if diffusion_model.training == (phase == "iteration") and hit():
                die()
            return call(self, inputs, diffusion_model, *args, **kwargs)

        AutocastDiffusionInferer.__call__ = inferer_call
    elif phase == "nifti":
        import nibabel as nib

        save = nib.save

        def nifti_save(img, filename, *args, **kwargs):
            if hit():
                buffer = io.BytesIO()
                buffer.write(img.to_bytes())
                half(buffer.getvalue(), filename)
            return save(img, filename, *args, **kwargs)

        nib.save = nifti_save
    else:
        raise ValueError(f"unknown phase {phase!r}; choose one of {PHASES + INFERENCE_PHASES}")


if __name__ == "__main__":
    phase, n, separator, *args = sys.argv[1:]
    assert separator == "--", "usage: python tests/faults.py PHASE N -- ARGS"
    arm(phase, int(n))
    sys.argv = ["monai.bundle", *args]
    runpy.run_module("monai.bundle", run_name="__main__", alter_sys=True)
