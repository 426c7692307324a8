"""The DDPM closed forms against their definitions and against MONAI's DDPMScheduler."""

import torch

from scripts.diffusion import (
    deviation,
    deviation_from_noise,
    make_scheduler,
    mu_q,
    mu_theta,
    q_sample,
    schedule_terms,
)


def test_schedule_is_the_papers():
    s = make_scheduler()
    assert s.num_train_timesteps == 1000
    torch.testing.assert_close(s.betas[0], torch.tensor(1e-4))
    torch.testing.assert_close(s.betas[-1], torch.tensor(0.02))
    torch.testing.assert_close(s.alphas_cumprod, torch.cumprod(1 - s.betas, 0))


def test_mu_q_closed_form_and_scheduler_posterior_mean():
    s = make_scheduler()
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand((3, 4, 8, 8), generator=g, dtype=torch.float64).float()
    eps = torch.randn((3, 4, 8, 8), generator=g)
    for t in [0, 1, 75, 137, 200, 999]:
        tt = torch.full((3,), t)
        terms = schedule_terms(s, tt)
        x_t = q_sample(x0, eps, terms)
        # direct closed form with the scheduler's own arrays (Eq. 2)
        a_t, ab_t = s.alphas[t], s.alphas_cumprod[t]
        ab_prev = s.alphas_cumprod[t - 1] if t > 0 else torch.tensor(1.0)
        b_t = s.betas[t]  # 1 - alpha_t, read from the schedule to avoid float32 cancellation
        direct = (a_t.sqrt() * (1 - ab_prev) / (1 - ab_t)) * x_t + (ab_prev.sqrt() * b_t / (1 - ab_t)) * x0
        torch.testing.assert_close(mu_q(x_t, x0, terms), direct, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(mu_q(x_t, x0, terms), s._get_mean(t, x0, x_t), atol=1e-6, rtol=1e-5)


def test_mu_theta_matches_scheduler_step_without_its_noise():
    s = make_scheduler()
    g = torch.Generator().manual_seed(1)
    x_t = torch.randn((2, 4, 8, 8), generator=g)
    eps_hat = torch.randn((2, 4, 8, 8), generator=g)
    t = 120
    step_out, _ = s.step(eps_hat, t, x_t, generator=torch.Generator().manual_seed(5))
    added = torch.randn(eps_hat.shape, generator=torch.Generator().manual_seed(5)) * s._get_variance(t).sqrt()
    terms = schedule_terms(s, torch.full((2,), t))
    torch.testing.assert_close(mu_theta(x_t, eps_hat, terms), step_out - added, atol=1e-5, rtol=1e-5)


def test_d_t_equals_noise_form():
    s = make_scheduler()
    g = torch.Generator().manual_seed(2)
    x0 = torch.rand((5, 4, 16, 16), generator=g)
    eps = torch.randn((5, 4, 16, 16), generator=g)
    eps_hat = eps + 0.3 * torch.randn((5, 4, 16, 16), generator=g)
    t = torch.tensor([75, 100, 150, 199, 200])
    terms = schedule_terms(s, t)
    x_t = q_sample(x0, eps, terms)
    d_means = deviation(mu_q(x_t, x0, terms), mu_theta(x_t, eps_hat, terms))
    d_noise = deviation_from_noise(eps, eps_hat, terms)
    torch.testing.assert_close(d_means, d_noise, atol=1e-9, rtol=2e-3)
    # beta_t^2 / (alpha_t (1 - alpha_bar_t)) written out for one t
    k = 2
    coef = s.betas[150] ** 2 / (s.alphas[150] * (1 - s.alphas_cumprod[150]))
    torch.testing.assert_close(d_noise[k], coef * (eps[k] - eps_hat[k]) ** 2, atol=1e-10, rtol=1e-5)
