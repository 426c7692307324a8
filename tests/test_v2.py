"""The v2 profile (configs/v2.yaml): the shifted cosine schedule, v-prediction in training, scoring and the reverse
chain, the weights' record of both, and the profile run end to end on tiny made (synthetic) studies."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.networks.schedulers import DDPMScheduler
from monai.networks.schedulers.scheduler import NoiseSchedules
from runner import TINY_ARGS, config_files, run_bundle, tiny_dataset, weights_settings

from scripts.baselines.sampling import ReverseChainInferer
from scripts.checkpoints import LEGACY_DEFAULTS, check_settings, load_network, upgraded
from scripts.diffusion import eps_from_prediction, make_scheduler, q_sample, schedule_terms, shifted_cosine_logsnr
from scripts.errors import StudyError
from scripts.scoring import ANDiInferer
from scripts.training import AutocastDiffusionInferer

V2 = {"schedule": "shifted_cosine", "prediction_type": "v_prediction", "image_size": 128}


def logsnr(alpha_bar: torch.Tensor) -> torch.Tensor:
    return torch.log(alpha_bar.double() / (1.0 - alpha_bar.double()))


def test_shifted_cosine_is_a_monai_schedule_monotone_in_0_1_and_shifted_for_the_image_size():
    assert "shifted_cosine" in NoiseSchedules
    direct = DDPMScheduler(1000, schedule="shifted_cosine", image_size=128, base_size=64)
    torch.testing.assert_close(make_scheduler(**V2).alphas_cumprod, direct.alphas_cumprod)
    alpha_bar = direct.alphas_cumprod
    assert alpha_bar.shape == (1000,) and bool((alpha_bar > 0).all()) and bool((alpha_bar < 1).all())
    assert bool((alpha_bar.diff() < 0).all())
    torch.testing.assert_close(alpha_bar, torch.cumprod(1 - direct.betas, 0))
    assert float(direct.betas.max()) <= 0.999
    # step i is t = (i + 1) / T: logsnr(t) = -2 log tan(pi t / 2) + 2 log(64 / 128), away from the clip
    for i in (9, 99, 499, 899):
        t = (i + 1) / 1000
        expected = -2 * math.log(math.tan(math.pi * t / 2)) + 2 * math.log(64 / 128)
        assert abs(float(logsnr(alpha_bar[i])) - expected) < 1e-3 * max(1.0, abs(expected))
        assert abs(float(shifted_cosine_logsnr(torch.tensor(t, dtype=torch.float64), 128)) - expected) < 1e-9
    # the shift moves every step to lower log-SNR by 2 log 2; at the base size it is the cosine schedule
    unshifted = make_scheduler(schedule="shifted_cosine", image_size=64).alphas_cumprod
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    torch.testing.assert_close(unshifted[:900].double(), torch.cos(math.pi * t[:900] / 2) ** 2, atol=1e-6, rtol=0)
    assert bool((alpha_bar[:-1] < unshifted[:-1]).all())  # the last step of both is at the clip
    # the clip: t = 1 sits at the documented lower end, logsnr -15
    assert float(shifted_cosine_logsnr(torch.tensor(1.0), 128)) == -15.0
    with pytest.raises(ValueError, match="prediction_type"):
        make_scheduler(prediction_type="sample")
    with pytest.raises(ValueError, match="schedule"):
        make_scheduler(schedule="no_such_schedule")


def test_the_default_scheduler_is_unchanged():
    s = make_scheduler()
    reference = DDPMScheduler(1000, schedule="linear_beta", beta_start=1e-4, beta_end=0.02, clip_sample=False)
    assert s.prediction_type == "epsilon"
    assert torch.equal(s.betas, reference.betas) and torch.equal(s.alphas_cumprod, reference.alphas_cumprod)


def test_eps_from_prediction_inverts_v_exactly():
    s = make_scheduler(**V2)
    g = torch.Generator().manual_seed(0)
    x_0 = torch.randn((6, 4, 8, 8), generator=g, dtype=torch.float64)
    eps = torch.randn((6, 4, 8, 8), generator=g, dtype=torch.float64)
    t = torch.tensor([0, 25, 124, 500, 900, 999])
    terms = schedule_terms(s, t)
    ab = terms.alpha_bar.double()
    x_t = ab.sqrt() * x_0 + (1 - ab).sqrt() * eps
    v = ab.sqrt() * eps - (1 - ab).sqrt() * x_0
    torch.testing.assert_close(v.float(), s.get_velocity(x_0.float(), eps.float(), t), atol=1e-5, rtol=1e-5)
    terms64 = type(terms)(**{k: getattr(terms, k).double() for k in ("alpha", "alpha_bar", "alpha_bar_prev", "beta")})
    torch.testing.assert_close(eps_from_prediction(v, x_t, terms64, "v_prediction"), eps, atol=1e-12, rtol=0)
    assert eps_from_prediction(eps, x_t, terms64, "epsilon") is eps
    with pytest.raises(ValueError, match="prediction_type"):
        eps_from_prediction(v, x_t, terms64, "sample")


class TrueV(torch.nn.Module):
    """A "network" that knows x_0 and outputs the true v (or, with ``epsilon``, the true noise) of its input x_t."""

    def __init__(self, x_0: torch.Tensor, scheduler: DDPMScheduler, prediction_type: str) -> None:
        super().__init__()
        self.x_0, self.scheduler, self.prediction_type = x_0, scheduler, prediction_type

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context=None) -> torch.Tensor:
        terms = schedule_terms(self.scheduler, timesteps, device=x.device)
        ab = terms.alpha_bar.double()
        eps = (x.double() - ab.sqrt() * self.x_0.double()) / (1 - ab).sqrt()
        if self.prediction_type == "epsilon":
            return eps.float()
        return (ab.sqrt() * eps - (1 - ab).sqrt() * self.x_0.double()).float()


def test_training_turns_the_true_v_into_the_true_noise():
    s = make_scheduler(**V2)
    g = torch.Generator().manual_seed(1)
    x_0 = torch.randn((4, 4, 8, 8), generator=g)
    noise = torch.randn((4, 4, 8, 8), generator=g)
    t = torch.tensor([3, 60, 300, 800])
    eps_hat = AutocastDiffusionInferer(s)(x_0, TrueV(x_0, s, "v_prediction"), noise, t)
    torch.testing.assert_close(eps_hat, noise, atol=1e-4, rtol=1e-4)  # the target of the loss: eps MSE ~ 0


def test_scoring_and_the_reverse_chain_read_v_as_its_noise():
    x_0 = torch.rand((1, 4, 16, 16), generator=torch.Generator().manual_seed(2))  # one slice, preprocessed scale
    x_diff = 2 * x_0 - 1  # what the network sees (diffusion_range [-1, 1])
    v2, v2_eps = make_scheduler(**V2), make_scheduler(**{**V2, "prediction_type": "epsilon"})
    options = {"batch_size": 3, "amp": False, "channels_last": False}

    def score(scheduler: DDPMScheduler, network: torch.nn.Module) -> torch.Tensor:
        return ANDiInferer(scheduler, 25, 125, 25, **options).score_slices(x_0, network)

    # d_t = 0 (up to rounding) when the network is right, whatever it predicts; v read as noise is far off
    right_eps = score(make_scheduler(), TrueV(x_diff, make_scheduler(), "epsilon"))
    right_v = score(v2, TrueV(x_diff, v2, "v_prediction"))
    wrong = score(v2_eps, TrueV(x_diff, v2, "v_prediction"))
    assert float(right_eps.max()) < 1e-9 and float(right_v.max()) < 1e-9
    assert float(wrong.mean()) > 1e3 * float(right_v.max())
    # the reverse chain of AnoDDPM and AutoDDPM: a step from the true v is the step from the true noise
    noise = torch.randn(x_diff.shape, generator=torch.Generator().manual_seed(3))
    steps = []
    for scheduler in (v2_eps, v2):
        chain = ReverseChainInferer(scheduler, t_upper=100, amp=False, channels_last=False)
        terms = chain.terms(100, x_0.device)
        network = TrueV(x_diff, scheduler, scheduler.prediction_type)
        steps.append(chain.denoise(network, q_sample(x_diff, noise, terms), 100, terms, chain.generator(x_0.device)))
    torch.testing.assert_close(steps[0], steps[1], atol=1e-4, rtol=1e-4)


V_PREDICTION_REFUSED = "scheduler.prediction_type: trained with 'epsilon', configured 'v_prediction'"
OLDEST_RECORD = {  # weights' settings as recorded before the schedule and prediction type were (the shipped weights')
    "method": "ANDi",
    "diffusion_range": [-1, 1],
    "modalities": ["t1", "t1c", "t2", "flair"],
    "image_size": 32,
    "num_train_timesteps": 1000,
    "beta_start": 0.0001,
    "beta_end": 0.02,
}


def test_a_record_by_key_reads_as_the_scheduler_it_makes_and_without_the_new_keys_as_linear_beta_epsilon():
    """Planted bugs it fails on: the legacy defaults not filled in (a record without ``schedule`` refused), the
    scheduler's arguments read as other ones (beta_end dropped), a v-prediction configuration let through."""
    assert not set(LEGACY_DEFAULTS) & set(OLDEST_RECORD)
    check_settings("old.pt", OLDEST_RECORD, weights_settings())
    with pytest.raises(StudyError, match=V_PREDICTION_REFUSED):
        check_settings("old.pt", OLDEST_RECORD, weights_settings(prediction_type="v_prediction"))
    with pytest.raises(StudyError, match="scheduler.schedule_args.beta_end: trained with 0.03, configured 0.02"):
        check_settings("old.pt", {**OLDEST_RECORD, "beta_end": 0.03}, weights_settings())
    assert upgraded(weights_settings()) == weights_settings()  # this version's records are read as they are


def post_step(record: dict, cls: str) -> dict:
    """The post-processing step of class ``cls`` as ``run.json`` describes it."""
    steps = [s for s in record["objects"]["postprocessing"]["transforms"] if s["class"].endswith(cls)]
    assert len(steps) == 1, [s["class"] for s in record["objects"]["postprocessing"]["transforms"]]
    return steps[0]


@pytest.mark.slow
def test_v2_trains_scores_and_its_weights_are_refused_by_the_default(tmp_path: Path):
    """v2 end to end, read back from what ran (``run.json``: the objects as they describe themselves) rather than
    from the config. Planted bugs it fails on: v2's window not reaching the inferer (t = 75.. instead of 25..125),
    the median filter left at the default size 5 instead of 4, the training noise forgetting the discount (0.8, or
    the equation's pyramid instead of the authors'), the clamp or the background off."""
    data = tiny_dataset(tmp_path / "data", n_healthy=2, n_anomalous=1, n_validation=1)
    out = tmp_path / "train"
    train = ["--dataset_dir", str(data), "--output_dir", str(out), "--weights", str(out / "model.pt")]
    train += ["--max_epochs", "1", "--epoch_iterations", "2", "--batch_size", "4", "--val_batches", "1", *TINY_ARGS]
    run_bundle("training", ["train.yaml", "v2.yaml"], *train, "--global_batch_size", "4")
    recorded = torch.load(out / "model.pt", weights_only=True)["settings"]
    assert recorded["scheduler.prediction_type"] == "v_prediction"
    assert recorded["scheduler.schedule"] == "truncated_cosine"
    trained = json.loads((out / "run.json").read_text())
    assert trained["workflow"] == "training"
    noise = trained["objects"]["prepare_batch"]["noise_fn"]
    assert noise["func"] == "scripts.noise.pyramid_noise_authors"
    assert (noise["discount"], noise["levels"]) == (0.9, 10)
    assert trained["objects"]["ema"]["warmup"] == "decay"
    score = ["--dataset_dir", str(data), "--weights", str(out / "model.pt"), "--t_stride", "50", *TINY_ARGS]
    run_bundle("inference", ["inference.yaml", "v2.yaml"], *score, "--output_dir", str(tmp_path / "v2"))
    study = json.loads(data.read_text())["testing"][0]["name"]
    assert (tmp_path / "v2" / study / "anomaly.nii.gz").is_file()
    scored = json.loads((tmp_path / "v2" / "run.json").read_text())
    inferer = scored["objects"]["inferer"]
    assert inferer["timesteps"] == list(range(25, 125, 50))  # v2's window (25..124) at the test's stride
    assert inferer["clamp_x0"] is True and inferer["zero_background"] is True
    assert post_step(scored, "MedianFilterd")["op"]["size"] == 4
    refused = run_bundle("inference", "inference.yaml", *score, "--output_dir", str(tmp_path / "default"), check=False)
    assert refused.returncode == 1
    errors = [line for line in (refused.stdout + refused.stderr).splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, refused.stderr[-2000:]
    assert "scheduler.prediction_type: trained with 'v_prediction', configured 'epsilon'" in errors[0]
    assert "scheduler.schedule: trained with 'truncated_cosine', configured 'linear_beta'" in errors[0]
    assert "Traceback" not in refused.stderr


def test_the_shipped_weights_predate_the_record_and_are_refused_under_v2():

    weights = Path(__file__).resolve().parents[1] / "bundle" / "models" / "model.pt"
    if not weights.is_file():
        pytest.skip(f"{weights} is absent")
    assert not set(LEGACY_DEFAULTS) & set(torch.load(weights, map_location="cpu", weights_only=True)["settings"])
    parser = ConfigParser()
    parser.read_config(config_files(["inference.yaml", "v2.yaml"]))
    parser["bundle_root"] = str(weights.parents[1])
    network, expected = parser.get_parsed_content("network_def"), parser.get_parsed_content("weights_settings")
    with pytest.raises(StudyError, match=V_PREDICTION_REFUSED):
        load_network(network, parser.get_parsed_content("weights"), expected=expected)
