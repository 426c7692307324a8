"""The DDPM closed forms ANDi needs (paper Sec. 3 and Eq. 2, 6), in the notation of the paper.

Timesteps follow MONAI's ``DDPMScheduler`` indexing: ``t`` in ``0 .. T-1`` reads ``alphas_cumprod[t]`` and
``alpha_bar_{t-1}`` is ``alphas_cumprod[t-1]`` (1 for ``t == 0``). All coefficient tensors are returned shaped
(N, 1, 1, 1) so that they broadcast over a batch of images (N, C, H, W).

Two schedules and two parametrisations of the network's output are available (``make_scheduler``):

* ``linear_beta`` (the paper: betas 1e-4 .. 0.02), ``shifted_cosine`` (registered here with MONAI's
  ``NoiseSchedules``: the cosine schedule written in log-SNR and shifted for the image size, Hoogeboom et al. 2023,
  "simple diffusion", clipped after the shift; see :func:`shifted_cosine_logsnr`) or ``truncated_cosine`` (the same
  truncated before the shift, as UAD-IMAG has it: :func:`truncated_cosine_logsnr`; ``v2.yaml``);
* ``epsilon`` (the network predicts the noise, the paper) or ``v_prediction`` (it predicts
  v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0, Salimans and Ho 2022). Training and scoring both turn the
  output into a noise estimate eps_hat with :func:`eps_from_prediction`, so the loss stays the epsilon MSE and d_t
  keeps its form.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from monai.networks.schedulers import DDPMScheduler
from monai.networks.schedulers.scheduler import NoiseSchedules

PREDICTION_TYPES = ("epsilon", "v_prediction")
LOGSNR_RANGE = (-15.0, 15.0)  # the clip of the shifted cosine's log-SNR (the end points of "simple diffusion")


@dataclass
class ScheduleTerms:
    """Schedule coefficients gathered for a batch of timesteps, each (N, 1, 1, 1)."""

    alpha: torch.Tensor  # alpha_t = 1 - beta_t
    alpha_bar: torch.Tensor  # alpha_bar_t = prod_{k<=t} alpha_k
    alpha_bar_prev: torch.Tensor  # alpha_bar_{t-1}
    beta: torch.Tensor  # beta_t


@dataclass(frozen=True)
class DiffusionRange:
    """The affine map from the preprocessed image to what the diffusion sees: x -> low + (high - low) x.

    The preprocessing divides each channel by its 99th percentile, so the background is 0 and the brain lies about in
    [0, 1.2]. The authors' code trains and scores on ``2x - 1`` (``DiffusionRange(-1, 1)``: background -1, brain
    about [-1, 1.4]); ``DiffusionRange(0, 1)`` is the identity. The range sets the signal-to-noise ratio
    alpha_bar_t / (1 - alpha_bar_t) that a scoring window [T_l, T_u] sees: halving the signal divides it by 4.
    Brain masks and empty-slice detection work on the image before this map.
    """

    low: float = -1.0
    high: float = 1.0

    @classmethod
    def of(cls, value: DiffusionRange | Sequence[float] | str | None) -> DiffusionRange:
        """A range from ``[low, high]`` (a list, or its JSON text from a command line); None is the identity."""
        if isinstance(value, DiffusionRange):
            return value
        if value is None:
            return cls(0.0, 1.0)
        if isinstance(value, str):
            value = json.loads(value)
        low, high = (float(v) for v in value)
        if not high > low:
            raise ValueError(f"diffusion_range must be [low, high] with high > low, got {list(value)}")
        return cls(low, high)

    def to_diffusion(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed image -> diffusion input, any shape."""
        if (self.low, self.high) == (0.0, 1.0):
            return x
        return x * (self.high - self.low) + self.low

    def to_image(self, y: torch.Tensor) -> torch.Tensor:
        """Diffusion space -> preprocessed image scale (the inverse of :meth:`to_diffusion`)."""
        if (self.low, self.high) == (0.0, 1.0):
            return y
        return (y - self.low) / (self.high - self.low)


def shifted_cosine_logsnr(
    t: torch.Tensor, image_size: int = 64, base_size: int = 64, logsnr_range: Sequence[float] = LOGSNR_RANGE
) -> torch.Tensor:
    """log-SNR of the shifted cosine schedule at continuous times ``t`` in (0, 1], any shape, float64.

    logsnr(t) = -2 log tan(pi t / 2) + 2 log(base_size / image_size), clipped to ``logsnr_range``
    ([-15, 15] by default; tan(pi / 2) is infinite, so t = 1 always sits at the lower end). At ``image_size ==
    base_size`` this is the cosine schedule (alpha_bar = cos^2(pi t / 2)); a larger image is shifted to lower
    log-SNR, i.e. noised more at the same t, since neighbouring pixels of a finer image average the noise away.
    """
    t = torch.as_tensor(t, dtype=torch.float64)
    logsnr = -2.0 * torch.log(torch.tan(math.pi * t / 2.0)) + 2.0 * math.log(base_size / image_size)
    low, high = (float(v) for v in logsnr_range)
    return logsnr.clamp(low, high)


def truncated_cosine_logsnr(
    t: torch.Tensor, image_size: int = 64, base_size: int = 64, logsnr_range: Sequence[float] = LOGSNR_RANGE
) -> torch.Tensor:
    """log-SNR of UAD-IMAG's shifted cosine schedule at continuous times ``t`` in [0, 1], any shape, float64.

    The cosine is truncated first, then shifted (UAD-IMAG ``models/ANDi/diffusion.py``, ``cosine_schedule``): t is
    mapped linearly onto the angles whose unshifted log-SNR lies in ``logsnr_range``,
    a = t_min + t (t_max - t_min) with t_min = atan(exp(-logsnr_max / 2)), t_max = atan(exp(-logsnr_min / 2)),
    logsnr(t) = -2 log tan(a) + 2 log(base_size / image_size); so every t has a finite log-SNR in
    [logsnr_min, logsnr_max] + shift. (:func:`shifted_cosine_logsnr` clips after the shift instead.)
    """
    t = torch.as_tensor(t, dtype=torch.float64)
    low, high = (float(v) for v in logsnr_range)
    t_min, t_max = math.atan(math.exp(-0.5 * high)), math.atan(math.exp(-0.5 * low))
    return -2.0 * torch.log(torch.tan(t_min + t * (t_max - t_min))) + 2.0 * math.log(base_size / image_size)


def _schedule_from_logsnr(logsnr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(betas, alphas, alphas_cumprod) (T,) float32 of the log-SNR (T,) float64 at steps t = (i + 1) / T."""
    alpha_bar = torch.sigmoid(logsnr)
    alpha_bar_prev = torch.cat([torch.ones(1, dtype=torch.float64), alpha_bar[:-1]])
    betas = (1.0 - alpha_bar / alpha_bar_prev).clamp(0.0, 0.999)
    alphas = 1.0 - betas
    return betas.float(), alphas.float(), torch.cumprod(alphas, dim=0).float()


def _cosine_schedule(logsnr: Callable[..., torch.Tensor]) -> Callable[..., tuple[torch.Tensor, ...]]:
    """A schedule of MONAI's ``NoiseSchedules`` from a log-SNR function of continuous time (``shifted_cosine_logsnr``
    or ``truncated_cosine_logsnr``)."""

    def schedule(
        num_train_timesteps: int,
        image_size: int = 64,
        base_size: int = 64,
        logsnr_min: float = LOGSNR_RANGE[0],
        logsnr_max: float = LOGSNR_RANGE[1],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(betas, alphas, alphas_cumprod), each (T,) float32, for MONAI's ``Scheduler``.

        Step ``i`` in ``0 .. T-1`` is the continuous time t = (i + 1) / T; alpha_bar(t) = sigmoid(logsnr(t)),
        beta_i = 1 - alpha_bar_i / alpha_bar_{i-1} (alpha_bar_{-1} = 1) clipped to [0, 0.999], and alphas_cumprod is
        the product of 1 - beta again (equal to alpha_bar wherever the clip is not reached, i.e. all but the last
        steps). Computed in float64. For the truncated cosine, UAD-IMAG's scoring times 0.026 ... 0.125 (its
        ``start=125, stop=25``) are steps 25 ... 124 and its s = t - 1/T is step i - 1.
        """
        t = torch.arange(1, num_train_timesteps + 1, dtype=torch.float64) / num_train_timesteps
        return _schedule_from_logsnr(logsnr(t, image_size, base_size, (logsnr_min, logsnr_max)))

    return schedule


NoiseSchedules.add_def(
    "shifted_cosine", "Cosine schedule in log-SNR shifted by 2 log(base_size / image_size) (Hoogeboom et al. 2023)"
)(_cosine_schedule(shifted_cosine_logsnr))
NoiseSchedules.add_def(
    "truncated_cosine", "Cosine schedule truncated to a log-SNR range, then shifted (UAD-IMAG's v2)"
)(_cosine_schedule(truncated_cosine_logsnr))


class DescribedDDPMScheduler(DDPMScheduler):
    """MONAI's ``DDPMScheduler``, keeping the arguments of its schedule as public attributes (``schedule`` and
    ``schedule_args``): it describes itself by them (``scripts.settings``, what the weights record) rather than by
    the tensors they make, whose last bits may differ between machines. Computes exactly as ``DDPMScheduler``."""

    not_settings = ("betas", "alphas", "alphas_cumprod", "one", "timesteps", "num_inference_steps")

    def __init__(self, num_train_timesteps: int, schedule: str, **kwargs: object) -> None:
        own = ("variance_type", "clip_sample", "prediction_type", "clip_sample_values")
        super().__init__(num_train_timesteps=num_train_timesteps, schedule=schedule, **kwargs)
        self.schedule = schedule
        self.schedule_args = {k: v for k, v in kwargs.items() if k not in own}


def make_scheduler(
    num_train_timesteps: int = 1000,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    schedule: str = "linear_beta",
    prediction_type: str = "epsilon",
    image_size: int = 64,
    schedule_base_size: int = 64,
) -> DescribedDDPMScheduler:
    """MONAI's ``DDPMScheduler`` with no clipping; by default the paper's: T = 1000, linear betas from 1e-4 to 0.02,
    epsilon prediction.

    Args:
        num_train_timesteps: T.
        beta_start, beta_end: the betas of ``linear_beta`` (and of MONAI's other beta schedules).
        schedule: a name in MONAI's ``NoiseSchedules``: ``linear_beta`` (the paper) or ``shifted_cosine``.
        prediction_type: what the network predicts, ``epsilon`` or ``v_prediction`` (:func:`eps_from_prediction`).
        image_size, schedule_base_size: the shift of ``shifted_cosine``, 2 log(schedule_base_size / image_size).

    Each schedule gets those of ``beta_start``, ``beta_end``, ``image_size`` and ``base_size`` that its function
    takes, so one configuration serves every schedule.
    """
    if schedule not in NoiseSchedules:
        raise ValueError(f"schedule must be one of {list(NoiseSchedules.names)}, got {schedule!r}")
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
    offered = {
        "beta_start": float(beta_start),
        "beta_end": float(beta_end),
        "image_size": int(image_size),
        "base_size": int(schedule_base_size),
    }
    takes = inspect.signature(NoiseSchedules[schedule]).parameters
    return DescribedDDPMScheduler(
        num_train_timesteps=int(num_train_timesteps),
        schedule=schedule,
        prediction_type=prediction_type,
        clip_sample=False,
        **{k: v for k, v in offered.items() if k in takes},
    )


def schedule_terms(scheduler: DDPMScheduler, t: torch.Tensor, device=None) -> ScheduleTerms:
    """Gather alpha_t, alpha_bar_t, alpha_bar_{t-1} and beta_t for integer timesteps ``t`` (N,), in float32."""
    device = device if device is not None else t.device
    t = t.long().to(scheduler.alphas_cumprod.device)
    alpha_bar = scheduler.alphas_cumprod.float()
    alpha_bar_prev = torch.where(t > 0, alpha_bar[(t - 1).clamp_min(0)], torch.ones_like(alpha_bar[t]))

    def shaped(x: torch.Tensor) -> torch.Tensor:
        return x.float().to(device).view(-1, 1, 1, 1)

    return ScheduleTerms(
        alpha=shaped(scheduler.alphas[t]),
        alpha_bar=shaped(alpha_bar[t]),
        alpha_bar_prev=shaped(alpha_bar_prev),
        beta=shaped(scheduler.betas[t]),
    )


def q_sample(x_0: torch.Tensor, eps: torch.Tensor, terms: ScheduleTerms) -> torch.Tensor:
    """Forward process, Eq. 1: x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps. Shapes (N, C, H, W)."""
    return terms.alpha_bar.sqrt() * x_0 + (1.0 - terms.alpha_bar).sqrt() * eps


def eps_from_prediction(
    prediction: torch.Tensor, x_t: torch.Tensor, terms: ScheduleTerms, prediction_type: str = "epsilon"
) -> torch.Tensor:
    """The noise estimate eps_hat (N, C, H, W) from the network's output ``prediction`` (N, C, H, W) at ``x_t``.

    ``epsilon``: the output is eps_hat itself (returned as it is). ``v_prediction``: the output is
    v_hat, an estimate of v = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0, and since
    x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps,

        eps_hat = sqrt(alpha_bar_t) v_hat + sqrt(1 - alpha_bar_t) x_t.

    ``terms`` are those of the timesteps of ``x_t`` ((N, 1, 1, 1) or (1, 1, 1, 1)).

    Raises:
        ValueError: another prediction type (MONAI's ``sample``, x_0 prediction, is not supported by the bundle).
    """
    if prediction_type == "epsilon":
        return prediction
    if prediction_type == "v_prediction":
        return terms.alpha_bar.sqrt() * prediction + (1.0 - terms.alpha_bar).sqrt() * x_t
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def x0_from_prediction(
    prediction: torch.Tensor, x_t: torch.Tensor, terms: ScheduleTerms, prediction_type: str = "epsilon"
) -> torch.Tensor:
    """The implied x_0 (N, C, H, W) of the network's output at ``x_t``: (x_t - sqrt(1 - alpha_bar_t) eps_hat) /
    sqrt(alpha_bar_t) for ``epsilon``, sqrt(alpha_bar_t) x_t - sqrt(1 - alpha_bar_t) v_hat for ``v_prediction`` (as
    UAD-IMAG's ``anomaly_detection.ANDi`` computes them)."""
    if prediction_type == "epsilon":
        return (x_t - (1.0 - terms.alpha_bar).sqrt() * prediction) / terms.alpha_bar.sqrt()
    if prediction_type == "v_prediction":
        return terms.alpha_bar.sqrt() * x_t - (1.0 - terms.alpha_bar).sqrt() * prediction
    raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")


def mu_q(x_t: torch.Tensor, x_0: torch.Tensor, terms: ScheduleTerms) -> torch.Tensor:
    """Posterior mean of q(x_{t-1} | x_t, x_0), Eq. 2 (the expected transition). Shapes (N, C, H, W)."""
    one_minus_bar = 1.0 - terms.alpha_bar
    coef_t = terms.alpha.sqrt() * (1.0 - terms.alpha_bar_prev) / one_minus_bar
    coef_0 = terms.alpha_bar_prev.sqrt() * terms.beta / one_minus_bar  # beta_t = 1 - alpha_t
    return coef_t * x_t + coef_0 * x_0


def mu_theta(x_t: torch.Tensor, eps_hat: torch.Tensor, terms: ScheduleTerms) -> torch.Tensor:
    """Mean of the learned reverse step p_theta(x_{t-1} | x_t) from the predicted noise (the predicted transition).

    mu_theta = (x_t - beta_t / sqrt(1 - alpha_bar_t) * eps_hat) / sqrt(alpha_t), with no clipping of the implied
    x_0 (paper Sec. 5.6). Shapes (N, C, H, W).
    """
    return (x_t - terms.beta / (1.0 - terms.alpha_bar).sqrt() * eps_hat) / terms.alpha.sqrt()


def deviation(mu_q_t: torch.Tensor, mu_theta_t: torch.Tensor) -> torch.Tensor:
    """d_t = (mu_q - mu_theta)^2, Eq. 6, per pixel and channel. Shapes (N, C, H, W)."""
    return (mu_q_t - mu_theta_t).square()


def deviation_from_noise(eps: torch.Tensor, eps_hat: torch.Tensor, terms: ScheduleTerms) -> torch.Tensor:
    """The same d_t written with the noises: beta_t^2 / (alpha_t (1 - alpha_bar_t)) * (eps - eps_hat)^2."""
    return terms.beta.square() / (terms.alpha * (1.0 - terms.alpha_bar)) * (eps - eps_hat).square()


def deviation_from_x0(x_0: torch.Tensor, x0_hat: torch.Tensor, terms: ScheduleTerms) -> torch.Tensor:
    """The same d_t written with x_0 and the predicted x0_hat: mu_q and mu_theta share the x_t term, so
    d_t = (sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t))^2 (x_0 - x0_hat)^2; with x0_hat clamped, UAD-IMAG's."""
    coef_0 = terms.alpha_bar_prev.sqrt() * terms.beta / (1.0 - terms.alpha_bar)
    return coef_0.square() * (x_0 - x0_hat).square()
