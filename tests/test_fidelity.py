"""Fidelity to the authors' code (AlexanderFrotscher/ANDi and UAD-IMAG): the resize, the log floor, the thresholds'
precision, the labels, the noise per study, the `paper` and `v2` profiles and the training pieces they set."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.data import MetaTensor
from monai.transforms import Resized
from runner import preprocessing

from benchmarks.bench.configs import config_parser
from scripts.antialias import SliceResized
from scripts.diffusion import make_scheduler, schedule_terms
from scripts.fingerprint import fingerprint
from scripts.metrics import Subject, dice_at_thresholds, evaluate_subjects
from scripts.scoring import LOG_FLOOR, ANDiInferer, NoiseStream
from scripts.training import ShuffledPassSampler, WarmStartEMAHandler


def volume(seed: int = 0, shape=(4, 60, 60, 5)) -> MetaTensor:
    return MetaTensor(torch.rand(shape, generator=torch.Generator().manual_seed(seed)))


# ------------------------------------------------------------------------------------------------------ the resize
def test_resize_is_torchs_antialiased_bilinear_of_each_slice():
    """torchvision's Resize(128, antialias=True) on a (1, C, H, W) slice is F.interpolate(bilinear, antialias=True)."""
    img = volume(shape=(4, 61, 57, 7))
    for slab in (1, 3, 8):
        out = SliceResized("image", (32, 30, -1), antialias="torch", slab=slab)({"image": img})["image"]
        slices = [img.as_tensor()[None, ..., k] for k in range(7)]
        want = [F.interpolate(x, (32, 30), mode="bilinear", antialias=True) for x in slices]
        assert out.dtype == torch.float32 and out.shape == (4, 32, 30, 7)
        assert torch.equal(out.as_tensor(), torch.stack([w[0] for w in want], dim=-1)), f"slab {slab}"
    plain = F.interpolate(img.as_tensor()[None, ..., 0], (32, 30), mode="bilinear", antialias=False)[0]
    assert not torch.allclose(out.as_tensor()[..., 0], plain, atol=1e-3), "the anti-aliasing must act"


def test_configured_resize_is_the_authors_and_inverts_as_monais():
    pre = preprocessing(image_size=32)
    resize, antialias = pre.transforms[-2], pre.transforms[-3]
    assert isinstance(resize, SliceResized) and not antialias.enabled
    img, label = volume(1), MetaTensor((torch.rand(1, 60, 60, 5) > 0.8).float())
    ours = resize({"image": img, "label": label})
    monai = Resized(["image", "label"], (32, 32, -1), mode=("bilinear", "nearest-exact"), allow_missing_keys=True)
    theirs = monai({"image": img, "label": label})
    assert torch.equal(ours["label"].as_tensor(), theirs["label"].as_tensor())
    assert torch.equal(ours["image"].affine, theirs["image"].affine)
    # the inverse (post#invert) is MONAI's: the same values back on the 60 x 60 grid, the trace emptied
    maps = torch.rand(4, 32, 32, 5)
    a, b = ours["image"].clone(), theirs["image"].clone()
    a.data, b.data = maps.clone(), maps.clone()
    back, want = resize.inverse({"image": a})["image"], monai.inverse({"image": b})["image"]
    assert back.shape == (4, 60, 60, 5) and torch.equal(back.as_tensor(), want.as_tensor())
    assert len(back.applied_operations) == 0 and torch.equal(back.affine, img.affine)


def test_gaussian_switch_keeps_the_earlier_resize_and_changes_the_cache_key():
    img = volume(2)
    pre = preprocessing(image_size=32, resize_antialias="gaussian")
    resize, antialias = pre.transforms[-2], pre.transforms[-3]
    ours = resize(antialias({"image": img}))["image"]
    monai = Resized("image", (32, 32, -1), mode="bilinear", anti_aliasing=True)({"image": img})["image"]
    torch.testing.assert_close(ours.as_tensor(), monai.as_tensor(), rtol=0, atol=1e-6)
    keys = {fingerprint(preprocessing(image_size=32, resize_antialias=m)) for m in ("torch", "gaussian", "none")}
    assert len(keys) == 3, "each anti-aliasing must make its own slice cache"
    with pytest.raises(ValueError, match="resize_antialias"):
        SliceResized("image", (32, 32, -1), antialias="lanczos")


# ------------------------------------------------------------------------------------------------- the log floor
def test_only_exact_zeros_reach_the_log_floor():
    """d_t far below the bundle's earlier floor (1e-12) enters the geometric mean as it is; an exact zero stays
    finite (the authors' map is 0 there: -inf in the log)."""
    eps = torch.full((1, 1, 2, 2), 1e-9)
    eps[0, 0, 0, 0] = 0.0
    eps[0, 0, 1, 1] = 0.5

    class GivenNoise(ANDiInferer):
        def noise_stream(self, t, shape, device, study=None):
            return NoiseStream(None, shape, whole=eps.clone())

    inferer = GivenNoise(make_scheduler(), 75, 80, 1, batch_size=3, amp=False, channels_last=False)
    x0 = torch.full((1, 1, 2, 2), 0.5)  # 2x - 1 = 0: x_t = sqrt(1 - alpha_bar) eps, and the network says eps_hat = 0
    got = inferer.score_slices(x0, lambda x, timesteps: torch.zeros_like(x)).double()
    logs = []
    for t in range(75, 80):
        terms = schedule_terms(inferer.scheduler, torch.tensor([t]))
        coef = (terms.beta.square() / (terms.alpha * (1 - terms.alpha_bar))).double()
        logs.append(torch.log(coef * eps.double().square()))
    want = torch.stack(logs).mean(0).exp()
    assert float(want[0, 0, 0, 1]) < 1e-14, "the test needs d_t below the earlier floor"
    for i, j in ((0, 1), (1, 0), (1, 1)):
        assert float(got[0, 0, i, j]) == pytest.approx(float(want[0, 0, i, j]), rel=1e-5)
    assert LOG_FLOOR == torch.finfo(torch.float32).tiny
    assert 0.0 < float(got[0, 0, 0, 0]) <= 1e-30, "an exact zero: floored at the smallest normal float32, finite"


# ----------------------------------------------------------------------------------------------- the evaluation
def test_ceil_dice_thresholds_are_compared_in_float32():
    """0.012 as float32 is 0.0120000001; a score of exactly that is not above the authors' float32 threshold."""
    on = np.float32(0.012)
    scores = np.array([on, 0.5, 0.0], dtype=np.float32)
    target = np.array([True, True, False])
    assert dice_at_thresholds(scores, target, np.array([0.012]))[0] == pytest.approx(2 / 3)
    assert dice_at_thresholds(scores.astype(np.float64), target, np.array([0.012]))[0] == pytest.approx(1.0)


def test_labels_outside_the_brain_count_under_volume_only():
    mask = np.zeros((8, 8, 4), bool)
    mask[2:6, 2:6] = True
    label = np.zeros((8, 8, 4), np.uint8)
    label[4:8, 4:8, 1:3] = 1  # half of it outside the brain mask
    a = np.random.default_rng(0).random((8, 8, 4)).astype(np.float32)
    subject = Subject("s", a, label, mask)
    whole = evaluate_subjects([subject], voxel_set="volume").subjects[0].label_voxels
    inside = evaluate_subjects([subject], voxel_set="brain").subjects[0].label_voxels
    assert (whole, inside) == (int(label.sum()), int((label.astype(bool) & mask).sum()))
    assert inside < whole


# ------------------------------------------------------------------------------------------ noise per study
def toy_network(x, timesteps):
    return 0.5 * x + 0.01 * timesteps.view(-1, 1, 1, 1).float()


def test_scoring_noise_differs_between_studies_and_repeats_for_one():
    config = config_parser(["inference.yaml"]).get_parsed_content("inferer#study_noise")
    assert config is True, "inference's default is noise per study"
    inferer = ANDiInferer(make_scheduler(), 75, 200, 40, batch_size=7, amp=False, all_slices=True, study_noise=True)
    a, b = volume(3, (4, 16, 16, 3)), volume(4, (4, 16, 16, 3))
    key_a, key_b = inferer.study_key(a), inferer.study_key(b)
    assert key_a != key_b and key_a == inferer.study_key(a.clone())
    na, nb = (inferer.noise_for(80, (3, 4, 16, 16), torch.device("cpu"), k) for k in (key_a, key_b))
    assert abs(float(torch.corrcoef(torch.stack([na.flatten(), nb.flatten()]))[0, 1])) < 0.05
    alone = inferer(a, toy_network)
    assert torch.equal(alone, inferer(a.clone(), toy_network)), "the same study: the same map"
    together = inferer(torch.stack([b, a]), toy_network)
    assert torch.equal(together[1], alone), "a study's map does not depend on the batch it is scored in"
    # the same values under another study's noise give another map; without study noise every study shares it
    shared = ANDiInferer(make_scheduler(), 75, 200, 40, batch_size=7, amp=False, all_slices=True)
    assert not torch.equal(alone, shared(a, toy_network))
    cpu = torch.device("cpu")
    assert torch.equal(shared.noise_for(80, (3, 4, 16, 16), cpu), shared.noise_for(80, (3, 4, 16, 16), cpu))


# ------------------------------------------------------------------------------------------------ the profiles
def test_paper_after_v2_is_the_paper():
    inference = config_parser(["inference.yaml", "evaluate.yaml", "v2.yaml", "cpu.yaml", "paper.yaml"])
    inferer = inference.get_parsed_content("inferer")
    assert inferer.timesteps == list(range(75, 200)) and not inferer.clamp_x0 and not inferer.zero_background
    assert inferer.study_noise and inferer.amp is False and inferer.log_floor == LOG_FLOOR
    scheduler = inference.get_parsed_content("scheduler")
    assert scheduler.prediction_type == "epsilon"
    torch.testing.assert_close(scheduler.betas, torch.linspace(1e-4, 0.02, 1000), rtol=0, atol=1e-9)
    expected = {"schedule": "linear_beta", "resize_antialias": "torch", "label_interpolation": "nearest-exact"}
    expected |= {"intensity_percentile": 99, "median_filter_size": 5, "segmentation": "yen", "voxel_set": "volume"}
    assert {k: inference.get_parsed_content(k) for k in expected} == expected
    training = config_parser(["train.yaml", "v2.yaml", "paper.yaml"])
    training["train_dataset"] = list(range(1000))  # 1000 healthy slices: 8 iterations of 128 per pass
    assert training.get_parsed_content("epoch_iterations") == 8 and training.get_parsed_content("max_epochs") == 233
    assert training.get_parsed_content("train_batch_size") == 128
    assert training.get_parsed_content("noise_discount") == 0.8
    assert training.get_parsed_content("noise_type") == "pyramid_authors"
    assert training.get_parsed_content("autocast") is False
    assert training.get_parsed_content("slice_sampling") == "epochs"
    assert (training.get_parsed_content("lr_start"), training.get_parsed_content("lr_peak")) == (2e-5, 1e-4)
    assert training.get_parsed_content("ema_warmup") == "copy"
    assert training.get_parsed_content("ema_warmup_steps") == 2000


def test_the_global_batch_is_split_across_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert config_parser(["train.yaml", "paper.yaml"]).get_parsed_content("train_batch_size") == 32
    assert config_parser(["train.yaml"]).get_parsed_content("train_batch_size") == 16, "batch_size: per process"
    paper_off = config_parser(["train.yaml", "paper.yaml"])
    paper_off["global_batch_size"] = "null"  # `--global_batch_size null` on a command line arrives as a string
    assert paper_off.get_parsed_content("train_batch_size") == 16


def uad_imag_logsnr(t: torch.Tensor) -> torch.Tensor:
    """UAD-IMAG conf/ANDi_config.py + diffusion.py cosine_schedule: [-15, 15], shifted by 2 log(56 / 224)."""
    t_min, t_max = math.atan(math.exp(-7.5)), math.atan(math.exp(7.5))
    return -2 * torch.log(torch.tan(t_min + t * (t_max - t_min))) + 2 * math.log(56 / 224)


def test_v2_schedule_is_uad_imags_truncated_then_shifted_cosine():
    scheduler = config_parser(["inference.yaml", "v2.yaml"]).get_parsed_content("scheduler")
    alpha_bar = scheduler.alphas_cumprod.double()
    steps = torch.arange(0, 999)  # the last step is where the betas' clip may act
    want = uad_imag_logsnr((steps + 1).double() / 1000)
    torch.testing.assert_close(torch.log(alpha_bar / (1 - alpha_bar))[steps], want, rtol=0, atol=2e-3)
    # the scoring window's log-SNR runs 3.6 -> 0.5 (the earlier v2: 5.0 -> 1.8)
    assert float(want[25]) == pytest.approx(3.60, abs=0.01) and float(want[124]) == pytest.approx(0.45, abs=0.01)


def test_v2_scoring_is_uad_imags_clamped_posterior_mean_with_the_background_at_zero():
    """anomaly_detection.ANDi in continuous time (r, alpha_st, alpha_s of the log-SNR) against the bundle's discrete
    d_t: the same noise, a v-predicting network whose x_0 estimate leaves [-1, 1] in places."""
    config = config_parser(["inference.yaml", "v2.yaml"])
    inferer = config.get_parsed_content("inferer").at_timesteps([25, 60, 124])
    inferer.amp, inferer.channels_last, inferer.study_noise = False, False, False
    x = torch.rand((2, 4, 8, 8), generator=torch.Generator().manual_seed(5))
    x[..., :2, :] = 0.0  # background rows

    def network(z, timesteps):  # a v estimate whose x_0 estimate leaves [-1, 1]
        return -2.0 * z + 0.2

    got = inferer.score_slices(x, network).double()
    batch = (2 * x - 1).double()
    logs = []
    for step in inferer.timesteps:
        t, s = torch.tensor((step + 1) / 1000, dtype=torch.float64), torch.tensor(step / 1000, dtype=torch.float64)
        lt, ls = uad_imag_logsnr(t), uad_imag_logsnr(s)
        alpha_t, sigma_t, alpha_s = torch.sigmoid(lt).sqrt(), torch.sigmoid(-lt).sqrt(), torch.sigmoid(ls).sqrt()
        alpha_st = torch.sqrt((1 + torch.exp(-lt)) / (1 + torch.exp(-ls)))
        r, one_minus_r = torch.exp(lt - ls), -torch.expm1(lt - ls)
        noise = inferer.noise_for(step, x.shape, torch.device("cpu")).double()
        z_t = alpha_t * batch + sigma_t * noise
        x_pred = (alpha_t * z_t - sigma_t * network(z_t, None)).clamp(-1, 1)
        x_q = r * alpha_st * z_t + one_minus_r * alpha_s * batch
        x_mean = r * alpha_st * z_t + one_minus_r * alpha_s * x_pred
        logs.append(torch.log((x_mean - x_q).square()))
    want = torch.stack(logs).mean(0).exp()
    want[batch == -1] = 0
    assert bool((got[..., :2, :] == 0).all())
    torch.testing.assert_close(got, want, rtol=2e-3, atol=0)
    unclamped = ANDiInferer(inferer.scheduler, 25, 125, 50, amp=False, channels_last=False, zero_background=True)
    clamped = ANDiInferer(inferer.scheduler, 25, 125, 50, amp=False, channels_last=False, zero_background=True,
                          clamp_x0=True)  # fmt: skip
    assert not torch.allclose(unclamped.score_slices(x, network), clamped.score_slices(x, network))


# ------------------------------------------------------------------------------------------- training pieces
def run_ema(warmup: str, steps: int, warmup_steps: int = 3, decay: float = 0.9):
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    handler = WarmStartEMAHandler(model, momentum=1 - decay, warmup=warmup, warmup_steps=warmup_steps)
    history = []

    def step(engine, _):
        with torch.no_grad():
            model.weight.fill_(float(engine.state.iteration))  # the online weight at iteration n is n

    engine = Engine(step)
    handler.attach(engine)
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: history.append(float(handler.ema_model.weight)))
    engine.run([0] * steps, max_epochs=1)
    return history


def test_ema_copies_the_weights_first_then_averages():
    history = run_ema("copy", 6)
    assert history[:3] == [1.0, 2.0, 3.0], "copied for the first warmup_steps iterations"
    ema = 3.0
    for n in (4, 5, 6):
        ema = 0.9 * ema + 0.1 * n
        assert history[n - 1] == pytest.approx(ema, rel=1e-6)
    plain = run_ema("none", 2)
    assert plain == pytest.approx([0.1, 0.9 * 0.1 + 0.1 * 2]), "ignite's: averaged from step 1"


def test_ema_decay_warmup_is_uad_imags():
    history = run_ema("decay", 4, decay=0.9999)
    ema = history[0]
    for n in (2, 3, 4):
        d = min(0.9999, (1 + n) / (10 + n))
        ema = d * ema + (1 - d) * n
        assert history[n - 1] == pytest.approx(ema, rel=1e-6)
    with pytest.raises(ValueError, match="ema_warmup"):
        WarmStartEMAHandler(torch.nn.Linear(1, 1), warmup="later")


def test_slices_are_sampled_in_shuffled_passes_without_replacement():
    sampler = ShuffledPassSampler(range(10), num_samples=7, seed=3)
    stream = [i for _ in range(4) for i in sampler]  # 4 bundle epochs of 7 = 2.8 passes
    assert len(stream) == 28
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert stream[:10] != stream[10:20], "each pass its own shuffle"
    resumed = ShuffledPassSampler(range(10), num_samples=7, seed=3)
    resumed.set_epoch(2)
    assert list(resumed) == stream[14:21], "a resumed run continues the same stream"
