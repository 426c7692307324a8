"""MONAI model-zoo readiness, all offline: metadata schema, network in/out, TorchScript export, large files, version
and changelog, experiment tracking with ``--tracking mlflow``.

The schema in ``tests/data/meta_schema_20240725.json`` is a verbatim copy of the file the metadata's ``schema`` URL
names (MONAI-extra-test-data release 0.8.1, Apache-2.0), kept with the tests so that the check runs without a
network and without ``../shared``; the zoo's own CI downloads it again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from monai.bundle import ConfigParser, ConfigWorkflow, verify_metadata
from monai.data import load_net_with_metadata
from runner import TINY_NET, tiny_dataset, weights_settings

from scripts import MODALITIES
from scripts.checkpoints import load_network, save_state_dict
from scripts.networks import make_network

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / "bundle"
CONFIGS = BUNDLE / "configs"
META = CONFIGS / "metadata.json"
INFERENCE = [str(CONFIGS / "inference.yaml")]
TRAIN = [str(CONFIGS / "inference.yaml"), str(CONFIGS / "train.yaml")]
WEIGHTS = BUNDLE / "models" / "model.pt"
SCHEMA_COPY = Path(__file__).resolve().parent / "data" / "meta_schema_20240725.json"
SCHEMA_SHARED = REPO.parent / "shared" / "reference" / "meta_schema_20240725.json"
SCHEMA_MD5 = "76e1add273836515d0bbb3bc71962474"


def metadata() -> dict:
    return json.loads(META.read_text())


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# --- metadata -------------------------------------------------------------------------------------------------------


def test_schema_copy_is_the_reference() -> None:
    assert md5(SCHEMA_COPY) == SCHEMA_MD5
    if SCHEMA_SHARED.is_file():
        assert md5(SCHEMA_SHARED) == SCHEMA_MD5
    assert metadata()["schema"].endswith("/" + SCHEMA_COPY.name)


def test_verify_metadata_offline(tmp_path: Path) -> None:
    """monai.bundle.verify_metadata, offline: the schema file is already at ``filepath``, so nothing is downloaded."""
    schema = tmp_path / "schema.json"
    shutil.copy(SCHEMA_SHARED if SCHEMA_SHARED.is_file() else SCHEMA_COPY, schema)
    verify_metadata(meta_file=str(META), filepath=str(schema))


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def test_version_is_the_latest_in_changelog() -> None:
    meta = metadata()
    assert meta["version"] in meta["changelog"], "the version needs a changelog entry"
    assert _version(meta["version"]) == max(_version(v) for v in meta["changelog"]), "version is not the highest"


def test_metadata_describes_the_code() -> None:
    """Inputs/outputs in metadata.json agree with the configs and the code they run."""
    meta = metadata()
    fmt = meta["network_data_format"]
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    modalities = parser.get_parsed_content("modalities")
    assert tuple(modalities) == MODALITIES
    image = fmt["inputs"]["image"]
    assert image["num_channels"] == len(modalities) == 4
    assert list(image["channel_def"].values()) == ["T1", "T1Gd", "T2", "FLAIR"]
    size = parser.get_parsed_content("image_size")
    assert image["spatial_shape"] == [size, size]
    assert image["dtype"] == "float32"
    steps = fmt["inputs"]["timesteps"]
    assert steps["dtype"] == "int64"
    assert steps["value_range"] == [0, parser.get_parsed_content("num_train_timesteps") - 1]
    pred = fmt["outputs"]["pred"]
    assert pred["num_channels"] == image["num_channels"] and pred["spatial_shape"] == image["spatial_shape"]
    post = fmt["post_processed_outputs"]
    assert post["anomaly"]["dtype"] == "float32" and post["segmentation"]["dtype"] == "uint8"
    assert "not a clinical model" in meta["description"] and "Not for clinical use" in meta["intended_use"]
    assert "arXiv:2312.01904" in " ".join(meta["references"])


# --- network --------------------------------------------------------------------------------------------------------


def zoo_command(*args: str) -> subprocess.CompletedProcess:
    """``python -m monai.bundle ARGS`` run from the bundle folder, as the model card says (the zoo's layout)."""
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=BUNDLE, capture_output=True, text=True, timeout=600
    )


@pytest.mark.slow
def test_verify_metadata_through_the_command_line(tmp_path: Path) -> None:
    schema = tmp_path / "schema.json"
    shutil.copy(SCHEMA_COPY, schema)
    proc = zoo_command("verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(schema))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "metadata is verified with no error" in proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["cpu", "paper"])
def test_verify_net_in_out_through_the_command_line(preset: str) -> None:
    """``verify_net_in_out network_io`` as the model card lists it: ``network_io`` is ``network_def`` with a fixed
    timestep, because the zoo's check feeds one input (and its CLI cannot pass a timestep tensor)."""
    proc = zoo_command(
        *["verify_net_in_out", "network_io", "--meta_file", "configs/metadata.json"],
        *["--config_file", "configs/inference.yaml", "--device", "cpu", "--network_preset", preset],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr


def test_network_io_is_the_network_at_its_timestep() -> None:
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser["bundle_root"] = str(BUNDLE)
    wrapped = parser.get_parsed_content("network_io").eval()
    x = torch.randn(2, 4, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(wrapped(x), wrapped.network(x, timesteps=torch.tensor([100, 100])))


@pytest.mark.slow
def test_export_workflow_gives_the_eager_network(tmp_path: Path) -> None:
    """``run export`` as the model card lists it, from the bundle folder: the traced network, saved with the
    metadata and configs (what ``ckpt_export`` writes), gives the eager network's output on a new input, batch size
    and timesteps. (``ckpt_export`` itself scripts, which fails on DiffusionModelUNet's attention in MONAI 1.6, or
    traces with one input, while the UNet also takes the timesteps.)"""
    net = make_network("tiny")
    with torch.no_grad():  # MONAI zero-initialises the output convolution: perturb every weight for a real output
        for param in net.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=torch.Generator().manual_seed(0)))
    weights = save_state_dict(net, tmp_path / "tiny.pt", weights_settings())
    out, program = tmp_path / "model.ts", tmp_path / "model.pt2"
    proc = zoo_command(
        *["run", "export", "--meta_file", "configs/metadata.json", "--config_file"],
        "['configs/inference.yaml','configs/export.yaml']",
        *["--export_path", str(out), "--weights", str(weights), "--network_preset", "tiny", "--image_size", "32"],
        *["--program_path", str(program)],
        *["--device", "cpu"],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"TorchScript written to {out}" in proc.stdout
    assert f"torch.export program written to {program}" in proc.stdout
    assert "Warning" not in proc.stderr.replace("UserWarning: parsing config_file", ""), proc.stderr[-2000:]
    loaded, meta, extra = load_net_with_metadata(str(out), more_extra_files=("configs.json",))
    assert meta["version"] == metadata()["version"]
    assert json.loads(extra["configs.json"])["network_preset"] == "cpu"  # the configs as shipped
    net = load_network(make_network("tiny"), weights, expected=weights_settings()).eval()
    x = torch.randn(3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 137, 999])
    exported = torch.export.load(str(program)).module()
    with torch.no_grad():
        expected = net(x, t)
        got = loaded(x, t)
        got_program = exported(x, t)
        one = exported(x[:1], torch.tensor([500]))  # another batch size and timestep
    assert expected.abs().max() > 0, "the network's output is all zero: nothing to compare"
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_program, expected, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(one, net(x[:1], torch.tensor([500])), rtol=1e-4, atol=1e-5)


# --- large files ----------------------------------------------------------------------------------------------------


def large_files_path() -> Path:
    """``large_files.yml``: at the bundle root (where the zoo's CI looks) or in ``configs``."""
    for folder in (BUNDLE, CONFIGS):
        for name in ("large_files.yml", "large_files.yaml", "large_files.json"):
            if (folder / name).is_file():
                return folder / name
    raise AssertionError("no large_files.yml in the bundle")


def test_large_files_lists_the_weights_with_their_md5() -> None:
    entries = yaml.safe_load(large_files_path().read_text())["large_files"]
    weights = [e for e in entries if e["path"] == "models/model.pt"]
    assert len(weights) == 1 and set(weights[0]) >= {"path", "url", "hash_val", "hash_type"}
    assert weights[0]["hash_type"] == "md5"
    if not WEIGHTS.is_file():
        pytest.skip(f"{WEIGHTS} is absent")
    assert weights[0]["hash_val"] == md5(WEIGHTS), f"update hash_val in {large_files_path()} to md5({WEIGHTS})"


# --- experiment tracking (`python -m monai.bundle run training ... --tracking mlflow`) ------------------------------
# MONAI appends an MLFlowHandler to the list at `train#handlers` and to `validate#handlers`; where that list is
# missing it REPLACES `validate#evaluator#val_handlers`. train.yaml therefore keeps its validation handlers in
# `validate#handlers` and instantiates them in `initialize`, so that a missing mlflow stops the run at once.

HAS_MLFLOW = importlib.util.find_spec("mlflow") is not None


def tracking_workflow(tmp_path: Path, dataset_dir: Path) -> ConfigWorkflow:
    return ConfigWorkflow(
        config_file=TRAIN,
        logging_file=False,
        tracking="mlflow",
        bundle_root=str(BUNDLE),
        dataset_dir=str(dataset_dir),
        output_dir=str(tmp_path / "run"),
        save_execute_config=str(tmp_path / "run" / "executed_config.json"),
    )


def test_tracking_keeps_the_bundle_handlers(tmp_path: Path) -> None:
    workflow = tracking_workflow(tmp_path, tmp_path / "absent.json")
    targets = [h.get("_target_") if isinstance(h, dict) else h for h in workflow.parser.get("validate#handlers")]
    assert "StatsHandler" in targets and targets[-1] == "MLFlowHandler"
    assert workflow.parser.get("validate#evaluator#val_handlers") == "@validate#handlers"
    assert workflow.parser.get("train#handlers")[-1]["_target_"] == "MLFlowHandler"


@pytest.mark.skipif(HAS_MLFLOW, reason="mlflow is installed")
def test_tracking_without_mlflow_stops_before_reading_data(tmp_path: Path) -> None:
    """No data is read (the datalist does not even exist): the missing package is the first thing reported."""
    workflow = tracking_workflow(tmp_path, tmp_path / "absent.json")
    with pytest.raises(Exception) as err:  # noqa: B017 - MONAI wraps the OptionalImportError in a RuntimeError
        workflow.initialize()
    chain, exc = [], err.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    assert any("Please install mlflow" in message for message in chain), chain
    assert not (tmp_path / "run" / "cache").exists()


@pytest.mark.slow
@pytest.mark.skipif(not HAS_MLFLOW, reason="mlflow is not installed")
def test_tracking_with_mlflow_logs_losses(tmp_path: Path) -> None:

    datalist = tiny_dataset(tmp_path / "data", n_healthy=3, n_validation=1)
    run = tmp_path / "run"
    cmd = [
        *[sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(TRAIN)],
        *["--bundle_root", str(BUNDLE), "--tracking", "mlflow", "--dataset_dir", str(datalist)],
        *["--output_dir", str(run), "--weights", str(run / "model.pt"), "--save_execute_config"],
        *[str(run / "executed_config.json"), "--epoch_iterations", "2", "--max_epochs", "2", "--batch_size", "2"],
        *["--val_batches", "1", "--network_preset", TINY_NET, "--image_size", "32"],
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Epoch[2] Metrics -- val_loss" in proc.stdout + proc.stderr, "validation StatsHandler was dropped"
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{run / 'mlruns.db'}")
    name = ConfigParser.load_config_files(TRAIN).get("experiment_name", "monai_experiment")
    experiment = client.get_experiment_by_name(name)
    (record,) = client.search_runs([experiment.experiment_id])
    assert {"train_loss", "val_loss"} <= set(record.data.metrics)
    assert [a.path for a in client.list_artifacts(record.info.run_id)] == ["executed_config.json"]


def test_the_shipped_weights_load_under_the_inference_configs() -> None:
    """models/model.pt records the settings it was trained under, and they are those the inference configs check."""
    parser = ConfigParser()
    parser.read_config(INFERENCE)
    parser["bundle_root"] = str(BUNDLE)
    if not WEIGHTS.is_file():
        pytest.skip(f"{WEIGHTS} is absent")
    net = parser.get_parsed_content("trained_network")
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    # made before 0.7.0: the scheduler's arguments by key (scripts.checkpoints.upgraded reads them)
    assert state["settings"]["diffusion_range"] == [-1, 1] and state["settings"]["noise_type"] == "pyramid"
    # A regression pin, copied from the code's output (not derived): the shipped demo weights' network. A change means
    # the demo preset (or MONAI's UNet) changed and models/model.pt, its calibration and the model card's figures no
    # longer belong to the code.
    assert sum(p.numel() for p in net.parameters()) == 1_114_532


def test_the_demo_command_scores_with_the_cpu_profile_and_the_shipped_calibration_fits_it() -> None:
    """README command 1 merges cpu.yaml last (13 timesteps, t = 75..87), and models/calibration.json was made under
    exactly its settings and the shipped weights, so the demo writes a z-map (the calibration is not ignored)."""
    import ast
    import re

    from test_readme import readme_commands

    demo = readme_commands()[0].split("monai.bundle run inference", 1)[1]
    files = ast.literal_eval(re.search(r'--config_file "(\[.+?\])"', demo).group(1))
    assert Path(files[-1]).name == "cpu.yaml"
    parser = ConfigParser()
    parser.read_config([str(REPO / f) for f in files])
    parser["bundle_root"] = str(BUNDLE)
    for key, value in re.findall(r"--(\w+) (\S+)", demo):
        if key not in ("config_file", "bundle_root"):
            parser[key] = value
    assert parser.get_parsed_content("inferer").timesteps == list(range(75, 88))
    if not (BUNDLE / "models" / "calibration.json").is_file():
        pytest.skip("models/calibration.json is absent")
    calibration = parser.get_parsed_content("calibration")
    assert calibration is not None, "the shipped calibration does not fit the demo command: remake it (model card)"
