"""The folder a MONAI model-zoo pull request adds: ``python -m scripts.cli zoo-submission OUT --url_base URL``.

It writes ``OUT/models/<name>/``: the bundle without its large files (those of ``large_files.yml``: the zoo's
pre-commit hook refuses files over 1024 KB) and without what runs leave in the bundle folder (``demo``, ``runs``,
``cache``, byte code) or what only this repository reads (``ruff.toml``, which extends the project's
``pyproject.toml``), with ``large_files.yml`` rewritten so that each file's ``url`` is ``URL/<path>``, its md5
checked against the file here. Beside it, ``OUT/bundle_custom_data.md`` names the entries the pull request adds to
the zoo's ``ci/bundle_custom_data.py`` and why (``docs/zoo_submission.md``). The bundle here keeps its files.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import yaml

BUNDLE = Path(__file__).resolve().parents[1]
NAME = "andi_brain_mri_anomaly_detection"
LEFT_OUT_DIRS = {"demo", "runs", "cache", "eval", "__pycache__", ".pytype", ".pytest_cache", ".ruff_cache"}
LEFT_OUT_FILES = {"ruff.toml"}
LEFT_OUT_SUFFIXES = {".pyc"}

# ci/bundle_custom_data.py of the zoo: the lists this bundle joins, and why (the generative bundles of the zoo,
# e.g. brats_mri_axial_slices_generative_diffusion, are in the same two)
CUSTOM_DATA = {
    "exclude_verify_shape_list": (
        "verify_data_shape feeds network_def one input of the metadata's shape; the UNet takes two, (x_t, t). "
        "`verify_net_in_out network_io` (network_def at a fixed timestep) checks the shapes instead."
    ),
    "exclude_verify_torchscript_list": (
        "verify_export_torchscript runs ckpt_export, which scripts network_def; torch.jit.script fails on "
        "DiffusionModelUNet's attention in MONAI 1.6, and ckpt_export's trace passes one input. `run export` "
        "(configs/export.yaml) traces both inputs and writes model.ts and a torch.export program (model.pt2)."
    ),
}


class SubmissionError(ValueError):
    """The submission cannot be written (a bad argument or a large file that does not match its md5)."""


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def large_files(bundle: Path = BUNDLE) -> list[dict]:
    """The entries of ``large_files.yml``, each file's md5 checked against the file in ``bundle``."""
    entries = yaml.safe_load((bundle / "large_files.yml").read_text())["large_files"]
    for entry in entries:
        path = bundle / entry["path"]
        if not path.is_file():
            raise SubmissionError(f"{path}: listed in large_files.yml but absent")
        if md5(path) != entry["hash_val"]:
            raise SubmissionError(f"{path}: md5 {md5(path)} differs from large_files.yml's {entry['hash_val']}")
    return entries


def custom_data_text(name: str) -> str:
    """``bundle_custom_data.md``: the lists of the zoo's ``ci/bundle_custom_data.py`` that ``name`` joins, and why."""
    lines = [f"# Entries to add to the model zoo's ci/bundle_custom_data.py for `{name}`", ""]
    for key, why in CUSTOM_DATA.items():
        lines += [f'- `{key}`: add `"{name}"`. {why}']
    return "\n".join(lines) + "\n"


def write_submission(out_dir: str | os.PathLike, url_base: str, name: str = NAME, bundle: Path = BUNDLE) -> Path:
    """Write ``out_dir/models/<name>`` and ``out_dir/bundle_custom_data.md`` (see the module docstring); returns
    the bundle folder written. ``out_dir`` must not be inside the bundle; an existing ``models/<name>`` is
    replaced."""
    url_base = str(url_base).rstrip("/")
    if not url_base.startswith(("https://", "http://")):
        raise SubmissionError(f"--url_base must be an http(s) URL, got {url_base!r}")
    out = Path(out_dir).resolve()
    if out == bundle or bundle in out.parents:
        raise SubmissionError(f"{out}: the submission folder must not be inside the bundle")
    entries = large_files(bundle)
    large = {e["path"] for e in entries}
    target = out / "models" / name
    partial = target.with_name(name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for root, dirs, files in os.walk(bundle):
        rel_root = Path(root).relative_to(bundle)
        dirs[:] = sorted(d for d in dirs if d not in LEFT_OUT_DIRS)
        for file in sorted(files):
            rel = (rel_root / file).as_posix()
            if rel in large or file in LEFT_OUT_FILES or Path(file).suffix in LEFT_OUT_SUFFIXES:
                continue
            (partial / rel_root).mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(root) / file, partial / rel)
    submitted = [{**e, "url": f"{url_base}/{e['path']}"} for e in entries]
    header = "# Large files of the bundle (model zoo format): downloaded from `url`, checked against `hash_val`.\n"
    text = header + yaml.safe_dump({"large_files": submitted}, sort_keys=False)
    (partial / "large_files.yml").write_text(text)
    shutil.rmtree(target, ignore_errors=True)
    partial.rename(target)
    (out / "bundle_custom_data.md").write_text(custom_data_text(name))
    return target
