"""torchrun on CPU (gloo, 2 processes): DDP training and sharded inference through the bundle's command line."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from runner import TINY_ARGS, run_bundle, tiny_dataset, tiny_weights

pytestmark = pytest.mark.slow  # torchrun command lines (two processes each)

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
        "--weights",
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
    """Planted bugs: "every rank writes scores.csv from what it finds on disk" (the rank guard removed: a rank's
    table can lack the other's studies) and "a rank scores another's share" or "the shard changes the maps" (the
    maps are compared with a single-process run's, voxel by voxel)."""
    weights = tiny_weights(tmp_path / "tiny.pt")
    args = ["--dataset_dir", str(data), "--weights", str(weights), "--t_stride", "100", *TINY_ARGS]
    out, single = tmp_path / "out", tmp_path / "single"
    proc = torchrun("inference", "inference.yaml", "--output_dir", str(out), *args)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run_bundle("inference", "inference.yaml", "--output_dir", str(single), *args, timeout=400, env=env)
    log = proc.stdout + proc.stderr
    names = [s["name"] for s in json.loads(data.read_text())["testing"]]
    for name in names:
        assert log.count(f"{name}: wrote") == 1, f"{name} was not scored exactly once"
        for file in ("anomaly.nii.gz", "segmentation.nii.gz"):
            sharded = np.asarray(nib.load(out / name / file).dataobj)
            alone = np.asarray(nib.load(single / name / file).dataobj)
            np.testing.assert_allclose(sharded, alone, rtol=1e-5, atol=1e-7, err_msg=f"{name}/{file}")
    with open(out / "scores.csv", newline="") as f:
        sharded_rows = list(csv.DictReader(f))
    with open(single / "scores.csv", newline="") as f:
        single_rows = list(csv.DictReader(f))
    assert sorted(r["study"] for r in sharded_rows) == sorted(names), "scores.csv lists every rank's studies"
    assert sharded_rows == single_rows
    assert not list(out.glob(".scores.csv*")), "no stray temporary table"


MEET_SCRIPT = """
import sys, time
from pathlib import Path
sys.path.insert(0, "bundle")
from scripts.files import atomic_write_bytes
from scripts.triage import ScoresTable
import json, os
rank, out = int(os.environ["RANK"]), Path(sys.argv[1])
if rank == 1:
    time.sleep(3)  # rank 1's last study is written long after rank 0 has finished its share
info = {"study": f"study{rank}", "study_score": float(rank), "study_score_rule": "anomaly_q999"}
atomic_write_bytes(json.dumps(info).encode(), out / f"study{rank}" / "segmentation.json")
print("returned", ScoresTable(out, rank=rank, world_size=2).write())
"""


def test_scores_table_waits_for_every_rank_and_is_written_by_rank_0(tmp_path):
    """Planted bugs: "writes before the ranks meet" (rank 0 lists the folder while rank 1 still scores: its table lacks
    study1) and "every rank writes" (rank 1 returns a path too)."""
    import subprocess
    import sys

    from runner import REPO

    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_RANK": str(rank),
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29541", "OMP_NUM_THREADS": "1"}  # fmt: skip
        cmd = [sys.executable, "-c", MEET_SCRIPT, str(tmp_path)]
        pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=env, text=True, **pipes))
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert f"returned {tmp_path / 'scores.csv'}" in outputs[0][0]
    assert "returned None" in outputs[1][0], "only rank 0 writes scores.csv"
    with open(tmp_path / "scores.csv", newline="") as f:
        assert [r["study"] for r in csv.DictReader(f)] == ["study1", "study0"]
    assert outputs[0][1] == outputs[1][1] == "", "no warnings"
