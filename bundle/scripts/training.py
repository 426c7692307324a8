"""Training pieces that MONAI does not have ready: the noise-drawing prepare-batch, the paper's LR schedule, the
EMA's warm start and the per-pass shuffled slice sampler.

Everything else in training is MONAI/ignite as declared in ``configs/train.yaml``: ``SupervisedTrainer`` with
``DiffusionInferer``, ignite's ``EMAHandler`` (:class:`WarmStartEMAHandler`), ``LrScheduleHandler``,
``CheckpointSaver``/``CheckpointLoader``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence, Sized

import torch
from ignite.engine import Engine, Events
from ignite.handlers import EMAHandler
from monai.engines.utils import DiffusionPrepareBatch
from monai.inferers import DiffusionInferer
from scripts import as_bool
from scripts.diffusion import DiffusionRange, eps_from_prediction, schedule_terms
from scripts.noise import get_noise_fn
from torch import nn


class NoisePrepareBatch(DiffusionPrepareBatch):
    """``DiffusionPrepareBatch`` whose noise is pyramidal (paper Sec. 4.4) or Gaussian.

    Returns ``(images, target=noise, (), {"noise": noise, "timesteps": t})`` for ``DiffusionInferer``; the loss is
    then the epsilon-prediction MSE of Eq. 5. The images are first mapped to the diffusion's range (the authors:
    2x - 1), as the inferers map them at scoring time.

    Args:
        num_train_timesteps: T; timesteps are drawn uniformly from 0..T-1.
        noise_type: ``"pyramid"`` (paper), ``"pyramid_authors"`` or ``"gaussian"``.
        levels, discount: pyramid parameters (paper: 10 levels, c = 0.8).
        channels_last: hand the images to the network in channels-last memory format.
        diffusion_range: ``[low, high]`` (``scripts.diffusion.DiffusionRange``), recorded with the weights.
    """

    not_settings = ("channels_last",)  # speed: the same batch

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        noise_type: str = "pyramid",
        levels: int = 10,
        discount: float = 0.8,
        channels_last: bool = False,
        diffusion_range: DiffusionRange | Sequence[float] | str | None = (-1.0, 1.0),
    ) -> None:
        super().__init__(num_train_timesteps)
        self.diffusion_range = DiffusionRange.of(diffusion_range)
        kwargs = {} if noise_type == "gaussian" else {"levels": levels, "discount": discount}
        self.noise_fn = get_noise_fn(noise_type, **kwargs)
        self.channels_last = channels_last

    def get_noise(self, images: torch.Tensor) -> torch.Tensor:
        return self.noise_fn(tuple(images.shape), device=images.device, dtype=images.dtype)

    def __call__(self, batchdata, device=None, non_blocking=False, **kwargs):
        batchdata = {**batchdata, "image": self.diffusion_range.to_diffusion(batchdata["image"])}
        images, target, args, infer_kwargs = super().__call__(batchdata, device, non_blocking, **kwargs)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, target, args, infer_kwargs


def warmup_cosine_schedule(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    warmup_fraction: float = 0.05,
    lr_start: float = 2e-5,
    lr_peak: float = 1e-4,
    lr_end: float = 2e-5,
) -> torch.optim.lr_scheduler.LambdaLR:
    """The paper's per-step schedule: linear warm-up ``lr_start -> lr_peak`` over ``warmup_fraction`` of the steps,
    then a cosine decay to ``lr_end`` at ``total_steps``. The optimiser's base learning rate is set to ``lr_peak``.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr_peak
        group["initial_lr"] = lr_peak
    warmup = max(1, round(total_steps * warmup_fraction))
    decay = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            lr = lr_start + (lr_peak - lr_start) * step / warmup
        else:
            progress = min(1.0, (step - warmup) / decay)
            lr = lr_end + 0.5 * (lr_peak - lr_end) * (1.0 + math.cos(math.pi * progress))
        return lr / lr_peak

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class AutocastDiffusionInferer(DiffusionInferer):
    """MONAI's ``DiffusionInferer`` with the network run under bfloat16 autocast when ``autocast`` is on, returning
    the noise estimate eps_hat whatever the network predicts.

    bf16 needs no gradient scaling, and unlike the engines' ``amp`` flag this works on CPU too. The prediction is
    returned in float32 so that the loss is computed in full precision. Under ``scheduler.prediction_type ==
    "v_prediction"`` the network's v_hat is turned into eps_hat at x_t = ``scheduler.add_noise(inputs, noise, t)``
    (``scripts.diffusion.eps_from_prediction``), so the target stays the noise of ``NoisePrepareBatch`` and the loss
    the epsilon MSE of Eq. 5 for either parametrisation. Shapes: inputs, noise and the output (N, C, H, W).
    """

    def __init__(self, scheduler, autocast: bool | str = False) -> None:
        super().__init__(scheduler)
        self.autocast = as_bool(autocast)  # a command line's --autocast false arrives as the string "false"

    def __call__(self, inputs: torch.Tensor, diffusion_model, noise, timesteps, *args, **kwargs) -> torch.Tensor:
        with torch.autocast(device_type=inputs.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            prediction = super().__call__(inputs, diffusion_model, noise, timesteps, *args, **kwargs)
        prediction_type = self.scheduler.prediction_type
        if prediction_type == "epsilon":
            return prediction.float()
        x_t = self.scheduler.add_noise(original_samples=inputs.float(), noise=noise.float(), timesteps=timesteps)
        terms = schedule_terms(self.scheduler, timesteps, device=inputs.device)
        return eps_from_prediction(prediction.float(), x_t, terms, prediction_type)


EMA_WARMUPS = ("copy", "decay", "none")


class WarmStartEMAHandler(EMAHandler):
    """ignite's ``EMAHandler`` (ema = decay ema + (1 - decay) w after every iteration) with a warm start.

    ``warmup``:

    * ``"copy"`` (the authors' ANDi, ``modules.EMA.step_ema``): for the first ``warmup_steps`` iterations the EMA
      copies the weights, then it averages;
    * ``"decay"`` (UAD-IMAG ``utils/ema.py``): at the n-th update the decay is min(decay, (1 + n) / (10 + n));
    * ``"none"``: ignite's own, averaging from the first iteration (the bundle's earlier rule).

    The step is the trainer's iteration, so a resumed run continues the same rule. ``momentum`` is 1 - decay, as
    for ``EMAHandler``.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.005, warmup: str = "copy", warmup_steps: int = 2000):
        super().__init__(model, momentum=momentum)
        if warmup not in EMA_WARMUPS:
            raise ValueError(f"ema_warmup must be one of {EMA_WARMUPS}, got {warmup!r}")
        self.warmup = warmup
        self.warmup_steps = int(warmup_steps)

    def momentum_at(self, iteration: int) -> float:
        """The update momentum (1 - decay) of the update after iteration ``iteration`` (1, 2, ...)."""
        if self.warmup == "copy" and iteration <= self.warmup_steps:
            return 1.0
        if self.warmup == "decay":
            return 1.0 - min(1.0 - self.momentum, (1.0 + iteration) / (10.0 + iteration))
        return self.momentum

    def _update_ema_model(self, engine: Engine, name: str) -> None:
        setattr(engine.state, name, self.momentum_at(engine.state.iteration))
        super()._update_ema_model(engine, name)


SLICE_SAMPLINGS = ("epochs", "replacement")


class ShuffledPassSampler(torch.utils.data.Sampler):
    """Indices of a dataset in passes: each pass a new permutation (every slice once, without replacement), the
    passes one after another; ``__iter__`` gives the next ``num_samples`` of that stream (one bundle "epoch" of
    ``batch_size x epoch_iterations`` slices), continuing where the last one stopped, as the authors' loader
    (``DataLoader(shuffle=True)``) walks its epochs. Pass k's permutation is seeded by (seed, k) and
    :meth:`set_epoch` (called by ignite) places the stream at ``epoch x num_samples``, so a resumed run continues the
    same sequence.
    """

    def __init__(self, data_source: Sized, num_samples: int, seed: int = 0) -> None:
        self.n = len(data_source)
        if self.n == 0:
            raise ValueError("no slice to sample")
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.position = 0

    def set_epoch(self, epoch: int) -> None:
        """Place the stream at the start of (0-based) ``epoch``."""
        self.position = int(epoch) * self.num_samples

    def attach(self, trainer: Engine) -> None:
        """Keep the stream at the trainer's epoch: at the start (a resumed trainer's epoch) and at every epoch."""
        trainer.add_event_handler(Events.STARTED, lambda engine: self.set_epoch(engine.state.epoch))
        trainer.add_event_handler(Events.EPOCH_STARTED, lambda engine: self.set_epoch(engine.state.epoch - 1))

    def _permutation(self, k: int) -> torch.Tensor:
        return torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed * 1_000_003 + k))

    def __iter__(self) -> Iterator[int]:
        start, end = self.position, self.position + self.num_samples
        self.position = end
        k, perm = -1, None
        for i in range(start, end):
            if i // self.n != k:
                k = i // self.n
                perm = self._permutation(k)
            yield int(perm[i % self.n])

    def __len__(self) -> int:
        return self.num_samples


def train_sampler(dataset: Sized, sampling: str, num_samples: int, seed: int = 0) -> torch.utils.data.Sampler:
    """The training slices' sampler: ``"epochs"`` (:class:`ShuffledPassSampler`: shuffled passes without
    replacement, the authors') or ``"replacement"`` (uniform with replacement, the bundle's earlier)."""
    if sampling == "epochs":
        return ShuffledPassSampler(dataset, num_samples, seed)
    if sampling == "replacement":
        return torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=int(num_samples))
    raise ValueError(f"slice_sampling must be one of {SLICE_SAMPLINGS}, got {sampling!r}")
