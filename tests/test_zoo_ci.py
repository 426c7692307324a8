"""What the MONAI model zoo's own CI and MONAI's workflow checks read, checked in this project's suite (offline).

- The zoo reads ``configs/inference.yaml`` ALONE (``ci/verify_bundle.py``: ``network_def`` for the shape and
  TorchScript checks; its CONTRIBUTING: ``bundle_root``, ``device``, ``network_def``, ``inferer``).
- MONAI's ``create_workflow(...).check_properties()`` for the inference and training workflows.
- A ``--config_file`` list that misses a config another merges over ends in one line.
- The zoo's code-format tools on ``bundle/`` with its settings (``tests/zoo_codeformat.cfg``): isort, black
  ``--skip-magic-trailing-comma``, flake8 (pep8-naming, bugbear, comprehensions).
- Its pre-commit hooks' JSON format (4-space indent, keys unsorted) and 1024 KB limit: every larger file of the
  bundle is in ``large_files.yml``, with its md5.

pytype, the zoo's fourth code-format tool, takes minutes on 2 cores: docs/zoo_submission.md gives its command.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from monai.bundle import ConfigParser, create_workflow
from runner import REPO, tiny_dataset, tiny_weights

from scripts.merge_check import config_list, missing_base

BUNDLE = REPO / "bundle"
CONFIGS = BUNDLE / "configs"
ZOO_CFG = Path(__file__).resolve().parent / "zoo_codeformat.cfg"
MAX_KB = 1024  # the zoo's check-added-large-files --maxkb


def bundle_files() -> list[Path]:
    """The bundle's committed files (what a zoo pull request would add)."""
    out = subprocess.run(["git", "ls-files", "bundle"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return [REPO / f for f in out.split()]


# --- configs/inference.yaml alone -----------------------------------------------------------------------------------


def test_the_inference_config_alone_resolves_what_the_zoo_reads() -> None:
    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "inference.yaml"))
    parser["bundle_root"] = str(BUNDLE)
    for key in ("bundle_root", "device", "network_def", "inferer", "dataset_dir", "output_dir"):
        assert key in parser, key
    assert isinstance(parser.get_parsed_content("device"), torch.device)
    net = parser.get_parsed_content("network_def")
    assert isinstance(net, torch.nn.Module) and sum(p.numel() for p in net.parameters()) > 0
    assert type(parser.get_parsed_content("inferer")).__name__ == "ANDiInferer"
    assert parser.get_parsed_content("dataset_dir") == str(BUNDLE / "demo")


def test_monai_workflow_properties_of_inference_and_training(tmp_path: Path) -> None:
    data = tiny_dataset(tmp_path / "data", n_healthy=3, n_anomalous=1, n_validation=1)
    weights = tiny_weights(tmp_path / "tiny.pt")
    common = {"meta_file": str(CONFIGS / "metadata.json"), "logging_file": False, "bundle_root": str(BUNDLE)}
    tiny = {"network_preset": "tiny", "image_size": 32, "register": False}
    infer = create_workflow(
        config_file=str(CONFIGS / "inference.yaml"),
        workflow_type="inference",
        **common,
        **tiny,
        dataset_dir=str(data),
        output_dir=str(tmp_path / "out"),
        weights=str(weights),
    )
    assert infer.check_properties() == []
    assert len(infer.dataset) == len(json.loads(data.read_text())["testing"]) and infer.dataset.transform is not None
    train = create_workflow(
        config_file=[str(CONFIGS / "inference.yaml"), str(CONFIGS / "train.yaml")],
        workflow_type="training",
        **common,
        **tiny,
        dataset_dir=str(data),
        output_dir=str(tmp_path / "run"),
    )
    assert train.check_properties() == []
    assert train.max_epochs == train.parser.get_parsed_content("max_epochs")


# --- config lists ---------------------------------------------------------------------------------------------------


def test_a_config_list_without_the_config_it_merges_over_ends_in_one_line() -> None:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--bundle_root", "bundle"]
    proc = subprocess.run(
        [*cmd, "--config_file", "['bundle/configs/train.yaml']"], cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: bundle/configs/train.yaml: merged over inference.yaml: add bundle/configs/inference.yaml before it to"
        " --config_file"
    )
    proc = subprocess.run(  # from the bundle folder, as the zoo runs it: a baseline's training without train.yaml
        [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file"]
        + ["['configs/inference.yaml','configs/dae_train.yaml']"],
        cwd=BUNDLE,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("error: configs/dae_train.yaml: merged over train.yaml")


def documented_config_lists() -> list[tuple[str, list[str]]]:
    """Every ``--config_file`` of the README, the model card and the bundle's docs, as paths from the repository
    root (``$C/`` is ``bundle/configs/``; a path starting at ``configs/`` is run from the bundle folder)."""
    found = []
    for doc in [REPO / "README.md", *sorted((BUNDLE / "docs").glob("*.md"))]:
        text = doc.read_text().replace("$C/", "bundle/configs/")
        for value in re.findall(r"--config_file\s+(\"\[[^\]]*\]\"|[^\s\"']+\.yaml)", text):
            files = config_list(["--config_file", value.strip('"')])
            found.append((doc.name, [f if f.startswith("bundle/") else f"bundle/{f}" for f in files]))
    return found


def test_every_documented_config_list_is_complete() -> None:
    lists = documented_config_lists()
    assert len(lists) > 20
    for doc, files in lists:
        assert all((REPO / f).is_file() for f in files), (doc, files)
        assert Path(files[0]).name == "inference.yaml", (doc, files)
        assert missing_base([str(REPO / f) for f in files]) is None, (doc, files)


def test_every_config_but_inference_says_what_it_merges_over() -> None:
    for path in sorted(CONFIGS.glob("*.yaml")):
        config = ConfigParser.load_config_file(str(path))
        if path.name == "inference.yaml":
            assert "merges_over" not in config
        else:
            assert "inference.yaml" in config["merges_over"], path.name
            assert "$import scripts.merge_check" in config["check_merge"], path.name


# --- the zoo's code-format tools and hooks --------------------------------------------------------------------------


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=BUNDLE, capture_output=True, text=True, timeout=600)


def test_bundle_code_passes_isort_with_the_zoo_settings() -> None:
    proc = run_tool("isort", "--settings-path", str(ZOO_CFG), "--check", "--diff", ".")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def test_bundle_code_passes_black_with_the_zoo_settings() -> None:
    targets = [arg for version in ("py37", "py38", "py39") for arg in ("--target-version", version)]
    proc = run_tool("black", "--skip-magic-trailing-comma", "--line-length", "120", *targets, "--check", ".")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


def test_bundle_code_passes_flake8_with_the_zoo_settings() -> None:
    proc = run_tool("flake8", "--config", str(ZOO_CFG), ".")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    plugins = run_tool("flake8", "--version").stdout
    assert "pep8-naming" in plugins and "flake8-bugbear" in plugins, plugins


def test_bundle_json_files_have_4_space_indents() -> None:
    files = [f for f in bundle_files() if f.suffix == ".json"]
    assert len(files) >= 3
    for path in files:
        text = path.read_text()
        assert text == json.dumps(json.loads(text), indent=4) + "\n", f"{path}: not indented by 4 spaces"


def test_every_large_file_of_the_bundle_is_in_large_files_yml_with_its_md5() -> None:
    entries = {e["path"]: e for e in yaml.safe_load((BUNDLE / "large_files.yml").read_text())["large_files"]}
    large = {f.relative_to(BUNDLE).as_posix() for f in bundle_files() if f.stat().st_size > MAX_KB * 1024}
    assert large and large <= set(entries), f"files over {MAX_KB} KB not in large_files.yml: {large - set(entries)}"
    for path, entry in entries.items():
        assert entry["hash_type"] == "md5" and set(entry) >= {"path", "url", "hash_val", "hash_type"}, entry
        assert entry["hash_val"] == hashlib.md5((BUNDLE / path).read_bytes()).hexdigest(), path


@pytest.mark.parametrize("name", ["cpu.yaml", "paper.yaml", "v2.yaml"])
def test_profiles_are_merged_over_inference(name: str) -> None:
    assert missing_base([str(CONFIGS / name)]) == (str(CONFIGS / name), "inference.yaml")
    assert missing_base([str(CONFIGS / "inference.yaml"), str(CONFIGS / name)]) is None


# --- the submission command -----------------------------------------------------------------------------------------


def test_zoo_submission_writes_the_bundle_without_its_large_files(tmp_path: Path) -> None:
    from scripts.cli import main

    main(["zoo-submission", str(tmp_path / "pr"), "--url_base", "https://example.org/andi/"])
    target = tmp_path / "pr" / "models" / "andi_brain_mri_anomaly_detection"
    entries = yaml.safe_load((target / "large_files.yml").read_text())["large_files"]
    here = {e["path"]: e for e in yaml.safe_load((BUNDLE / "large_files.yml").read_text())["large_files"]}
    assert [e["path"] for e in entries] == list(here)
    for entry in entries:
        assert not (target / entry["path"]).exists(), entry["path"]
        assert entry["url"] == "https://example.org/andi/" + entry["path"]
        assert entry["hash_val"] == hashlib.md5((BUNDLE / entry["path"]).read_bytes()).hexdigest()
        assert (BUNDLE / entry["path"]).is_file()  # the bundle here keeps its files
    written = {f.relative_to(target).as_posix() for f in target.rglob("*") if f.is_file()}
    assert {"configs/inference.yaml", "configs/metadata.json", "docs/README.md", "scripts/batch.py"} <= written
    assert (
        not any(f.startswith(("demo/", "runs/")) or f.endswith(".pyc") for f in written) and "ruff.toml" not in written
    )
    assert all((target / f).stat().st_size <= MAX_KB * 1024 for f in written)
    custom = (tmp_path / "pr" / "bundle_custom_data.md").read_text()
    assert "exclude_verify_shape_list" in custom and "exclude_verify_torchscript_list" in custom
    docs = (BUNDLE / "docs" / "zoo_submission.md").read_text()
    assert "`exclude_verify_shape_list`" in docs and "`exclude_verify_torchscript_list`" in docs


def test_zoo_submission_refuses_a_url_that_is_no_url(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "scripts.cli", "zoo-submission", str(tmp_path / "pr"), "--url_base", "models"],
        cwd=BUNDLE,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "--url_base must be an http(s) URL" in proc.stderr
    assert not (tmp_path / "pr").exists()
