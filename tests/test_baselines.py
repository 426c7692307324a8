"""The baselines (DAE, AnoDDPM, AutoDDPM, FLAIR thresholding): their noise, their inferers on tiny made inputs, and
each one trained and scored through `python -m monai.bundle run` with its own configs."""

from __future__ import annotations

import json
import math
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from runner import REPO, TINY_NET, bundle_cmd, config_files, tiny_dataset

from scripts.baselines.anoddpm import AnoDDPMInferer
from scripts.baselines.autoddpm import AutoDDPMInferer
from scripts.baselines.dae import CoarseNoisePrepareBatch, DAEInferer, MaskedMSELoss, make_dae_network
from scripts.baselines.flair import FLAIRInferer, best_dice_threshold
from scripts.diffusion import make_scheduler
from scripts.errors import StudyError
from scripts.networks import make_network
from scripts.noise import _SIMPLEX_GRADIENTS, NOISE_TYPES, coarse_noise, get_noise_fn, simplex3d, simplex_noise
from scripts.values import file_sha256

TINY_DDPM = TINY_NET
TINY_DAE = "tiny"  # scripts.baselines.dae.DAE_PRESETS["tiny"]
SCHEDULER = make_scheduler()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors on a shared machine: one thread avoids the cost of waking idle workers on every op."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------- noise


def neighbour_correlation(noise: torch.Tensor) -> float:
    """Correlation of horizontally adjacent pixels (white noise: 0; smooth noise: close to 1)."""
    return float(torch.corrcoef(torch.stack([noise[..., :-1].flatten(), noise[..., 1:].flatten()]))[0, 1])


def simplex_reference(x: float, y: float, z: float, perm: list[int]) -> float:
    """Gustavson's scalar 3D simplex noise, transcribed branch by branch, for a few points."""
    s = (x + y + z) / 3.0
    i, j, k = math.floor(x + s), math.floor(y + s), math.floor(z + s)
    t = (i + j + k) / 6.0
    x0, y0, z0 = x - (i - t), y - (j - t), z - (k - t)
    if x0 >= y0:
        o1, o2 = ((1, 0, 0), (1, 1, 0)) if y0 >= z0 else ((1, 0, 0), (1, 0, 1)) if x0 >= z0 else ((0, 0, 1), (1, 0, 1))
    else:
        o1, o2 = ((0, 0, 1), (0, 1, 1)) if y0 < z0 else ((0, 1, 0), (0, 1, 1)) if x0 < z0 else ((0, 1, 0), (1, 1, 0))
    total = 0.0
    for n, o in enumerate(((0, 0, 0), o1, o2, (1, 1, 1))):
        d = (x0 - o[0] + n / 6.0, y0 - o[1] + n / 6.0, z0 - o[2] + n / 6.0)
        g = _SIMPLEX_GRADIENTS[perm[(i & 255) + o[0] + perm[(j & 255) + o[1] + perm[(k & 255) + o[2]]]] % 12]
        falloff = 0.6 - sum(c * c for c in d)
        if falloff > 0:
            total += falloff**4 * sum(a * b for a, b in zip(g, d, strict=True))
    return 32.0 * total


def test_simplex3d_matches_the_reference_implementation():
    g = torch.Generator().manual_seed(0)
    perm = torch.randperm(256, generator=g)
    perm = torch.cat((perm, perm))
    points = torch.rand((64, 3), generator=g, dtype=torch.float64) * 40.0
    points[:4] = torch.tensor([[1.0, 1.0, 1.0], [0.5, 0.5, 2.0], [3.0, 2.0, 3.0], [2.0, 2.0, 0.0]], dtype=torch.float64)
    got = simplex3d(points, perm)
    want = [simplex_reference(*p.tolist(), perm.tolist()) for p in points]
    np.testing.assert_allclose(got.numpy(), want, atol=1e-9)


def test_simplex_noise_unit_variance_smooth_seeded():
    assert "simplex" in NOISE_TYPES
    noise = get_noise_fn("simplex", levels=6, discount=0.8)((4, 4, 64, 64), generator=torch.Generator().manual_seed(1))
    per_sample = noise.view(4, -1)
    torch.testing.assert_close(per_sample.std(1), torch.ones(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(per_sample.mean(1), torch.zeros(4), atol=1e-4, rtol=0)
    assert neighbour_correlation(noise) > 0.8 > 0.05 > abs(neighbour_correlation(torch.randn(4, 4, 64, 64)))
    again = simplex_noise((4, 4, 64, 64), generator=torch.Generator().manual_seed(1), max_points=5000)  # chunked
    torch.testing.assert_close(noise, again)
    assert not torch.allclose(noise[:, 0], noise[:, 1]), "channels must get independent noise"
    assert not torch.allclose(noise, simplex_noise((4, 4, 64, 64), generator=torch.Generator().manual_seed(2)))


def test_coarse_noise_amplitude_smoothness_and_roll():
    noise = coarse_noise((64, 4, 64, 64), resolution=16, std=0.2, generator=torch.Generator().manual_seed(0))
    assert 0.11 < float(noise.std()) < 0.16  # bilinear upsampling keeps ~2/3 of the coarse std
    assert neighbour_correlation(noise) > 0.9
    # each sample is the upsampled coarse draw rolled by its own random shift
    noise = coarse_noise((3, 2, 16, 16), resolution=4, std=0.2, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)
    upsampled = F.interpolate(
        0.2 * torch.randn((3, 2, 4, 4), generator=g), size=(16, 16), mode="bilinear", align_corners=True
    )
    shifts = []
    for b in range(3):
        found = [
            (r, c)
            for r in range(16)
            for c in range(16)
            if torch.allclose(torch.roll(upsampled[b], (r, c), (-2, -1)), noise[b])
        ]
        assert len(found) == 1
        shifts += found
    assert len(set(shifts)) > 1
    torch.testing.assert_close(noise, coarse_noise((3, 2, 16, 16), 4, 0.2, generator=torch.Generator().manual_seed(1)))


def test_dae_batch_preparation_and_loss_are_brain_only():
    x = torch.zeros(2, 4, 32, 32)
    x[:, :, 8:24, 8:24] = 1.0
    torch.manual_seed(0)
    noisy, clean = CoarseNoisePrepareBatch(resolution=16, std=0.2)({"image": x})
    assert torch.equal(clean, x)
    assert torch.equal(noisy[:, :, :8], x[:, :, :8]), "noise must stay inside the brain"
    assert (noisy[:, :, 8:24, 8:24] - 1.0).abs().max() > 0.01
    prediction = x.clone()
    prediction[:, :, :4] = 5.0  # outside the brain: not penalised
    assert float(MaskedMSELoss()(prediction, x)) == 0.0
    prediction[:, :, 10, 10] = 2.0
    assert float(MaskedMSELoss()(prediction, x)) == pytest.approx(2 * 4 / x.numel())


# ---------------------------------------------------------------------------------------------------- inferers


class ZeroNoise(torch.nn.Module):
    """Stand-in noise predictor: predicts no noise."""

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


class OracleNoise(torch.nn.Module):
    """Stand-in noise predictor that knows the clean slices x_0 (in the diffusion's range):
    eps = (x_t - sqrt(a_t) x_0) / sqrt(1 - a_t)."""

    def __init__(self, x_0: torch.Tensor) -> None:
        super().__init__()
        self.x_0 = x_0

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        alpha_bar = SCHEDULER.alphas_cumprod[timesteps].float().view(-1, 1, 1, 1)
        return (x - alpha_bar.sqrt() * self.x_0) / (1.0 - alpha_bar).sqrt()


class Smoother(torch.nn.Module):
    """Stand-in identity-ish autoencoder: a 5 x 5 box filter (reproduces smooth tissue, not small bright spots)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, kernel_size=5, stride=1, padding=2, count_include_pad=False)


def volumes(batch: int = 2, size: int = 16, depth: int = 5, seed: int = 0) -> torch.Tensor:
    """(B, 4, size, size, depth) with a smooth brain square on the inner slices; slices 0 and depth-1 empty."""
    g = torch.Generator().manual_seed(seed)
    v = torch.zeros(batch, 4, size, size, depth)
    q = size // 4
    v[:, :, q : size - q, q : size - q, 1 : depth - 1] = 0.5 + 0.05 * torch.rand(
        batch, 4, size - 2 * q, size - 2 * q, depth - 2, generator=g
    )
    return v


def tiny_ddpm() -> torch.nn.Module:
    torch.manual_seed(0)
    return make_network(TINY_DDPM).eval()


INFERERS = {
    "dae": (lambda: DAEInferer(erosion_radius=1), Smoother),
    "anoddpm": (lambda: AnoDDPMInferer(SCHEDULER, t_upper=4, batch_size=3, amp=False), tiny_ddpm),
    "autoddpm": (
        lambda: AutoDDPMInferer(SCHEDULER, t_upper=4, t_inpaint=2, resamplings=2, batch_size=3, amp=False),
        tiny_ddpm,
    ),
    "flair": (FLAIRInferer, lambda: None),
}


@pytest.mark.parametrize("method", sorted(INFERERS))
def test_inferer_contract_shape_and_empty_slices(method):
    make_inferer, make_net = INFERERS[method]
    inferer, network = make_inferer(), make_net()
    v = volumes()
    a_m = inferer(v, network)
    assert a_m.shape == v.shape and a_m.dtype == torch.float32
    assert torch.isfinite(a_m).all()
    assert a_m[..., 0].abs().max() == 0 and a_m[..., -1].abs().max() == 0, "slices with no brain must score 0"
    assert a_m[..., 1:-1].abs().max() > 0
    torch.testing.assert_close(inferer(v[0], network), a_m[0])  # one volume (C, H, W, D) as well
    assert inferer(torch.zeros(1, 4, 16, 16, 3), network).abs().max() == 0


@pytest.mark.parametrize("method", ["anoddpm", "autoddpm"])
def test_diffusion_baselines_are_seeded_and_independent_of_batch_size(method):
    make_inferer, make_net = INFERERS[method]
    network, v = make_net(), volumes(batch=1)
    first, second = make_inferer(), make_inferer()
    second.batch_size = 64
    torch.testing.assert_close(first(v, network), second(v, network), atol=1e-5, rtol=1e-4)
    other = make_inferer()
    other.seed = 1
    assert not torch.allclose(first(v, network), other(v, network))


@pytest.mark.parametrize("noise_type", ["gaussian", "simplex"])
def test_reverse_chain_with_an_oracle_gives_back_the_input(noise_type):
    v = volumes(batch=1)[0]
    x_0 = v[..., 1:-1].permute(3, 0, 1, 2)
    inferer = AnoDDPMInferer(SCHEDULER, t_upper=30, noise_type=noise_type)
    oracle = OracleNoise(inferer.diffusion_range.to_diffusion(x_0))
    x_hat = inferer.reconstruct(x_0, oracle, inferer.generator(x_0.device))
    torch.testing.assert_close(x_hat, x_0, atol=1e-4, rtol=0)
    assert not torch.allclose(inferer.reconstruct(x_0, ZeroNoise(), inferer.generator(x_0.device)), x_0, atol=1e-2)


def test_autoddpm_mask_is_thresholded_per_channel_and_dilated():
    inferer = AutoDDPMInferer(SCHEDULER, masking_threshold=[0.5, 0.5, 0.5, 2.0], dilation_radius=1)
    residual = torch.zeros(1, 4, 9, 9)
    residual[0, 3, 2, 2] = 1.0  # below channel 3's tau
    residual[0, 1, 5, 5] = 1.0  # above channel 1's tau
    mask = inferer.anomaly_mask(residual, torch.ones(1, 1, 9, 9, dtype=torch.bool))
    want = torch.zeros(1, 1, 9, 9, dtype=torch.bool)
    want[0, 0, 4:7, 4:7] = True
    assert torch.equal(mask, want)


def test_repaint_keeps_the_known_region_and_fills_the_unknown_from_the_model():
    v = volumes(batch=1)[0]
    x_0 = v[..., 1:-1].permute(3, 0, 1, 2)
    mask = torch.zeros(x_0.shape[0], 1, 16, 16, dtype=torch.bool)
    mask[:, :, 6:10, 6:10] = True
    x_stitch = torch.where(mask, torch.zeros_like(x_0), x_0)
    inferer = AutoDDPMInferer(SCHEDULER, t_inpaint=5, resamplings=3)
    x_inp = inferer.inpaint(x_0, x_stitch, mask, ZeroNoise(), inferer.generator(x_0.device))
    known = ~mask.expand_as(x_0)
    assert torch.equal(x_inp[known], x_0[known]), "the known region must be x_0 exactly at the end"
    assert (x_inp[~known] - x_0[~known]).abs().mean() > 0.1, "the unknown region must come from the model"
    oracle = OracleNoise(inferer.diffusion_range.to_diffusion(x_0))
    oracle = inferer.inpaint(x_0, x_stitch, mask, oracle, inferer.generator(x_0.device))
    torch.testing.assert_close(oracle, x_0, atol=1e-4, rtol=0)


def blob_volume() -> tuple[torch.Tensor, torch.Tensor]:
    """One smooth brain volume (1, 4, 32, 32, 3) with a bright 4 x 4 blob in FLAIR and T2 of the middle slice."""
    v = torch.zeros(1, 4, 32, 32, 3)
    v[:, :, 4:28, 4:28, :] = 0.5
    blob = torch.zeros(32, 32, 3, dtype=torch.bool)
    blob[14:18, 14:18, 1] = True
    v[0, 2][blob] = 1.5
    v[0, 3][blob] = 1.5
    return v, blob


@pytest.mark.parametrize("method", ["flair", "dae"])
def test_a_planted_bright_blob_scores_higher_than_background(method):
    v, blob = blob_volume()
    inferer, network = (FLAIRInferer(), None) if method == "flair" else (DAEInferer(2), Smoother())
    a = inferer(v, network)[0].amax(0)  # max over modalities, as the post-processing
    brain = v[0].abs().amax(0) > 0
    assert float(a[blob].min()) > float(a[brain & ~blob].max())
    if method == "dae":  # smooth tissue is reproduced and the brain's rim is eroded away: 0 beyond the blob's halo
        halo = F.max_pool2d(blob.permute(2, 0, 1)[:, None].float(), 5, stride=1, padding=2)[:, 0].permute(1, 2, 0) > 0
        assert float(a[brain & ~halo].max()) == 0.0


def test_best_dice_threshold_is_the_best_cut():
    rng = np.random.default_rng(0)
    labels = [rng.random((6, 7)) < 0.3 for _ in range(3)]
    maps = [y * 0.5 + rng.random(y.shape) for y in labels]
    masks = [rng.random(y.shape) < 0.9 for y in labels]
    threshold, dice = best_dice_threshold(maps, labels, masks)

    def dice_at(t: float) -> float:
        pred = np.concatenate([(m > t)[k] for m, k in zip(maps, masks, strict=True)])
        truth = np.concatenate([y[k] for y, k in zip(labels, masks, strict=True)])
        return 2 * (pred & truth).sum() / (pred.sum() + truth.sum())

    values = np.unique(np.concatenate([m[k] for m, k in zip(maps, masks, strict=True)]))
    brute = max(dice_at(t) for t in np.append(values - 1e-9, values[0] - 1.0))
    assert dice == pytest.approx(brute) and dice_at(threshold) == pytest.approx(dice)
    with pytest.raises(ValueError, match="no anomalous voxel"):
        best_dice_threshold(maps, [np.zeros_like(y) for y in labels])


def test_dae_network_presets_map_slices_to_slices():
    net = make_dae_network(TINY_DAE, in_channels=4)
    assert net(torch.zeros(2, 4, 32, 32)).shape == (2, 4, 32, 32)
    assert 1.0e6 < sum(p.numel() for p in make_dae_network("cpu").parameters()) < 1.5e6
    with pytest.raises(ValueError, match="unknown DAE preset"):
        make_dae_network("huge")


# ---------------------------------------------------------------------------------------------------- workflows


METHODS = ("dae", "anoddpm", "autoddpm", "flair")
TRAINED = ("dae", "anoddpm", "autoddpm")
COMMON = {"image_size": 32, "register": False}  # tiny images; the made studies are on no atlas lattice
CHAINS = {"anoddpm": {"t_upper": 20}, "autoddpm": {"t_upper": 20, "t_inpaint": 3, "resamplings": 2}}


def preset(method: str) -> str:
    return TINY_DAE if method == "dae" else TINY_DDPM


def overrides_cmd(workflow: str, configs: list[str], **overrides: object) -> list[str]:
    """`python -m monai.bundle run WORKFLOW` with the merged ``configs`` and ``--key value`` overrides."""
    args = [x for k, v in overrides.items() for x in (f"--{k}", str(v).lower() if isinstance(v, bool) else str(v))]
    return bundle_cmd(workflow, configs, *args)


def run_chain(commands: list[list[str]]) -> list[subprocess.CompletedProcess]:
    """Run the commands one after the other (a training, then its scoring); stop at the first failure.

    One thread each: tiny tensors, on a machine shared with other runs (subprocess.run kills a run that times out).
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = []
    for cmd in commands:
        done.append(subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=300))
        if done[-1].returncode != 0:
            break
    return done


@pytest.fixture(scope="module")
def workflows(tmp_path_factory) -> dict:
    """Tiny made studies; every baseline trained (3 iterations) and then scored with its own configs through the
    command line, the four methods side by side."""
    root = tmp_path_factory.mktemp("baselines")
    data = tiny_dataset(root / "data", n_healthy=3, n_anomalous=1, n_validation=1)
    chains = {}
    for m in METHODS:
        score = overrides_cmd(
            "inference",
            ["inference.yaml", f"{m}.yaml"],
            dataset_dir=data,
            output_dir=root / f"out_{m}",
            **COMMON,
            **({} if m == "flair" else {"weights": root / f"{m}.pt", "network_preset": preset(m)}),
            **CHAINS.get(m, {}),
            **({"masking_threshold": "[0.05, 0.05, 0.05, 0.05]"} if m == "autoddpm" else {}),
            **({"segmentation_threshold_file": "null"} if m == "flair" else {}),  # Yen, whatever bundle/models holds
        )
        chains[m] = [score]
        if m in TRAINED:
            train = overrides_cmd(
                "training",
                ["train.yaml", f"{m}_train.yaml"],
                dataset_dir=data,
                output_dir=root / m,
                weights=root / f"{m}.pt",
                epoch_iterations=3,
                checkpoint_interval=3,
                batch_size=4,
                val_batches=1,
                max_epochs=1,
                network_preset=preset(m),
                **COMMON,
            )
            chains[m].insert(0, train)
    with ThreadPoolExecutor(len(chains)) as pool:
        runs = dict(zip(chains, pool.map(run_chain, chains.values()), strict=True))
    return {"root": root, "data": data, "runs": runs}


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_baseline_trains_and_scores_through_the_bundle(method, workflows):
    root, data = workflows["root"], workflows["data"]
    for run in workflows["runs"][method]:
        assert run.returncode == 0, f"{run.args[4]} failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    assert len(workflows["runs"][method]) == (1 if method == "flair" else 2)
    if method in TRAINED:
        assert (root / f"{method}.pt").is_file(), "training wrote no final weights"
        assert (root / method / "checkpoints" / "checkpoint_iteration=3.pt").is_file()
    study = json.loads(data.read_text())["testing"][0]
    ref = nib.load(data.parent / study["flair"])
    folder = root / f"out_{method}" / study["name"]
    a, s = nib.load(folder / "anomaly.nii.gz"), nib.load(folder / "segmentation.nii.gz")
    assert a.shape == ref.shape and s.shape == ref.shape
    amap = a.get_fdata()
    assert np.isfinite(amap).all() and amap.max() > 0
    assert amap[ref.get_fdata() == 0].max() == 0, "map must be 0 outside the brain"
    assert set(np.unique(s.get_fdata())) <= {0.0, 1.0}


def parse_workflow(configs: list[str], workflow: str, **overrides: object) -> object:
    """Evaluate the expression list ``workflow`` of the merged configs in this process (as `run workflow` does)."""
    parser = ConfigParser()
    parser.read_config([str(REPO / f) for f in config_files(configs)])
    parser.update({"bundle_root": str(REPO / "bundle"), **overrides})
    return parser.get_parsed_content(workflow)


def refusal(configs: list[str], key: str, **overrides: object) -> str:
    """The message of the StudyError that parsing ``key`` stops with (MONAI wraps it in a RuntimeError)."""
    with pytest.raises(RuntimeError) as err:
        parse_workflow(configs, key, **overrides)
    cause = err.value
    while cause is not None and not isinstance(cause, StudyError):
        cause = cause.__cause__
    assert cause is not None, f"no StudyError behind {err.value!r}"
    return str(cause)


FLAIR = ["inference.yaml", "flair.yaml"]
AUTODDPM = ["inference.yaml", "autoddpm.yaml"]


@pytest.mark.slow
def test_flair_threshold_is_tuned_written_and_read_back_by_inference(workflows, tmp_path, capsys):
    data, value_file = workflows["data"], tmp_path / "flair_threshold.json"
    common = {"dataset_dir": str(data), "output_dir": str(tmp_path), "segmentation_threshold_file": str(value_file)}
    # the made tumour study is the only labelled one
    parse_workflow(FLAIR, "tune_threshold", datalist_key="testing", **common, **COMMON)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("best-Dice threshold"))
    assert line.endswith(f"written to {value_file}")
    content = json.loads(value_file.read_text())
    result = content["value"]
    assert result["studies"] == 1 and 0 < result["dice"] <= 1 and result["threshold"] > 0
    assert content["settings"]["post.median_filter.op.size"] == 5
    assert content["settings"]["pre.resize.resizer.spatial_size"] == [32, 32, -1]
    assert content["weights"] is None and content["weights_sha256"] is None
    # inference (its segmentation step) picks the file up; a threshold given explicitly wins; no file: Yen
    assert parse_workflow(FLAIR, "post#segment", **common, **COMMON).threshold == result["threshold"]
    given = parse_workflow(FLAIR, "post#segment", **common, **COMMON, segmentation_threshold=0.25, median_filter_size=3)
    assert given.threshold == 0.25
    absent = {**common, "segmentation_threshold_file": str(tmp_path / "absent.json")}
    assert parse_workflow(FLAIR, "post#segment", **absent, **COMMON).threshold is None
    # a file tuned under other settings is refused, naming the file and the difference
    message = refusal(FLAIR, "post#segment", **common, **{**COMMON, "median_filter_size": 3, "image_size": 64})
    assert str(value_file) in message and "post.median_filter.op.size: made with 5, configured 3" in message
    assert "pre.resize.resizer.spatial_size: made with [32, 32, -1], configured [64, 64, -1]" in message
    # and so is it by the inference workflow itself, before any study is scored
    run = subprocess.run(
        overrides_cmd("inference", FLAIR, **common, **COMMON, median_filter_size=3),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode != 0 and "post.median_filter.op.size: made with 5, configured 3" in run.stdout + run.stderr
    assert not (tmp_path / json.loads(data.read_text())["testing"][0]["name"]).exists()


@pytest.mark.slow
def test_autoddpm_masking_threshold_is_calibrated_written_and_read_back_by_inference(workflows, tmp_path, capsys):
    weights, value_file = workflows["root"] / "autoddpm.pt", tmp_path / "autoddpm_calibration.json"
    common = {
        "dataset_dir": str(workflows["data"]),
        "output_dir": str(tmp_path),
        "weights": str(weights),
        "network_preset": TINY_DDPM,
        "masking_threshold_file": str(value_file),
        "calibration_slices": 4,
        "amp": False,
        **COMMON,
        **CHAINS["autoddpm"],
    }
    parse_workflow(AUTODDPM, "calibrate", **common)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("masking_threshold:"))
    assert line.endswith(f"written to {value_file}")
    content = json.loads(value_file.read_text())
    tau = content["value"]["masking_threshold"]
    assert len(tau) == 4 and all(t > 0 for t in tau)
    assert content["weights"] == "autoddpm.pt" and content["weights_sha256"] == file_sha256(weights)
    settings = content["settings"]
    assert settings["inferer.t_upper"] == 20 and settings["inferer.masking_percentile"] == 99
    assert settings["calibration_slices"] == 4  # for the record
    assert settings["inferer.diffusion_range.low"] == -1
    assert settings["inferer.noise_fn"] == "scripts.noise.gaussian_noise"
    # inference's inferer picks the file up; tau given explicitly wins; no file: each volume's own percentile
    assert parse_workflow(AUTODDPM, "inferer", **common).masking_threshold == tau
    given = parse_workflow(AUTODDPM, "inferer", **{**common, "masking_threshold": [0.5], "t_upper": 10})
    assert given.masking_threshold == [0.5]
    absent = {**common, "masking_threshold_file": str(tmp_path / "absent.json")}
    assert parse_workflow(AUTODDPM, "inferer", **absent).masking_threshold is None
    # a file made under other settings, or with other weights, is refused
    message = refusal(AUTODDPM, "inferer", **{**common, "t_upper": 10, "seed": 3})
    assert str(value_file) in message and "inferer.t_upper: made with 20, configured 10" in message
    assert "inferer.seed:" in message
    other = tmp_path / "other.pt"
    other.write_bytes(weights.read_bytes()[:-1] + b"x")
    assert "made with other weights" in refusal(AUTODDPM, "inferer", **{**common, "weights": str(other)})
    # calibrating again under other settings replaces the file (the calibration never reads it)
    parse_workflow(AUTODDPM, "calibrate", **{**common, "t_upper": 10})
    assert json.loads(value_file.read_text())["settings"]["inferer.t_upper"] == 10
