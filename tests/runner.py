"""What the workflow tests share: the tiny network they train, and running `python -m monai.bundle run ...` (its
``--config_file`` list from :func:`benchmarks.bench.configs.config_files`, imported here for the tests)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.bench.configs import config_files, parsed

REPO = Path(__file__).resolve().parents[1]

TINY_NET = "tiny"
"""The preset of ``scripts.networks.TINY_NETWORK``, a ~45k-parameter DiffusionModelUNet: the workflows are checked, not
the model (``--network_preset tiny`` on a command line, ``make_network(TINY_NET)`` here)."""

TINY_ARGS: list[str] = ["--network_preset", TINY_NET, "--image_size", "32", "--register", "false"]
"""Command-line overrides for tiny made studies (already on one grid, so no SRI24 registration)."""


def weights_settings(**changes: object) -> dict:
    """The settings ``configs/inference.yaml`` records with the weights (``weights_settings``, read from its objects)
    for ``TINY_ARGS`` (32 x 32 slices), with ``changes`` (config keys, e.g. ``method``) set first."""
    return parsed("weights_settings", image_size=32, **changes)


def tiny_weights(path: Path, seed: int = 0, **changes: object) -> Path:
    """Random weights of the tiny network, saved with :func:`weights_settings` (``changes`` applied) to ``path``."""
    import torch

    from scripts.checkpoints import save_state_dict
    from scripts.networks import make_network

    torch.manual_seed(seed)
    return save_state_dict(make_network(TINY_NET), path, weights_settings(**changes))


def tiny_dataset(
    folder: Path, n_healthy: int, n_anomalous: int = 0, lesion: str = "tumour", seed: int = 0, n_validation: int = 0
) -> Path:
    """Made (synthetic) tiny studies, 48x48x32 voxels of 5 mm, written with their datalist; returns its path."""
    from scripts.synthetic import make_dataset

    return make_dataset(
        folder,
        n_healthy=n_healthy,
        n_anomalous=n_anomalous,
        lesion=lesion,
        seed=seed,
        shape=(48, 48, 32),
        spacing=(5.0, 5.0, 5.0),
        n_validation=n_validation,
    )


def preprocessing(**overrides: object):
    """The preprocessing of ``configs/inference.yaml`` (a ``Compose``), with ``overrides`` (e.g. ``image_size``)."""
    return parsed("preprocessing", **overrides)


def bundle_cmd(workflow: str, configs: str | Sequence[str], *args: str, launcher: Sequence[str] = ()) -> list[str]:
    """The command line of ``python -m monai.bundle run WORKFLOW`` with ``inference.yaml`` and ``configs`` (names under
    bundle/configs, merged in order) and ``args``; ``launcher`` (e.g. torchrun's) goes before ``-m monai.bundle``."""
    config_arg = str(config_files(configs))
    return [sys.executable, *(launcher or []), "-m", "monai.bundle", "run", workflow, "--config_file", config_arg,
            "--bundle_root", "bundle", *args]  # fmt: skip


def run_bundle(
    workflow: str,
    configs: str | Sequence[str],
    *args: str,
    check: bool = True,
    timeout: float = 600,
    env: dict | None = None,
    launcher: Sequence[str] = (),
) -> subprocess.CompletedProcess:
    """Run a bundle workflow from the repository root; with ``check``, fail with its output's tail when it fails."""
    cmd = bundle_cmd(workflow, configs, *args, launcher=launcher)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{workflow} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-4000:]}")
    return proc
