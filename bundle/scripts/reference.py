"""The authors' scoring procedure, an oracle for checks and benchmarks (``tests/test_scoring.py``,
``benchmarks/scoring_speed.py``), not the product path: no config uses it, and inference scores with
:class:`scripts.scoring.ANDiInferer`. It ships in the bundle all the same, as ``scripts.reference``, because the
equivalence check against the authors' own functions (``../shared/tools/authors_equiv/compare.py``, run beside the
bundle on its ``scripts`` package) imports it from there.

One timestep after another, batched over all slices of the volume (empty ones included), in float32; every d_t is
kept (stacked) and the geometric mean is taken at the end. The noise of timestep t is drawn exactly as
``ANDiInferer.noise_for`` draws it, so both give the same maps up to floating-point error.

d_t is computed in the form ``form`` names: ``"noise"`` (the default, the form the bundle uses) or ``"means"``, the
difference of the two means as Eq. 2 and Eq. 6 write them: mu_q(x_t, x_0) from x_t and x_0, mu_theta from x_t and
the predicted noise. That is not the authors' computation either: their ``Diffusion.normative_diffusion`` takes both
means from x_t and a noise with one formula (``ddpm_mu_t``), mu_q from the true noise and mu_theta from the
predicted one, and subtracts them. All three are algebraically the same, but in float32 a difference of means
cancels digits that the log of the geometric mean then magnifies: ``benchmarks/scoring_speed.py`` prints how far the
means form lands from the noise form, and ``../shared/tools/authors_equiv/compare.py`` bounds each against the authors'.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from scripts.diffusion import deviation, deviation_from_noise, mu_q, mu_theta, q_sample, schedule_terms
from scripts.scoring import ANDiInferer


@torch.inference_mode()
def reference_slices(inferer: ANDiInferer, x_0: torch.Tensor, network: Callable, form: str = "noise") -> torch.Tensor:
    """Aggregated maps (N, C, H, W) for slices ``x_0`` (N, C, H, W) with ``inferer``'s diffusion range, timesteps,
    noise and floor; d_t in the ``"noise"`` or the ``"means"`` form."""
    if form not in ("noise", "means"):
        raise ValueError(f"form must be 'noise' or 'means', got {form!r}")
    x_0 = inferer.diffusion_range.to_diffusion(x_0.float())
    n = x_0.shape[0]
    d_all = []
    for t in inferer.timesteps:
        eps = inferer.noise_for(t, x_0.shape, x_0.device)
        terms = schedule_terms(inferer.scheduler, torch.full((n,), t, device=x_0.device), device=x_0.device)
        x_t = q_sample(x_0, eps, terms)
        eps_hat = network(x_t, timesteps=torch.full((n,), t, device=x_0.device)).float()
        if form == "means":
            d_all.append(deviation(mu_q(x_t, x_0, terms), mu_theta(x_t, eps_hat, terms)))
        else:
            d_all.append(deviation_from_noise(eps, eps_hat, terms))
    d = torch.stack(d_all)  # (T, N, C, H, W): every d_t in memory, as the authors' code keeps them
    if inferer.aggregation == "geometric":
        return torch.exp(torch.log(d.clamp_min(inferer.log_floor)).mean(0))
    return d.mean(0)


def reference_volume(
    inferer: ANDiInferer, volume: torch.Tensor, network: Callable, form: str = "noise"
) -> torch.Tensor:
    """Per-channel maps (C, H, W, D) of a volume (C, H, W, D): all D slices scored, empty ones set to 0 after."""
    slices = volume.permute(3, 0, 1, 2)
    out = reference_slices(inferer, slices, network, form).permute(1, 2, 3, 0)
    empty = volume.abs().amax(dim=(0, 1, 2)) == 0
    out[..., empty] = 0
    return out
