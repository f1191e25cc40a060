"""The batched Broyden root finder against closed-form roots."""

from __future__ import annotations

import torch

from neuroplastic.local.broyden import broyden


def test_each_row_converges_to_its_own_root_of_a_nonlinear_system() -> None:
    """F_b(x) = A_b x + 0.1 x^3 - r_b: the root is checked by plugging it back in, and the
    start (x = 0) is far from it, so a finder that did nothing would fail."""
    torch.manual_seed(0)
    a = torch.eye(3, dtype=torch.double) * 2 + 0.3 * torch.randn(5, 3, 3, dtype=torch.double)
    r = torch.randn(5, 3, dtype=torch.double)

    def f(x: torch.Tensor, _previous: None) -> tuple[torch.Tensor, None]:
        return (a @ x.unsqueeze(-1)).squeeze(-1) + 0.1 * x.pow(3) - r, None

    result = broyden(f, torch.zeros(5, 3, dtype=torch.double), torch.linalg.inv(a),
                     converged=lambda residual, _: float(residual.abs().max()) < 1e-12)
    assert result.converged and 2 < result.evaluations < 30
    assert float(f(result.x, None)[0].abs().max()) < 1e-12
    assert float((result.x - torch.zeros(5, 3)).abs().max()) > 0.1


def test_a_linear_system_started_from_its_exact_inverse_jacobian_takes_one_step() -> None:
    torch.manual_seed(1)
    a = torch.eye(4, dtype=torch.double) + 0.2 * torch.randn(2, 4, 4, dtype=torch.double)
    r = torch.randn(2, 4, dtype=torch.double)
    result = broyden(lambda x, _: ((a @ x.unsqueeze(-1)).squeeze(-1) - r, None),
                     torch.zeros(2, 4, dtype=torch.double), torch.linalg.inv(a),
                     converged=lambda residual, _: float(residual.abs().max()) < 1e-12)
    torch.testing.assert_close(result.x, torch.linalg.solve(a, r))
    assert result.evaluations == 2  # the start and the one step


def test_the_budget_and_non_finite_values_end_it_unconverged() -> None:
    x0 = torch.ones(1, 1)
    slow = broyden(lambda x, _: (x.pow(2) + 1, None), x0, torch.ones(1, 1, 1),  # no real root
                   converged=lambda residual, _: float(residual.abs().max()) < 1e-9, iterations=5)
    assert not slow.converged and slow.evaluations == 6
    broken = broyden(lambda x, _: (torch.full_like(x, float("nan")), None), x0, torch.ones(1, 1, 1),
                     converged=lambda residual, _: True)
    assert not broken.converged and broken.evaluations == 1
