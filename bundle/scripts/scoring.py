"""ANDi scoring (paper Algorithm 1, lines 2-11): per-channel anomaly maps from aggregated denoising deviations.

For every brain slice x_0 (mapped to the diffusion's range, ``scripts.diffusion.DiffusionRange``) and every t in
``t_lower, t_lower + t_stride, ...`` below ``t_upper`` (the authors' ``range(T_l, T_u)``: 125 steps for 75..200):

    eps   ~ N(0, I)                                  (plain Gaussian at scoring time, Sec. 4.4)
    x_t   = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps
    d_t   = (mu_q(x_t, x_0) - mu_theta(x_t, t))^2
          = beta_t^2 / (alpha_t (1 - alpha_bar_t)) * (eps - eps_theta(x_t, t))^2

where eps_theta is the network's output, or its noise estimate under v-prediction
(``scripts.diffusion.eps_from_prediction``, by the scheduler's ``prediction_type``).
    a_m   = exp(mean_t log max(d_t, log_floor))      (geometric mean, Eq. 8; arithmetic mean as an option)

The authors' geometric mean has no floor: a d_t of exactly 0 makes the log -inf and the pixel's map 0. The floor
here is the smallest normal float32 (``LOG_FLOOR``, 1.2e-38): no positive normal float32 lies below it, so it changes
nothing but exact zeros (and subnormals), which it keeps finite (log 1.2e-38 = -87.3) for the normative model's
log map. The maps then equal the authors' to float32 precision (``../shared/tools/authors_equiv/compare.py``). The
bundle's earlier floor, 1e-12, moved real pixels (real d_t fall below it: 236 of 1,310,720 in the equivalence check).

Slice-timestep pairs are batched together in chunks of ``batch_size`` pairs; the aggregation is a running sum
(of logs), so memory does not grow with the number of timesteps. Noise for timestep t comes from a generator seeded
with ``(seed, t)``, or with ``(seed, study, t)`` under ``study_noise`` (the configs' default: every study its own
noise, as the authors draw fresh noise per volume, and one study always the same map). Gaussian noise is drawn slice
by slice, in slice order, as the chunks need it (:class:`NoiseStream`), so only a chunk's noise is held; other noise
is drawn for all slices at once. Either way the result does not depend on the chunking.

d_t is evaluated in the second, algebraically identical form (``scripts.diffusion.deviation_from_noise``; the tests
check it against the first): subtracting the two means in float32 cancels digits, and the log then magnifies that
error in the smallest deviations.

The mean divides by the number of timesteps used, ``T_u - T_l`` at stride 1 as in Eq. 7-8.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Sequence

import torch
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.networks.schedulers import DDPMScheduler
from scripts import as_bool, as_flag_or_auto
from scripts.diffusion import (
    DiffusionRange,
    deviation_from_noise,
    deviation_from_x0,
    eps_from_prediction,
    q_sample,
    schedule_terms,
    x0_from_prediction,
)
from scripts.noise import NoiseFn, gaussian_noise, get_noise_fn
from scripts.progress import progress
from scripts.slices import brain_slices
from torch import nn

AGGREGATIONS = ("geometric", "arithmetic")
LOG_FLOOR = float(torch.finfo(torch.float32).tiny)
"""The floor of d_t before the log: the smallest normal float32, so that only exact zeros (and subnormals) reach it."""


def timestep_range(t_lower: int = 75, t_upper: int = 200, t_stride: int = 1) -> list[int]:
    """The timesteps scored: ``t_lower, t_lower + t_stride, ...`` below ``t_upper``, as the authors' code's
    ``range(T_l, T_u)`` (75..199, 125 steps, for the paper's [75, 200])."""
    if not 0 <= t_lower < t_upper:
        raise ValueError(f"need 0 <= t_lower < t_upper, got t_lower={t_lower}, t_upper={t_upper}")
    if t_stride < 1:
        raise ValueError(f"t_stride must be >= 1, got {t_stride}")
    return list(range(int(t_lower), int(t_upper), int(t_stride)))


def activation_bytes_per_pair(
    network: nn.Module | Callable, shape: Sequence[int], device: torch.device, amp: bool
) -> float:
    """Memory one slice-timestep pair needs in a forward pass of ``network`` on slices of ``shape`` (C, H, W).

    On CUDA it is measured: peak memory of a probe batch of 8 pairs, less what was allocated before, over 8.
    Elsewhere it is estimated as 12 feature maps of the network's widest level at full resolution (float32), a
    deliberately generous bound for MONAI's ``DiffusionModelUNet``.
    """
    c, h, w = shape
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        x = torch.zeros((8, c, h, w), device=device)
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            network(x, timesteps=torch.zeros(8, dtype=torch.long, device=device))
        torch.cuda.synchronize(device)
        return max(1.0, (torch.cuda.max_memory_allocated(device) - base) / 8)
    modules = network.modules() if isinstance(network, nn.Module) else ()
    convs = [m for m in modules if isinstance(m, nn.Conv2d)]
    widest = max((m.out_channels for m in convs), default=c)
    return 12.0 * widest * h * w * 4


def use_amp(amp: bool | str | None, device: torch.device) -> bool:
    """Whether a network runs under bf16 autocast on ``device``: ``amp`` True, False, or "auto"/None (on CUDA, and
    on CPUs with native bf16 support)."""
    amp = "auto" if amp is None else as_flag_or_auto(amp)
    if amp != "auto":
        return bool(amp)
    return device.type == "cuda" or (device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))


class BrainSliceInferer(Inferer):
    """The inferer contract of every method in the bundle (ANDi and the baselines): per-channel anomaly maps.

    ``__call__(volumes (B, C, H, W, D), network) -> maps (B, C, H, W, D)``: the axial slices holding any brain voxel
    (every slice with ``all_slices``) are cut out of each volume, scored together by :meth:`score_slices`
    (K, C, H, W) -> (K, C, H, W), and put back; slices not scored get 0. :meth:`network_call` runs the network with
    the shared speed options. Slices reach :meth:`score_slices` on the preprocessed image's scale; a diffusion
    method maps them to its range itself (``scripts.diffusion.DiffusionRange``).

    Args:
        batch_size: inputs per network call; the memory knob.
        amp: autocast the network in bfloat16: True, False, or "auto" (on CUDA, and on CPUs with native bf16).
        channels_last: run the network in channels-last memory format.
        compile: run the network through ``torch.compile`` (the first study pays the compilation).
        all_slices: score every axial slice, empty ones too, as the authors' code does for its whole-volume maps
            (``voxel_set: volume``); by default only slices holding brain are scored.
    """

    # speed and memory: the same maps up to float rounding (bf16 autocast rounds them; the tests bound it)
    not_settings = ("batch_size", "amp", "channels_last", "compile", "memory_budget_mb")

    def __init__(
        self,
        batch_size: int = 64,
        amp: bool | str | None = "auto",
        channels_last: bool | str = True,
        compile: bool | str = False,
        all_slices: bool | str = False,
    ) -> None:
        super().__init__()
        self.all_slices = as_bool(all_slices)
        self.batch_size = int(batch_size)
        self.amp = "auto" if amp is None else as_flag_or_auto(amp)
        self.channels_last = as_bool(channels_last)
        self.compile = as_bool(compile)
        self._compiled: dict[int, Callable] = {}

    def use_amp(self, device: torch.device) -> bool:
        """Whether the network runs under bf16 autocast on ``device``."""
        return use_amp(self.amp, device)

    def _network(self, network: Callable) -> Callable:
        if not self.compile:
            return network
        if id(network) not in self._compiled:
            self._compiled[id(network)] = torch.compile(network, dynamic=True)
        return self._compiled[id(network)]

    def network_call(self, network: Callable, x: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        """One call ``network(x, **kwargs)`` with the speed options; the output in float32. ``x`` is (N, C, H, W)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=self.use_amp(x.device)):
            return self._network(network)(x, **kwargs).float()

    def run_network(self, network: Callable, x: torch.Tensor, **kwargs: torch.Tensor) -> torch.Tensor:
        """``network(x, **kwargs)`` in chunks of ``batch_size``; ``x`` is (K, C, H, W) and every tensor in ``kwargs``
        (e.g. ``timesteps``) is (K, ...) and is chunked alongside. Returns float32 (K, ...)."""
        out = []
        for start in range(0, x.shape[0], self.batch_size):
            chunk_kwargs = {k: v[start : start + self.batch_size] for k, v in kwargs.items()}
            out.append(self.network_call(network, x[start : start + self.batch_size], **chunk_kwargs))
        return torch.cat(out).contiguous()

    def score_slices(self, x_0: torch.Tensor, network: Callable) -> torch.Tensor:
        """Per-channel maps (K, C, H, W) float32 of the brain slices ``x_0`` (K, C, H, W)."""
        raise NotImplementedError

    def volume_options(self, volume: torch.Tensor) -> dict[str, object]:
        """Keyword arguments of :meth:`score_slices` that depend on the whole volume (C, H, W, D); none here."""
        return {}

    def score_volume(self, volume: torch.Tensor, network: Callable) -> torch.Tensor:
        """Per-channel map a_m for one volume (C, H, W, D); slices not scored get 0. Returns (C, H, W, D)."""
        volume = volume.as_tensor() if isinstance(volume, MetaTensor) else volume  # the map is a plain tensor
        keep = torch.arange(volume.shape[-1], device=volume.device) if self.all_slices else brain_slices(volume)
        if keep.numel() == 0:
            return torch.zeros(volume.shape, dtype=torch.float32, device=volume.device)
        every = keep.numel() == volume.shape[-1]
        # (K, C, H, W): every slice as a view of the volume (no copy), else the brain slices gathered
        slices = (volume if every else volume[..., keep]).permute(3, 0, 1, 2).float()
        scores = self.score_slices(slices, network, **self.volume_options(volume)).float()
        del slices  # one volume-sized buffer fewer while the output is assembled
        if every:  # the maps in the volume's layout: no copy either
            return scores.permute(1, 2, 3, 0).contiguous()
        out = torch.zeros(volume.shape, dtype=torch.float32, device=volume.device)
        out[..., keep] = scores.permute(1, 2, 3, 0)
        return out

    @torch.inference_mode()
    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs) -> torch.Tensor:
        """Score a batch of volumes (B, C, H, W, D), or one volume (C, H, W, D); returns maps of the same shape."""
        if inputs.ndim == 4:
            return self.score_volume(inputs, network)
        if inputs.ndim != 5:
            raise ValueError(f"expected (B, C, H, W, D) or (C, H, W, D) volumes, got shape {tuple(inputs.shape)}")
        return torch.stack([self.score_volume(v, network) for v in inputs])


class NoiseStream:
    """The noise of one timestep for slices 0..K-1 (``shape`` (K, C, H, W)), handed out in slice order, ``n`` slices
    at a time (:meth:`take`).

    Gaussian noise (:func:`scripts.noise.gaussian_noise`) is drawn one slice at a time from ``generator`` as it is
    taken: slice k is the generator's k-th draw of shape (C, H, W), so a chunk costs its own memory, not the volume's,
    and the values do not depend on how the slices are chunked. Any other noise (a pyramid is normalised over its
    whole batch) is drawn for all K slices at the first :meth:`take` and handed out as views. ``whole``: noise given
    instead, (K, C, H, W).
    """

    def __init__(
        self,
        noise_fn: NoiseFn | None,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        whole: torch.Tensor | None = None,
    ) -> None:
        self.noise_fn, self.shape, self.generator, self.device = noise_fn, tuple(shape), generator, device
        self.whole = whole
        self.position = 0  # the next slice handed out

    def take(self, n: int) -> torch.Tensor:
        """The next ``n`` slices' noise, (n, C, H, W) float32."""
        start, stop = self.position, self.position + int(n)
        if stop > self.shape[0]:
            raise ValueError(f"the noise has {self.shape[0]} slices; slices {start}..{stop - 1} were asked for")
        self.position = stop
        if self.whole is None and self.noise_fn is gaussian_noise:
            # float32 whatever torch's default dtype: a float64 buffer would draw other values from the generator
            out = torch.empty((stop - start, *self.shape[1:]), device=self.device, dtype=torch.float32)
            for slice_noise in out:  # one draw per slice, into the chunk's own buffer
                torch.randn(self.shape[1:], generator=self.generator, device=self.device, out=slice_noise)
            return out
        if self.whole is None:
            self.whole = self.noise_fn(self.shape, generator=self.generator, device=self.device)
        return self.whole[start:stop]


class ANDiInferer(BrainSliceInferer):
    """Score a multi-modal volume with a trained noise-prediction network; returns per-channel maps a_m.

    Args:
        scheduler: the DDPM schedule the network was trained with; its ``prediction_type`` (``epsilon`` or
            ``v_prediction``) says what the network's output is.
        t_lower, t_upper, t_stride: the timesteps scored, ``range(t_lower, t_upper, t_stride)`` (paper: 75, 200, 1).
        batch_size: slice-timestep pairs per network call; the memory knob.
        aggregation: ``"geometric"`` (Eq. 8) or ``"arithmetic"`` (Eq. 7).
        noise_type: noise used to noise the slices (paper: ``"gaussian"``; ``"pyramid"`` for the ablation).
        log_floor: d_t is floored at this value before the log; by default :data:`LOG_FLOOR`, the smallest normal
            float32, which only exact zeros reach (0: no floor, the authors' -inf and a map value of 0).
        seed: seed of the scoring noise.
        amp: autocast the network in bfloat16: True, False, or "auto" (on CUDA, and on CPUs with native bf16).
        channels_last: run the network in channels-last memory format.
        compile: run the network through ``torch.compile`` (the first study pays the compilation).
        memory_budget_mb: if set, ``batch_size`` is derived from it: the activation memory of one pair is measured
            once with a probe batch (CUDA) or estimated from the network's widest feature map (CPU).
        diffusion_range: ``[low, high]`` the network was trained on (``scripts.diffusion.DiffusionRange``; the
            authors: ``[-1, 1]``, i.e. 2x - 1); the slices are mapped to it before they are noised.
        all_slices: score empty slices too (see :class:`BrainSliceInferer`).
        study_noise: draw each volume's noise per (seed, study, t), the study keyed by its values
            (:meth:`study_key`): independent across studies, the same map twice for one study (the configs' default,
            ``scoring_noise_per_study``). False: per (seed, t), every volume of one shape the same noise (what
            ``score_slices`` draws without a key, and what the equivalence check injects into the authors' code).
        clamp_x0: d_t from the predicted x_0 clamped to the diffusion range before the posterior mean (UAD-IMAG's
            ``anomaly_detection.ANDi``; ``v2.yaml``): d_t = (sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t))^2
            (x_0 - clamp(x0_hat))^2, which equals the noise form wherever the clamp does not act.
        zero_background: the map is 0 wherever the input channel is at the range's low end, i.e. 0 in the
            preprocessed image (UAD-IMAG's ``eval_ANDi``: ``aggregation[image == -1] = 0``; ``v2.yaml``).
    """

    def __init__(
        self,
        scheduler: DDPMScheduler,
        t_lower: int = 75,
        t_upper: int = 200,
        t_stride: int = 1,
        batch_size: int = 64,
        aggregation: str = "geometric",
        noise_type: str = "gaussian",
        log_floor: float = LOG_FLOOR,
        seed: int = 0,
        amp: bool | str | None = "auto",
        channels_last: bool | str = True,
        compile: bool | str = False,
        memory_budget_mb: float | None = None,
        diffusion_range: DiffusionRange | Sequence[float] | str | None = (-1.0, 1.0),
        all_slices: bool | str = False,
        study_noise: bool | str = False,
        clamp_x0: bool | str = False,
        zero_background: bool | str = False,
    ) -> None:
        super().__init__(batch_size, amp, channels_last, compile, all_slices)
        self.study_noise = as_bool(study_noise)
        self.clamp_x0 = as_bool(clamp_x0)
        self.zero_background = as_bool(zero_background)
        self.diffusion_range = DiffusionRange.of(diffusion_range)
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.scheduler = scheduler
        self.timesteps = timestep_range(t_lower, t_upper, t_stride)
        self.aggregation = aggregation
        self.noise_fn = get_noise_fn(noise_type)
        self.log_floor = float(log_floor)
        self.seed = int(seed)
        self.memory_budget_mb = None if memory_budget_mb in (None, "", "none", "None") else float(memory_budget_mb)

    def at_timesteps(self, timesteps: Sequence[int]) -> ANDiInferer:
        """A copy of this inferer that scores ``timesteps`` (any subset of 0..T-1) instead; every other setting, the
        noise of each timestep included, is kept, so that maps of subsets can be compared pair by pair."""
        other = copy.copy(self)
        other.timesteps = [int(t) for t in timesteps]
        n = int(self.scheduler.num_train_timesteps)
        if not other.timesteps or not all(0 <= t < n for t in other.timesteps):
            raise ValueError(f"at_timesteps needs one or more timesteps in 0..{n - 1}, got {list(timesteps)}")
        return other

    def noise_stream(self, t: int, shape: Sequence[int], device: torch.device, study: str | None = None) -> NoiseStream:
        """The scoring noise of timestep ``t`` for slices (K, C, H, W), as a :class:`NoiseStream` that hands it out in
        slice order; reproducible per (seed, t), or per (seed, study, t) when a ``study`` key is given
        (:meth:`study_key`)."""
        if study is None:
            seed = self.seed * 1_000_003 + int(t)
        else:
            digest = hashlib.sha256(f"{self.seed}:{study}:{int(t)}".encode()).digest()
            seed = int.from_bytes(digest[:8], "little") & (2**63 - 1)
        generator = torch.Generator(device=device).manual_seed(seed)
        return NoiseStream(self.noise_fn, shape, generator, device)

    def noise_for(self, t: int, shape: Sequence[int], device: torch.device, study: str | None = None) -> torch.Tensor:
        """The scoring noise of timestep ``t`` for every slice at once, (K, C, H, W): what :meth:`score_slices` draws
        chunk by chunk (:meth:`noise_stream`)."""
        return self.noise_stream(t, shape, device, study).take(shape[0])

    @staticmethod
    def study_key(volume: torch.Tensor) -> str:
        """A key of a volume (C, H, W, D) on the scoring grid: the sha256 of its float32 values and shape. The same
        study preprocessed the same way gets the same key (and noise); any other volume another."""
        values = volume.detach().float().contiguous().cpu().numpy()
        digest = hashlib.sha256(repr(tuple(values.shape)).encode())
        digest.update(memoryview(values).cast("B"))  # the values' bytes, not a copy of them (a volume is 40 MB)
        return digest.hexdigest()[:32]

    def volume_options(self, volume: torch.Tensor) -> dict[str, object]:
        """``study``: the volume's :meth:`study_key` when ``study_noise`` is on, else None ((seed, t) noise)."""
        return {"study": self.study_key(volume) if self.study_noise else None}

    def pairs_per_call(self, network: Callable, x_0: torch.Tensor) -> int:
        """Slice-timestep pairs per network call: ``batch_size``, or what fits ``memory_budget_mb``."""
        if self.memory_budget_mb is None:
            return self.batch_size
        budget = self.memory_budget_mb * 2**20
        per_pair = activation_bytes_per_pair(network, x_0.shape[1:], x_0.device, self.use_amp(x_0.device))
        return max(1, int(budget // per_pair))

    def score_slices(self, x_0: torch.Tensor, network: Callable, study: str | None = None) -> torch.Tensor:
        """Aggregated per-channel deviation maps for slices ``x_0`` (K, C, H, W) on the preprocessed image's scale;
        returns (K, C, H, W) float32. The deviations are those of the diffusion's range. ``study``: the key of the
        noise (:meth:`noise_for`; None: per (seed, t))."""
        # x_0 stays on the image's scale (it may be a view of the study's volume); each chunk is mapped to the
        # diffusion's range as it is gathered, so that no volume-sized copy of it is held beside the noise
        to_diffusion = self.diffusion_range.to_diffusion
        k = x_0.shape[0]
        acc = torch.zeros(x_0.shape, dtype=torch.float32, device=x_0.device)
        pairs = len(self.timesteps) * k
        chunk = self.pairs_per_call(network, x_0)
        timesteps = torch.tensor(self.timesteps, device=x_0.device)
        noise: dict[int, NoiseStream] = {}  # timestep index -> its noise, handed out in slice order
        bar = progress(total=pairs, desc=f"{k} slices x {len(self.timesteps)} timesteps", unit="pair")
        for start in range(0, pairs, chunk):
            idx = torch.arange(start, min(start + chunk, pairs), device=x_0.device)
            t_idx, s_idx = idx // k, idx % k  # timestep-major order: a chunk spans few timesteps, slices in order
            t_values = timesteps[t_idx]
            eps = torch.empty((idx.numel(), *x_0.shape[1:]), device=x_0.device)
            for ti in t_idx.unique().tolist():  # ascending: the chunk's slices of each timestep follow on in order
                if ti not in noise:
                    noise[ti] = self.noise_stream(self.timesteps[ti], x_0.shape, x_0.device, study)
                sel = t_idx == ti
                eps[sel] = noise[ti].take(int(sel.sum()))
            last = int(t_idx[-1])  # timestep-major: only the chunk's last timestep can run on into the next chunk
            noise = {last: noise[last]}  # a finished timestep's stream is let go before the network runs
            x0_chunk = to_diffusion(x_0[s_idx].float())
            terms = schedule_terms(self.scheduler, t_values, device=x_0.device)
            x_t = q_sample(x0_chunk, eps, terms)
            prediction = self.network_call(network, x_t, timesteps=t_values)
            if self.clamp_x0:
                x0_hat = x0_from_prediction(prediction, x_t, terms, self.scheduler.prediction_type)
                x0_hat = x0_hat.clamp(self.diffusion_range.low, self.diffusion_range.high)
                d_t = deviation_from_x0(x0_chunk, x0_hat, terms)
            else:
                eps_hat = eps_from_prediction(prediction, x_t, terms, self.scheduler.prediction_type)
                d_t = deviation_from_noise(eps, eps_hat, terms)
            if self.aggregation == "geometric":
                d_t = d_t.clamp_min(self.log_floor).log()
            acc.index_add_(0, s_idx, d_t)
            bar.update(idx.numel())
        bar.close()
        noise.clear()  # the last timestep's noise, before the output is made
        acc /= len(self.timesteps)
        out = acc.exp_() if self.aggregation == "geometric" else acc
        if self.zero_background:  # UAD-IMAG: 0 where the input is at its minimum (background)
            out[to_diffusion(x_0.float()) == self.diffusion_range.low] = 0
        return out
