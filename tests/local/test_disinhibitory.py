"""Dis-inhibitory control: steady states against closed forms, the update against the
hand-derived linear case, the solver against itself, alignment with backprop."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neuroplastic import loop
from neuroplastic.errors import NeuroplasticError
from neuroplastic.local.disinhibitory import CircuitState, DisinhibitoryControl, DisinhibitoryMLP, Scratch


def start_at_open_loop(model: DisinhibitoryMLP, x: torch.Tensor) -> CircuitState:
    state = model.open_loop(x)
    inh = [model.phi(u) for u in state.exc]
    return CircuitState([u.clone() for u in state.exc], inh, state.out.clone(), torch.zeros_like(state.out))


def test_open_loop_newton_state_is_where_the_ode_settles_without_control() -> None:
    torch.manual_seed(0)
    model = DisinhibitoryMLP(5, 3, hidden=(6, 4)).double()
    x = torch.randn(7, 5, dtype=torch.double)
    rule = DisinhibitoryControl(k_p=0.0, k_i=0.0, solver="rk4", dt=1e-3, horizon=5.0, rtol=1e-9, atol=1e-12)
    zero = CircuitState([torch.zeros(7, 6, dtype=torch.double), torch.zeros(7, 4, dtype=torch.double)],
                        [torch.zeros(7, 6, dtype=torch.double), torch.zeros(7, 4, dtype=torch.double)],
                        torch.zeros(7, 3, dtype=torch.double), torch.zeros(7, 3, dtype=torch.double))
    with torch.no_grad():
        feedback = rule.feedback_weights(model, model.open_loop(x).exc)
        no_target = torch.zeros(7, 3, dtype=torch.double)
        settled, residual, _ = rule.closed_loop(model, x, no_target, feedback, zero)
        newton = model.open_loop(x)
    assert residual <= 1.0
    for ode, exact in zip(settled.exc, newton.exc, strict=True):
        torch.testing.assert_close(ode, exact, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(settled.out, newton.out, rtol=1e-6, atol=1e-7)


def test_implicit_gradient_of_the_open_loop_network_matches_finite_differences() -> None:
    torch.manual_seed(1)
    model = DisinhibitoryMLP(3, 2, hidden=(4,)).double()
    x = torch.randn(5, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: model(inp), (x,))
    weight = model.hidden[0].weight

    def of_weight(w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            weight.copy_(w)
        return model(x.detach())

    loss = model(x.detach()).pow(2).sum()
    (grad,) = torch.autograd.grad(loss, weight)
    base = weight.detach().clone()
    step = 1e-6
    numeric = torch.zeros_like(base)
    for i in range(base.shape[0]):
        for j in range(base.shape[1]):
            plus, minus = base.clone(), base.clone()
            plus[i, j] += step
            minus[i, j] -= step
            numeric[i, j] = (of_weight(plus).pow(2).sum() - of_weight(minus).pow(2).sum()) / (2 * step)
    torch.testing.assert_close(grad, numeric, rtol=1e-5, atol=1e-7)


def test_linear_circuit_settles_at_the_closed_form_and_updates_as_derived() -> None:
    """Linear E and I (phi = identity) with the MSE error e = y* - u_o: at steady state
    c_int = e / leak, so c = kappa e with kappa = k_i / leak + k_p; u_I = u_E - c Q;
    u_E = a - u_I gives u_E = (a + c Q) / 2; u_o = W_o u_E + c. Hence
    ((1 + kappa) I + kappa/2 W_o Q^T) u_o = W_o a / 2 + kappa/2 W_o Q^T y* + kappa y*."""
    torch.manual_seed(2)
    model = DisinhibitoryMLP(4, 3, hidden=(5,), activation="linear").double()
    rule = DisinhibitoryControl(error="linear", solver="rk4", dt=1e-3, horizon=20.0, rtol=1e-10, atol=1e-12)
    x = torch.randn(6, 4, dtype=torch.double)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    target = rule.targets(y, 3).double()
    kappa = rule.k_i / rule.leak + rule.k_p
    w1, b1, wo = model.hidden[0].weight.detach(), model.hidden[0].bias.detach(), model.readout.weight.detach()
    q = wo / wo.norm()  # linear: the Jacobian is W_o for every sample, scaled to norm 1
    a = x @ w1.T + b1
    m = (1 + kappa) * torch.eye(3, dtype=torch.double) + kappa / 2 * wo @ q.T
    rhs = a @ wo.T / 2 + kappa / 2 * target @ (wo @ q.T).T + kappa * target
    u_o = torch.linalg.solve(m, rhs.T).T
    c = kappa * (target - u_o)
    u_e = (a + c @ q) / 2
    with torch.no_grad():
        feedback = rule.feedback_weights(model, model.open_loop(x).exc)
        torch.testing.assert_close(feedback[0].dense(), q.expand(6, 3, 5))
        state, residual, _ = rule.closed_loop(model, x, target, feedback, start_at_open_loop(model, x))
    assert residual <= 1.0
    torch.testing.assert_close(state.out, u_o, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(state.exc[0], u_e, rtol=1e-7, atol=1e-8)
    torch.testing.assert_close(state.inh[0], u_e - c @ q, rtol=1e-7, atol=1e-8)
    grads, _ = rule.updates(model, x, y)
    delta = -(c @ q)  # (u_I - phi_E(u_E)) phi_E'(u_E) with identity activations
    torch.testing.assert_close(grads["hidden.0.weight"], delta.T @ x / 6, rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(grads["hidden.0.bias"], delta.mean(0), rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(grads["readout.weight"], -c.T @ u_e / 6, rtol=1e-6, atol=1e-8)


def test_feedback_weights_equal_the_per_sample_jacobian_built_by_hand() -> None:
    """The reference's Q for every sample and layer, by a slow loop of explicit matrices:
    J_l = W_o D_L W_L ... W_(l+1) D_l (D = diag(phi_E'(u_E))), times diag(phi_I'(u_I)) with
    u_I = phi_E(u_E), scaled to Frobenius norm 1; the factored form, with and without
    scratch, and its c Q must all give it."""
    torch.manual_seed(11)
    model = DisinhibitoryMLP(7, 4, hidden=(6, 5, 3)).double()
    x = torch.rand(4, 7, dtype=torch.double)
    rule = DisinhibitoryControl()
    with torch.no_grad():
        exc = model.open_loop(x).exc
        fresh = rule.feedback_weights(model, exc)
        reused = rule.feedback_weights(model, exc, scratch=Scratch())
        control = torch.randn(4, 4, dtype=torch.double)
        phi = model.phi
        for b in range(4):
            chain = model.readout.weight
            for index in reversed(range(3)):
                d = torch.diag(phi.deriv(exc[index][b]))
                q = chain @ d @ torch.diag(phi.deriv(phi(exc[index][b])))
                q = q / q.norm()
                for feedback in (fresh, reused):
                    torch.testing.assert_close(feedback[index].dense()[b], q, rtol=1e-12, atol=1e-14)
                    torch.testing.assert_close(feedback[index].top_down(control)[b], control[b] @ q,
                                               rtol=1e-12, atol=1e-14)
                if index > 0:
                    chain = chain @ d @ model.hidden[index].weight


def test_reused_scratch_leaves_no_trace_from_the_previous_batch() -> None:
    torch.manual_seed(12)
    model = DisinhibitoryMLP(9, 4, hidden=(8, 8, 8))
    first = torch.rand(6, 9), torch.randint(0, 4, (6,))
    second = torch.rand(6, 9), torch.randint(0, 4, (6,))
    used = DisinhibitoryControl()
    used.updates(model, *first)
    again, _ = used.updates(model, *second)
    fresh, _ = DisinhibitoryControl().updates(model, *second)
    for name, grad in fresh.items():
        assert torch.equal(again[name], grad), name


def test_euler_at_the_default_step_settles_where_rk4_does() -> None:
    torch.manual_seed(3)
    model = DisinhibitoryMLP(8, 4, hidden=(16, 16)).double()
    x, y = torch.rand(10, 8, dtype=torch.double), torch.randint(0, 4, (10,))
    states = {}
    for solver, dt in (("euler", 2e-3), ("rk4", 1e-3)):
        rule = DisinhibitoryControl(solver=solver, dt=dt, rtol=1e-6, atol=1e-9, horizon=10.0)
        with torch.no_grad():
            target = rule.targets(y, 4)
            feedback = rule.feedback_weights(model, model.open_loop(x).exc)
            start = start_at_open_loop(model, x)
            states[solver], residual, _ = rule.closed_loop(model, x, target, feedback, start)
        assert residual <= 1.0
    torch.testing.assert_close(states["euler"].out, states["rk4"].out, rtol=1e-4, atol=1e-5)
    for a, b in zip(states["euler"].exc, states["rk4"].exc, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("hidden", "error"),
                         [((16,), "softmax"), ((12, 16, 8), "softmax"), ((16, 8), "linear")])
def test_root_solver_finds_the_state_where_the_ode_settles(hidden, error) -> None:
    """The reference: RK4 integration to a residual of 1e-10 (double). The root solve, with
    its stopping rule tightened the same way, must land on the same state within 1e-6
    relative (every E, I, readout and integral entry), in a handful of evaluations."""
    torch.manual_seed(8)
    model = DisinhibitoryMLP(10, 4, hidden=hidden).double()
    with torch.no_grad():  # a trained-looking network: weights large enough for real control
        for layer in [*model.hidden, model.readout]:
            layer.weight.mul_(2.0)
    x, y = torch.rand(12, 10, dtype=torch.double), torch.randint(0, 4, (12,))
    tight = {"rtol": 1e-10, "atol": 1e-13, "error": error}
    ode = DisinhibitoryControl(solver="rk4", dt=1e-3, horizon=20.0, **tight)
    root = DisinhibitoryControl(solver="root", **tight)
    with torch.no_grad():
        target = ode.targets(y, 4)
        feedback = ode.feedback_weights(model, model.open_loop(x).exc)
        start = start_at_open_loop(model, x)
        settled, ode_residual, ode_steps = ode.closed_loop(model, x, target, feedback, start)
        found, residual, evaluations = root.closed_loop(model, x, target, feedback, start)
    assert ode_residual <= 1.0 and residual <= 1.0 and root.stats.fallbacks == 0
    assert evaluations <= 12 < ode_steps
    for a, b in zip(found.tensors(), settled.tensors(), strict=True):
        assert float((a - b).abs().max() / b.abs().max()) < 1e-6
    # and the control really moved the state away from the open loop
    assert float((found.out - model.open_loop(x).out.detach()).abs().max()) > 1e-2


def test_a_failed_root_solve_is_integrated_instead_and_counted() -> None:
    torch.manual_seed(9)
    model = DisinhibitoryMLP(6, 3, hidden=(8,))
    x, y = torch.rand(5, 6), torch.tensor([0, 1, 2, 0, 1])
    one_step = DisinhibitoryControl(root_iterations=1, rtol=1e-9, atol=1e-12, horizon=0.1)
    ode = DisinhibitoryControl(solver="euler", rtol=1e-9, atol=1e-12, horizon=0.1)
    grads, _ = one_step.updates(model, x, y)
    reference, _ = ode.updates(model, x, y)
    assert one_step.stats.fallbacks == 1
    for name, grad in grads.items():
        torch.testing.assert_close(grad, reference[name])


def test_root_solver_trains_as_the_integrator_does() -> None:
    """Default settings (float32, the reference's stopping rule): updates of the two solvers
    agree closely on a batch, and the root solve takes a few evaluations, not hundreds."""
    torch.manual_seed(10)
    model = DisinhibitoryMLP(20, 5, hidden=(32, 32))
    x, y = torch.rand(50, 20), torch.randint(0, 5, (50,))
    root, euler = DisinhibitoryControl(), DisinhibitoryControl(solver="euler")
    found, _ = root.updates(model, x, y)
    integrated, _ = euler.updates(model, x, y)
    for name in found:
        cosine = F.cosine_similarity(found[name].flatten(), integrated[name].flatten(), dim=0)
        assert cosine > 0.999, (name, float(cosine))
    assert root.stats.steps <= 6 and euler.stats.steps > 50 and root.stats.fallbacks == 0


def test_lin_thresh_equals_exact_at_its_linearisation_point() -> None:
    """With one sample the mean inhibitory rate is that sample's, so the Taylor expansion of
    phi_I^-1 is evaluated at its own point: lin-thresh must then give exact's errors."""
    torch.manual_seed(4)
    model = DisinhibitoryMLP(6, 3, hidden=(5,)).double()
    x, y = torch.rand(1, 6, dtype=torch.double), torch.tensor([2])
    exact = DisinhibitoryControl(variant="exact")
    approx = DisinhibitoryControl(variant="lin-thresh")
    open_state = model.open_loop(x)
    open_inh = [model.phi(u) for u in open_state.exc]
    with torch.no_grad():
        state = start_at_open_loop(model, x)
        torch.testing.assert_close(approx.local_errors(model, state, open_inh)[0],
                                   exact.local_errors(model, state, open_inh)[0])
        assert exact.local_errors(model, state, open_inh)[0].abs().max() < 1e-9  # open loop: no error
    grads_exact, _ = exact.updates(model, x, y)
    grads_approx, _ = approx.updates(model, x, y)
    assert not torch.allclose(grads_approx["hidden.0.weight"], grads_exact["hidden.0.weight"], atol=0)


def test_local_updates_point_where_backprop_points() -> None:
    torch.manual_seed(5)
    model = DisinhibitoryMLP(10, 4, hidden=(32, 32))
    x, y = torch.rand(64, 10), torch.randint(0, 4, (64,))
    for variant in ("exact", "lin-thresh"):
        rule = DisinhibitoryControl(variant=variant)
        aligned = rule.measure_alignment(model, x, y)
        assert set(aligned) == {"hidden.0.weight", "hidden.1.weight", "readout.weight"}
        for name, (cosine, sign) in aligned.items():
            assert cosine > 0.5 and sign > 0.6, (variant, name, cosine, sign)


def test_training_through_the_loop_lowers_the_loss() -> None:
    torch.manual_seed(6)
    model = DisinhibitoryMLP(2, 2, hidden=(16,))
    x = torch.randn(200, 2)
    y = (x[:, 0] * x[:, 1] > 0).long()
    data = [(x[i:i + 50], y[i:i + 50]) for i in range(0, 200, 50)]
    rule = DisinhibitoryControl()
    before = float(rule.loss(model(x), rule.targets(y, 2)).detach())
    loop.fit(model, data, optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), epochs=15,
             batch_grads=rule.batch_grads)
    after = float(rule.loss(model(x), rule.targets(y, 2)).detach())
    assert after < before - 0.1
    assert rule.stats.solves == 60 and rule.stats.unconverged == 0


def test_a_horizon_too_short_for_steady_state_is_counted_with_its_residual() -> None:
    torch.manual_seed(7)
    model = DisinhibitoryMLP(4, 3, hidden=(8,))
    rule = DisinhibitoryControl(solver="euler", horizon=0.01)
    rule.updates(model, torch.rand(5, 4), torch.tensor([0, 1, 2, 0, 1]))
    assert rule.stats.unconverged == 1 and rule.stats.worst_residual > 1.0


def test_bad_settings_and_models_are_refused() -> None:
    with pytest.raises(NeuroplasticError, match="variant"):
        DisinhibitoryControl(variant="approximate")
    with pytest.raises(NeuroplasticError, match="root_iterations"):
        DisinhibitoryControl(root_iterations=0)
    with pytest.raises(NeuroplasticError, match="solver"):
        DisinhibitoryControl(solver="dopri5")
    with pytest.raises(NeuroplasticError, match="must not exceed the horizon"):
        DisinhibitoryControl(dt=1.0, horizon=0.5)
    with pytest.raises(NeuroplasticError, match="DisinhibitoryMLP"):
        DisinhibitoryControl().batch_grads(nn.Linear(3, 2), torch.rand(2, 3), torch.tensor([0, 1]))
    with pytest.raises(NeuroplasticError, match="batch_grads replaces the loss"):
        loop.fit(nn.Linear(2, 2), [(torch.rand(2, 2), torch.tensor([0, 1]))],
                 optimizer=torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1), epochs=1,
                 batch_grads=lambda m, x, y: torch.zeros(()), batch_loss=lambda m, x, y: torch.zeros(()))
