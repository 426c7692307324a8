"""ANDi scoring: aggregation, chunking, slice handling."""

import pytest
import torch
from monai.data import MetaTensor

from scripts.diffusion import DiffusionRange, deviation_from_noise, make_scheduler, q_sample, schedule_terms
from scripts.networks import make_network
from scripts.noise import gaussian_noise, get_noise_fn
from scripts.reference import reference_slices
from scripts.scoring import ANDiInferer, NoiseStream, brain_slices, timestep_range
from scripts.training import NoisePrepareBatch


def toy_network(x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in for the UNet: depends on the input and the timestep."""
    return 0.7 * x_t + 0.001 * timesteps.view(-1, 1, 1, 1).float() - 0.2 * x_t.roll(1, dims=-1)


def tiny_unet() -> torch.nn.Module:
    torch.manual_seed(0)
    return make_network("tiny").eval()


def per_t_loop(inferer: ANDiInferer, x0: torch.Tensor, network) -> torch.Tensor:
    """A plain loop: one timestep after another over all slices, the same d_t formula, every d_t stacked."""
    x0 = 2 * x0 - 1  # the authors' range, the inferer's default
    d_all = []
    for t in inferer.timesteps:
        eps = inferer.noise_for(t, x0.shape, x0.device)
        terms = schedule_terms(inferer.scheduler, torch.full((x0.shape[0],), t))
        eps_hat = network(q_sample(x0, eps, terms), timesteps=torch.full((x0.shape[0],), t))
        d_all.append(deviation_from_noise(eps, eps_hat, terms))
    d = torch.stack(d_all)
    if inferer.aggregation == "geometric":
        return torch.exp(torch.log(d.clamp_min(inferer.log_floor)).mean(0))
    return d.mean(0)


def test_timestep_range_is_the_authors_half_open_range():
    assert timestep_range(75, 200, 1) == list(range(75, 200))
    assert len(timestep_range(75, 200, 1)) == 125
    assert timestep_range(75, 200, 10) == [75, 85, 95, 105, 115, 125, 135, 145, 155, 165, 175, 185, 195]
    assert timestep_range(75, 200, 25) == [75, 100, 125, 150, 175]
    assert ANDiInferer(make_scheduler()).timesteps == list(range(75, 200))
    for lower, upper in ((200, 75), (75, 75)):
        with pytest.raises(ValueError):
            timestep_range(lower, upper)


def test_diffusion_range_round_trip_and_where_the_map_is_computed():
    x = torch.rand((3, 4, 8, 8), generator=torch.Generator().manual_seed(5)) * 1.3
    authors = DiffusionRange.of([-1, 1])
    torch.testing.assert_close(authors.to_diffusion(x), 2 * x - 1)
    torch.testing.assert_close(authors.to_image(authors.to_diffusion(x)), x)
    assert DiffusionRange.of("[0, 1]").to_diffusion(x) is x and DiffusionRange.of(None) == DiffusionRange(0.0, 1.0)
    with pytest.raises(ValueError, match="high > low"):
        DiffusionRange.of([1, 1])
    # scoring x under [-1, 1] is scoring 2x - 1 under the identity: the deviations are those the diffusion sees
    shifted = ANDiInferer(make_scheduler(), 75, 200, 40, diffusion_range=[-1, 1], channels_last=False)
    identity = ANDiInferer(make_scheduler(), 75, 200, 40, diffusion_range=[0, 1], channels_last=False)
    torch.testing.assert_close(shifted.score_slices(x, toy_network), identity.score_slices(2 * x - 1, toy_network))
    # training sees the same map: the prepare-batch hands the network 2x - 1 (the noise is drawn independently)
    images, target, _, kwargs = NoisePrepareBatch(noise_type="gaussian")({"image": x})
    torch.testing.assert_close(images, 2 * x - 1)
    assert target is kwargs["noise"] or torch.equal(target, kwargs["noise"])


@pytest.mark.parametrize("aggregation", ["geometric", "arithmetic"])
@pytest.mark.parametrize("batch_size", [1, 7, 64, 10_000])
def test_chunked_equals_per_t_loop(aggregation, batch_size):
    x0 = torch.rand((5, 4, 16, 16), generator=torch.Generator().manual_seed(0))
    inferer = ANDiInferer(
        make_scheduler(), 75, 200, 25, batch_size=batch_size, aggregation=aggregation, channels_last=False
    )
    got = inferer.score_slices(x0, toy_network)
    torch.testing.assert_close(got, per_t_loop(inferer, x0, toy_network), rtol=1e-5, atol=0)
    # the benchmark's reference (per-t loop, all slices, every d_t stacked) gives the same maps
    torch.testing.assert_close(got, reference_slices(inferer, x0, toy_network), rtol=1e-5, atol=0)
    # and d_t from the two means (Eq. 6 as written, which loses digits in float32) agrees closely
    means = reference_slices(inferer, x0, toy_network, form="means")
    torch.testing.assert_close(got, means, rtol=0.1, atol=1e-3 * float(got.max()))


def test_a_subset_is_the_mean_of_its_timesteps_logs():
    # benchmarks/frontier.py scores each timestep once and aggregates subsets from the logs: exact only if the noise
    # of t and the map of a subset do not depend on the other timesteps scored
    x0 = torch.rand((3, 4, 16, 16), generator=torch.Generator().manual_seed(3))
    inferer = ANDiInferer(make_scheduler(), 75, 200, 1, batch_size=5, channels_last=False)
    subset = [75, 76, 90, 133, 199]
    whole = inferer.at_timesteps(subset)
    assert whole.timesteps == subset and inferer.timesteps == list(range(75, 200))  # a copy; the original kept
    logs = [inferer.at_timesteps([t]).score_slices(x0, toy_network).log() for t in subset]
    torch.testing.assert_close(whole.score_slices(x0, toy_network), torch.stack(logs).mean(0).exp(), rtol=1e-5, atol=0)
    for bad in ([], [75, 1000], [-1]):
        with pytest.raises(ValueError, match="one or more timesteps in 0..999"):
            inferer.at_timesteps(bad)


def test_geometric_mean_against_direct_numbers():
    # with a network that predicts zero noise, d_t = coef_t * eps^2 exactly; check exp(mean log) by hand
    x0 = torch.rand((2, 4, 8, 8), generator=torch.Generator().manual_seed(1))
    inferer = ANDiInferer(make_scheduler(), 100, 103, 1, batch_size=3, channels_last=False)
    got = inferer.score_slices(x0, lambda x, timesteps: torch.zeros_like(x))
    s = inferer.scheduler
    logs = []
    assert inferer.timesteps == [100, 101, 102]
    for t in inferer.timesteps:
        eps = inferer.noise_for(t, x0.shape, x0.device)
        coef = s.betas[t] ** 2 / (s.alphas[t] * (1 - s.alphas_cumprod[t]))
        logs.append(torch.log(coef * eps**2))
    torch.testing.assert_close(got, torch.exp(torch.stack(logs).mean(0)), rtol=1e-4, atol=0)


def test_volume_scoring_skips_empty_slices_and_keeps_shape():
    vol = torch.zeros((4, 16, 16, 6))
    vol[:, 4:12, 4:12, 1:4] = torch.rand((4, 8, 8, 3))
    assert brain_slices(vol).tolist() == [1, 2, 3]
    inferer = ANDiInferer(make_scheduler(), 75, 200, 60, batch_size=5, channels_last=False)
    out = inferer(vol[None], toy_network)
    assert out.shape == (1, 4, 16, 16, 6)
    assert torch.all(out[0, ..., 0] == 0) and torch.all(out[0, ..., 4:] == 0)
    assert torch.all(out[0, ..., 1:4] > 0)
    # voxel_set volume: every slice is scored, the empty ones too (the authors' whole-volume maps)
    every = ANDiInferer(make_scheduler(), 75, 200, 60, batch_size=5, channels_last=False, all_slices=True)
    out_all = every(vol[None], toy_network)
    assert out_all.shape == out.shape and torch.all(out_all > 0)


def test_reproducible_and_seed_dependent_with_real_unet():
    net = tiny_unet()
    x0 = torch.rand((3, 4, 16, 16), generator=torch.Generator().manual_seed(2))
    a = ANDiInferer(make_scheduler(), 75, 200, 50, batch_size=4, seed=0, amp=False).score_slices(x0, net)
    b = ANDiInferer(make_scheduler(), 75, 200, 50, batch_size=9, seed=0, amp=False).score_slices(x0, net)
    c = ANDiInferer(make_scheduler(), 75, 200, 50, batch_size=4, seed=1, amp=False).score_slices(x0, net)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-12)
    assert not torch.allclose(a, c)
    assert a.dtype == torch.float32 and torch.isfinite(a).all()


def test_rejects_bad_options():
    with pytest.raises(ValueError, match="aggregation"):
        ANDiInferer(make_scheduler(), aggregation="median")
    with pytest.raises(ValueError, match="volumes"):
        ANDiInferer(make_scheduler())(torch.zeros(4, 8, 8), toy_network)


def test_real_unet_fast_path_matches_the_reference_and_bf16_stays_close():
    net = tiny_unet()
    x0 = torch.rand((3, 4, 16, 16), generator=torch.Generator().manual_seed(3))
    fp32 = ANDiInferer(make_scheduler(), 75, 200, 25, batch_size=5, amp=False)
    want = reference_slices(fp32, x0, net)
    got = fp32.score_slices(x0, net)  # chunked, channels-last: only float32 rounding differs
    assert float((got - want).abs().max()) <= 1e-4 * float(want.max() - want.min())
    # d_t from the two means in float32 cancels digits, which costs the smallest d_t precision; a d_t that cancels
    # to exactly 0 (as the authors' own float32 maths gives some) pulls its pixel towards 0, since only exact zeros
    # are floored (at the smallest normal float32), so a few pixels may be far off
    means = reference_slices(fp32, x0, net, form="means")
    close = (got - means).abs() <= 5e-2 * got.abs() + 2e-3 * float(want.max())
    assert float(close.float().mean()) >= 0.99
    with pytest.raises(ValueError, match="form"):
        reference_slices(fp32, x0, net, form="eq6")
    bf16 = ANDiInferer(make_scheduler(), 75, 200, 25, batch_size=5, amp=True).score_slices(x0, net)
    corr = torch.corrcoef(torch.stack([bf16.flatten(), want.flatten()]))[0, 1]
    assert corr > 0.95


def test_memory_budget_sets_pairs_per_call():
    net = tiny_unet()
    x0 = torch.rand((3, 4, 16, 16))
    small = ANDiInferer(make_scheduler(), memory_budget_mb=0.05).pairs_per_call(net, x0)
    large = ANDiInferer(make_scheduler(), memory_budget_mb=50).pairs_per_call(net, x0)
    assert 1 <= small < large
    assert ANDiInferer(make_scheduler(), batch_size=17).pairs_per_call(net, x0) == 17


@pytest.mark.parametrize("all_slices", [True, False])
@pytest.mark.parametrize("study_noise", [False, True])
def test_score_volume_equals_scoring_its_gathered_slices(all_slices, study_noise):
    """A volume's map is exactly its scored slices put back, slices not scored 0, whether every slice is scored (then
    ``score_volume`` scores a view of the volume, no copy) or only the brain slices (gathered). A plain tensor comes
    back for a MetaTensor. Fails for "the view is not permuted back", "slices put back at the wrong depth" and "the
    map keeps the image's metadata" (which ``post#invert`` would undo a second time)."""
    torch.manual_seed(0)
    net = make_network("tiny", in_channels=2).eval()
    volume = torch.rand((2, 32, 32, 12))
    volume[..., :3] = 0
    options = {"batch_size": 5, "amp": False, "all_slices": all_slices, "study_noise": study_noise}
    inferer = ANDiInferer(make_scheduler(), 75, 200, 40, zero_background=True, **options)
    keep = torch.arange(12) if all_slices else brain_slices(volume)
    with torch.inference_mode():
        slices = volume[..., keep].permute(3, 0, 1, 2).contiguous()
        expected = torch.zeros(volume.shape)
        expected[..., keep] = inferer.score_slices(slices, net, **inferer.volume_options(volume)).permute(1, 2, 3, 0)
        got = inferer(MetaTensor(volume.clone()), net)
    assert type(got) is torch.Tensor and got.is_contiguous()
    assert torch.equal(got, expected)


@pytest.mark.parametrize("noise_type", ["gaussian", "pyramid"])
@pytest.mark.parametrize("shape", [(9, 4, 16, 16), (7, 3, 10, 10)])
def test_noise_stream_does_not_depend_on_the_chunks(noise_type, shape):
    """Planted bugs: "restarts the generator per chunk" (every chunk the first slices' noise) and "hands out
    slices out of order" fail here. Slices taken 1, 3, 5 at a time equal the whole draw, for Gaussian noise (drawn per
    slice) and for the pyramid (drawn at once), also where a slice's size is not a multiple of 16 (3 x 10 x 10)."""
    fn = get_noise_fn(noise_type)

    def stream() -> NoiseStream:
        return NoiseStream(fn, shape, torch.Generator().manual_seed(3))

    whole = stream().take(shape[0])
    for n in (1, 3, 5):
        s = stream()
        chunks = [s.take(min(n, shape[0] - i)) for i in range(0, shape[0], n)]
        assert torch.equal(torch.cat(chunks), whole)
    assert not torch.equal(whole[:3], whole[3:6])
    with pytest.raises(ValueError, match="9 slices|7 slices"):
        stream().take(shape[0] + 1)


def test_gaussian_stream_is_the_whole_draw_for_the_bundles_slices():
    """A regression pin on 0.6.2's maps: for slices of 4 x 128 x 128 (a multiple of 16 values), torch's CPU draw of
    all slices at once equals the per-slice draws, so scoring chunk by chunk keeps the demo's maps bit for bit.
    If a torch release breaks this, the maps change (statistically the same noise): update the demo checksums."""
    shape = (5, 4, 128, 128)
    whole = torch.randn(shape, generator=torch.Generator().manual_seed(11))
    assert torch.equal(NoiseStream(gaussian_noise, shape, torch.Generator().manual_seed(11)).take(5), whole)


def test_the_noise_does_not_depend_on_torchs_default_dtype():
    """Planted bug (0.6.3): the per-slice draw went into a buffer of torch's default dtype, so under float64 (the
    authors-equivalence check computes their maths so) the same generator gave other values. The noise is float32
    and the same values whatever the default."""
    inferer = ANDiInferer(make_scheduler(), 75, 77, 1, amp=False, channels_last=False)
    want = inferer.noise_for(75, (3, 4, 16, 16), torch.device("cpu"))
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = inferer.noise_for(75, (3, 4, 16, 16), torch.device("cpu"))
    finally:
        torch.set_default_dtype(default)
    assert got.dtype == torch.float32 and torch.equal(got, want)


def test_scoring_draws_only_a_chunk_of_noise_at_a_time(monkeypatch):
    """Planted bug: "draws every slice's noise of a timestep at once" (a volume-sized buffer beside the
    accumulator: 40 MB for a BraTS study). With Gaussian noise, no take exceeds the pairs of one network call, and
    every slice of every timestep is taken exactly once."""
    taken = []
    original = NoiseStream.take

    def take(self, n):
        taken.append(int(n))
        return original(self, n)

    monkeypatch.setattr(NoiseStream, "take", take)
    inferer = ANDiInferer(make_scheduler(), 75, 85, 3, batch_size=4, amp=False, channels_last=False)
    x0 = torch.rand(10, 2, 8, 8)
    inferer.score_slices(x0, toy_network)
    assert max(taken) <= 4
    assert sum(taken) == 10 * len(inferer.timesteps)
