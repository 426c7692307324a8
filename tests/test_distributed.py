"""torchrun on CPU (gloo, 2 processes): DDP training and sharded inference through the bundle's command line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from runner import TINY_ARGS, run_bundle, tiny_dataset, tiny_weights

TORCHRUN = ["-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"]


def torchrun(workflow: str, config: str | list[str], *args: str):
    """A bundle workflow in 2 processes (gloo on the CPU), one thread each."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return run_bundle(workflow, config, *args, timeout=400, env=env, launcher=TORCHRUN)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """Made (synthetic) tiny studies: 3 healthy (1 for validation), 3 with a tumour."""
    out = tmp_path_factory.mktemp("ddp_data")
    return tiny_dataset(out, n_healthy=3, n_anomalous=3, seed=5, n_validation=1)


def test_ddp_training_two_processes(data, tmp_path):
    out = tmp_path / "run"
    proc = torchrun(
        "training",
        ["train.yaml", "multi_gpu_train.yaml"],
        "--dataset_dir",
        str(data),
        "--output_dir",
        str(out),
        "--final_weights",
        str(out / "model.pt"),
        "--epoch_iterations",
        "2",
        "--max_epochs",
        "2",
        "--checkpoint_interval",
        "2",
        "--batch_size",
        "2",
        "--val_batches",
        "1",
        *TINY_ARGS,
    )
    log = proc.stdout + proc.stderr
    assert (out / "model.pt").is_file()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["checkpoint_iteration=4.pt"]
    assert log.count("Saved checkpoint at iteration: 4") == 1, "only rank 0 writes checkpoints"
    writers = {p.name.split(".")[-2] for p in out.glob("events.out.tfevents.*")}
    assert len(writers) == 1, "only rank 0 writes TensorBoard logs"
    assert log.count("Engine run finished") >= 2, "both processes trained"


def test_sharded_inference_scores_every_study_once(data, tmp_path):
    weights = tiny_weights(tmp_path / "tiny.pt")
    out = tmp_path / "out"
    proc = torchrun(
        "inference",
        "inference.yaml",
        "--dataset_dir",
        str(data),
        "--output_dir",
        str(out),
        "--checkpoint",
        str(weights),
        "--t_stride",
        "100",
        *TINY_ARGS,
    )
    log = proc.stdout + proc.stderr
    names = [s["name"] for s in json.loads(data.read_text())["testing"]]
    for name in names:
        assert (out / name / "anomaly.nii.gz").is_file()
        assert log.count(f"{name}: wrote") == 1, f"{name} was not scored exactly once"
