"""Each continual update rule against a hand computation on a tiny model, the metrics
against their formulas, the streams' settings, the loop's events."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import neuroplastic as npl
from neuroplastic import NeuroplasticError
from neuroplastic.consolidate import RunningScores, anchor, quadratic_penalty
from neuroplastic.continual import CLASSP, CLNP, EWC, GPM, HLOP, SI, ContinualRecipe, run_stream
from neuroplastic.data.streams import Experience, Stream, permuted_stream, split_stream, stream_from_datasets
from neuroplastic.evaluate.continual import (
    average_accuracy,
    backward_transfer,
    forgetting,
    forward_transfer,
)
from neuroplastic.intervene import GradientMask, GradientProjection, GradientScale
from neuroplastic.loop import Plugin, fit
from tests.clean import assert_clean


def two_layer(seed: int = 0, outputs: int = 4) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, outputs))


def batches(n: int = 4, seed: int = 0, outputs: int = 4) -> list:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(10, 6, generator=gen), torch.randint(0, outputs, (10,), generator=gen))
            for _ in range(n)]


def test_metrics_by_hand():
    r = torch.tensor([[0.9, 0.1, 0.2], [0.7, 0.8, 0.3], [0.6, 0.5, 0.95]])
    assert average_accuracy(r) == pytest.approx((0.6 + 0.5 + 0.95) / 3)
    assert backward_transfer(r) == pytest.approx(((0.6 - 0.9) + (0.5 - 0.8)) / 2)
    fwt = forward_transfer(r, torch.tensor([0.1, 0.2, 0.25]))
    assert fwt == pytest.approx(((0.1 - 0.2) + (0.3 - 0.25)) / 2)
    assert forgetting(r) == pytest.approx(((0.9 - 0.6) + (0.8 - 0.5)) / 2)
    with pytest.raises(NeuroplasticError, match="T x T"):
        average_accuracy(torch.ones(1, 1))


def test_loop_calls_every_event_in_order_and_stops():
    calls = []

    class Recorder(Plugin):
        def before_task(self, model, task):
            calls.append(("before", task))

        def loss(self, model, x, y, loss):
            calls.append("loss")
            return loss * 2

        def after_backward(self, model):
            calls.append("backward")

        def after_step(self, model, step):
            calls.append(("step", step))

        def after_epoch(self, model, epoch):
            calls.append(("epoch", epoch))

        def should_stop(self, step):
            return step == 6

        def after_task(self, model, task):
            calls.append(("after", task))

    model = two_layer()
    result = fit(model, batches(4), optimizer=torch.optim.SGD(model.parameters(), lr=0.1), epochs=3,
                 plugins=[Recorder()], task=7)
    assert result.steps == 6 and result.stopped_early and result.epochs == 1
    assert calls[0] == ("before", 7) and calls[-1] == ("after", 7)
    assert calls[1:4] == ["loss", "backward", ("step", 1)]
    assert ("epoch", 1) in calls and ("epoch", 2) not in calls


def test_loop_equals_a_bare_loop_bit_for_bit():
    model, bare = two_layer(), two_layer()
    data = batches(5)
    fit(model, data, optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), epochs=2)
    opt = torch.optim.SGD(bare.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        for x, y in data:
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(bare(x), y).backward()
            opt.step()
    for a, b in zip(model.parameters(), bare.parameters(), strict=True):
        assert torch.equal(a, b)


def test_consolidation_substrate_by_hand():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    a = anchor(model)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 1.0]]))
    f = {"weight": torch.tensor([[0.5, 4.0]])}
    assert float(quadratic_penalty(model, f, a).detach()) == pytest.approx(0.5 * 4 + 4.0 * 1)
    running = RunningScores(decay=0.5)
    running.update({"w": torch.tensor([2.0])})
    assert running.update({"w": torch.tensor([1.0])})["w"].item() == 2.0  # 0.5 * 2 + 1


@pytest.mark.parametrize("how", ["plugin", "context"])
def test_gradient_interventions_by_hand(how):
    model = nn.Linear(3, 2, bias=False)
    x = torch.randn(5, 3)

    def grad_with(intervention):
        model.zero_grad()
        if how == "plugin":
            model(x).sum().backward()
            intervention.after_backward(model)
        else:
            with intervention.attached(model):
                model(x).sum().backward()
        return model.weight.grad.clone()

    model.zero_grad()
    model(x).sum().backward()
    plain = model.weight.grad.clone()
    mask = torch.tensor([[True, False, True], [False, True, True]])
    assert torch.equal(grad_with(GradientMask({"weight": mask})), plain * mask)
    scale = torch.tensor([[2.0, 0.5, 1.0], [0.0, 3.0, 1.0]])
    assert torch.allclose(grad_with(GradientScale({"weight": scale})), plain * scale)
    basis = torch.tensor([[1.0], [1.0], [0.0]])  # one input direction, not yet unit length
    projected = grad_with(GradientProjection({"weight": basis}))
    q = basis / basis.norm()
    assert torch.allclose(projected, plain - plain @ q @ q.t(), atol=1e-6)
    assert float((projected @ q).abs().max()) < 1e-5  # orthogonal to the stored basis
    assert_clean(model)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_projection_with_a_wide_basis_uses_the_projector_and_equals_the_formula(k):
    """Once the basis spans more than half the inputs the projection multiplies by
    I - Q Q^T: the same gradient as G - (G Q) Q^T, orthogonal to the basis."""
    torch.manual_seed(k)
    basis = torch.randn(6, k, dtype=torch.float64)
    grad = torch.randn(4, 6, dtype=torch.float64)
    projection = GradientProjection({"w": basis})
    assert ("w" in projection.projectors) == (2 * k > 6)
    q = torch.linalg.qr(basis)[0]
    projected = projection.transform("w", grad)
    torch.testing.assert_close(projected, grad - grad @ q @ q.t(), rtol=1e-12, atol=1e-12)
    assert float((projected @ q).abs().max()) < 1e-12
    as_float = projection.transform("w", grad.float())
    assert as_float.dtype == torch.float32 and torch.allclose(as_float.double(), projected, atol=1e-5)


@pytest.mark.parametrize("fisher", ["batch_sq", "per_sample", "exact"])
def test_ewc_penalty_gradient_is_lambda_f_delta(fisher):
    model = two_layer()
    ewc = EWC(lam=3.0, fisher=fisher)
    experience = Experience(0, TensorDataset(*map(torch.cat, zip(*batches(2), strict=True))), None, None, ())  # type: ignore[arg-type]
    ewc.after_task(model, experience)
    fisher, weights = ewc.terms[0]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    model.zero_grad()
    ewc.penalty(model).backward()
    for name, p in model.named_parameters():
        expected = 3.0 * fisher[name] * (p.detach() - weights[name])  # d/dtheta (lam/2) F d^2
        assert torch.allclose(p.grad, expected, atol=1e-6), name


def test_ewc_with_lambda_zero_is_finetune_bit_for_bit():
    stream = small_stream()
    a, b = mlp(stream), mlp(stream)
    recipe = ContinualRecipe(epochs=2)
    ra = run_stream(a, stream, EWC(lam=0.0), recipe)
    rb = run_stream(b, stream, npl.create("finetune", kind="continual"), recipe)
    assert torch.equal(ra.matrix, rb.matrix)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_ewc_proximal_step_is_the_closed_form():
    model = nn.Linear(2, 1, bias=False)
    ewc = EWC(lam=10.0, proximal=True, lr=0.5)
    f, star = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0, 1.0]])
    ewc.terms = [({"weight": f}, {"weight": star})]
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, 3.0]]))
    ewc.after_step(model, 1)
    expected = (torch.tensor([[2.0, 3.0]]) + 0.5 * 10 * f * star) / (1 + 0.5 * 10 * f)
    assert torch.allclose(model.weight, expected)


def test_ewc_proximal_step_after_a_second_task_uses_both_tasks_terms():
    """The step's constants are kept between steps; a task's end must renew them. Oracle:
    the closed form over both tasks' Fisher and anchors, after a step taken with one task."""
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    ewc = EWC(lam=10.0, proximal=True, lr=0.5)
    tasks = [TensorDataset(torch.randn(8, 3), torch.randint(0, 2, (8,))) for _ in range(2)]
    ewc.after_task(model, Experience(0, tasks[0], tasks[0], tasks[0], (0, 1)))
    ewc.after_step(model, 1)  # constants for one task
    with torch.no_grad():
        model.weight.add_(0.3)
    ewc.after_task(model, Experience(1, tasks[1], tasks[1], tasks[1], (0, 1)))
    before = model.weight.detach().clone()
    ewc.after_step(model, 2)
    (f0, a0), (f1, a1) = ewc.terms
    pull = f0["weight"] * a0["weight"] + f1["weight"] * a1["weight"]
    expected = (before + 5.0 * pull) / (1 + 5.0 * (f0["weight"] + f1["weight"]))
    torch.testing.assert_close(model.weight.detach(), expected)
    assert not torch.allclose(f1["weight"], torch.zeros_like(f1["weight"]))


def test_si_omega_and_importance_by_hand():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0]]))
    si = SI(c=0.5, xi=0.1, proximal=False)  # the original's penalty gradient
    x, y = torch.tensor([[1.0, 2.0]]), torch.tensor([[0.0]])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.functional.mse_loss
    fit(model, [(x, y)], optimizer=opt, epochs=2, loss_fn=loss_fn, plugins=[si])
    # by hand: w0 = (1, -1), out = -1, grad = 2 (out - 0) x = (-2, -4); step 0.1
    w0 = torch.tensor([1.0, -1.0])
    g0 = 2 * (w0 @ torch.tensor([1.0, 2.0])) * torch.tensor([1.0, 2.0])
    w1 = w0 - 0.1 * g0
    g1 = 2 * (w1 @ torch.tensor([1.0, 2.0])) * torch.tensor([1.0, 2.0])
    w2 = w1 - 0.1 * g1
    omega = -(g0 * (w1 - w0)) - (g1 * (w2 - w1))
    expected = torch.relu(omega / ((w2 - w0) ** 2 + 0.1))
    assert torch.allclose(si.importance["weight"][0], expected, atol=1e-6)
    assert torch.allclose(si.anchor["weight"][0], w2, atol=1e-6)
    # on the next task the penalty's own gradient is taken back out of omega's gradient
    si.before_task(model, None)
    model.zero_grad()
    with torch.no_grad():
        model.weight.add_(0.3)
    out = model(x)
    loss = si.loss(model, x, y, loss_fn(out, y))
    loss.backward()
    si.after_backward(model)
    w = model.weight.detach()[0]
    unreg = 2 * (w @ torch.tensor([1.0, 2.0])) * torch.tensor([1.0, 2.0])
    assert torch.allclose(si._unreg["weight"][0], unreg, atol=1e-5)


def test_classp_default_is_the_papers_equation_step_by_step():
    """w <- w - g_t / (eps + sum_{k<t, gate open} |g_k|^p)^(1/p), gated by g_t^2 > threshold,
    the sum over every earlier step (this task's too); the first task plain but summed."""
    eps, p, threshold = 0.5, 2.0, 0.05
    classp = CLASSP(threshold=threshold, power=p, eps=eps)
    task0 = [torch.tensor([1.0, 0.1, -2.0]), torch.tensor([0.5, 0.0, 1.0])]
    task1 = [torch.tensor([0.8, 3.0, 0.2]), torch.tensor([-0.4, 1.0, 0.3]), torch.tensor([0.6, 0.1, 0.0])]
    total = torch.zeros(3)
    for g in task0:  # first task: plain steps (first_threshold 0 lets every non-zero g through)
        assert torch.equal(classp.scale("w", g), g)
        total += torch.where(g ** 2 > 0, g.abs() ** p, torch.zeros(3))
    classp.after_task(None, None)
    for g in task1:
        expected = torch.where(g ** 2 > threshold, g / (eps + total) ** (1 / p), torch.zeros(3))
        assert torch.allclose(classp.scale("w", g), expected)
        total += torch.where(g ** 2 > threshold, g.abs() ** p, torch.zeros(3))  # decays within the task


def test_classp_per_task_variant_freezes_the_sum_at_the_task_start():
    classp = CLASSP(threshold=0.5, power=2.0, eps=1e-3, per_task=True)
    g1 = torch.tensor([1.0, 0.1, -2.0])
    assert torch.equal(classp.scale("w", g1), g1)  # first task: plain
    classp.after_task(None, None)
    g2 = torch.tensor([0.8, 3.0, 0.2])
    expected = g2 / (1e-3 + g1.abs() ** 2) ** 0.5
    expected[2] = 0.0  # 0.2^2 = 0.04 <= 0.5: gated
    assert torch.allclose(classp.scale("w", g2), expected)
    assert torch.allclose(classp.scale("w", g2), expected)  # the same again: frozen within the task


def test_classp_reference_form_and_the_experiments_protocol():
    g = torch.tensor([0.1, 0.2])  # every g^2 < 0.99, yet the per-tensor gate passes
    scaled = CLASSP(threshold=0.99, power=2.0, eps=1e-3, reference=True, scale_first_task=True)
    assert torch.allclose(scaled.scale("w", g), g / (1e-3 + g.abs()) ** 0.5)  # current step included
    closed = CLASSP(threshold=1.5, first_threshold=1.5, reference=True)
    assert torch.equal(closed.scale("w", g), torch.zeros(2))
    assert "w" not in closed.accumulated  # a closed gate adds nothing to the sum (CLASSP.py)
    # experiment_CV.py: first task unscaled with threshold 0.5, then threshold 0 and scaling
    protocol = CLASSP(reference=True, first_threshold=0.5, threshold=0.0, eps=1e-5)
    a, b = torch.tensor([0.3, -0.1]), torch.tensor([0.2, 0.4])
    assert torch.equal(protocol.scale("w", a), a)
    protocol.after_task(None, None)
    total = a.abs() + b.abs()  # the sum is |g| (p ignored) and includes the current step
    assert torch.allclose(protocol.scale("w", b), b / (1e-5 + total))


@pytest.mark.parametrize("method", ["gpm", "hlop"])
def test_projected_gradients_are_orthogonal_to_the_bases(method):
    stream = small_stream()
    model = mlp(stream)
    gpm = GPM(threshold=0.95) if method == "gpm" else HLOP(rows=3)
    run_stream(model, stream, gpm, ContinualRecipe(epochs=1))
    x, y = next(iter(torch.utils.data.DataLoader(stream[0].train, batch_size=16)))
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    gpm.after_backward(model)
    for layer, basis in gpm.bases.items():
        grad = dict(model.named_parameters())[f"{layer}.weight"].grad
        assert float((grad @ basis).abs().max()) < 1e-5, layer
        assert torch.allclose(basis.t() @ basis, torch.eye(basis.shape[1]), atol=1e-5)
    assert_clean(model)


def test_hebbian_subspace_captures_the_energy_of_exact_pca():
    """HLOP's Oja rule, run during training, finds a subspace capturing >= 98% of the input
    energy that the exact top principal components (same number of rows) capture."""
    from neuroplastic.continual.projection import InputRecorder, projectable_layers

    stream = load_small_permuted()
    model = npl.models.MLP(64, stream.num_outputs, hidden=(64,))
    hlop = HLOP(rows=12)
    run_stream(model, stream, hlop, ContinualRecipe(epochs=3))
    layers = projectable_layers(model)
    x = torch.stack([stream[0].train[i][0] for i in range(min(2000, len(stream[0].train)))])
    with torch.no_grad(), InputRecorder(layers) as recorder:
        model(x)
        inputs = recorder.rows()
    first = next(iter(layers))
    rows = inputs[first]  # the raw inputs of task 0 (first layer): fixed, not retrained
    k = 12
    exact = torch.linalg.svd(rows.double(), full_matrices=False)[2][:k].t()
    exact_energy = float(((rows.double() @ exact) ** 2).sum() / (rows.double() ** 2).sum())
    hlop_first_task = HLOP(rows=12)
    model2 = npl.models.MLP(64, stream.num_outputs, hidden=(64,))
    one = Stream(stream.name, stream.setting, stream.experiences[:2], stream.num_outputs)
    run_stream(model2, one, hlop_first_task, ContinualRecipe(epochs=3))
    basis = hlop_first_task.bases[first].double()[:, :k]
    hebbian = float(((rows.double() @ basis) ** 2).sum() / (rows.double() ** 2).sum())
    assert hebbian >= 0.98 * exact_energy, (hebbian, exact_energy)


def test_clnp_freezes_old_units_bit_for_bit_and_forgets_nothing():
    stream = load_small_permuted(setting="task")
    model = npl.models.MLP(64, stream.num_outputs, hidden=(64, 64))
    snapshots = []

    class Watched(CLNP):
        def after_task(self, model, experience):
            super().after_task(model, experience)
            snapshots.append({name: (self.active[name].clone(), layer.weight.detach().clone(),
                                     layer.bias.detach().clone())
                              for name, layer in model.named_modules() if isinstance(layer, nn.Linear)})

    clnp = Watched(margin=0.02)
    result = run_stream(model, stream, clnp, ContinualRecipe(epochs=3))
    assert result.metrics["bwt"] == 0.0
    for t in range(len(stream)):
        assert torch.equal(result.matrix[t:, t], result.matrix[t, t].expand(len(stream) - t))
    # the units active after task 0 keep their incoming weights and biases bit for bit
    for name, (active, weight, bias) in snapshots[0].items():
        assert active.any(), name
        for later in snapshots[1:]:
            assert torch.equal(later[name][1][active], weight[active]), name
            assert torch.equal(later[name][2][active], bias[active]), name
    # and some units stayed free for the later tasks, which learned something
    assert sum(clnp.free_units[0].values()) > 0
    assert float(result.matrix.diagonal()[1:].min()) > 0.5


def test_clnp_needs_task_labels():
    stream = load_small_permuted(setting="domain")
    with pytest.raises(NeuroplasticError, match="needs task labels"):
        run_stream(npl.models.MLP(64, 10, hidden=(16,)), stream, CLNP(), ContinualRecipe(epochs=1))


def test_streams_and_their_settings():
    data = npl.data.digits()
    split = split_stream(data, setting="task")
    assert len(split) == 5 and split.num_outputs == 10 and split[1].classes == (2, 3)
    assert set(split[1].train.tensors[1].tolist()) == {2, 3}
    domain = split_stream(data, setting="domain")
    assert domain.num_outputs == 2 and set(domain[3].test.tensors[1].tolist()) == {0, 1}
    permuted = permuted_stream(data, tasks=3, setting="task")
    assert permuted.num_outputs == 30 and permuted[2].classes == tuple(range(20, 30))
    x0, x1 = permuted[0].train.tensors[0], permuted[1].train.tensors[0]
    assert torch.equal(x0, data.train.tensors[0])  # task 0 keeps the original order
    assert torch.equal(torch.sort(x1.flatten(1), dim=1).values, torch.sort(x0.flatten(1), dim=1).values)
    loss = split.loss_fn()
    logits = torch.zeros(1, 10)
    logits[0, 5] = 100.0  # a huge logit on another task's unit is masked away
    assert float(loss(logits, torch.tensor([2]))) == pytest.approx(math.log(2))
    with pytest.raises(NeuroplasticError, match="at least two tasks"):
        stream_from_datasets([(data.train, data.test)])
    other = TensorDataset(torch.randn(20, 3), torch.zeros(20, dtype=torch.long))
    with pytest.raises(NeuroplasticError, match="different input shapes"):
        stream_from_datasets([(data.train, data.test), (other, other)])


def test_a_failure_mid_task_restores_the_model_and_leaves_nothing():
    from tests.faults import InjectedFailure, write_seam

    stream = load_small_permuted()
    model = npl.models.MLP(64, stream.num_outputs, hidden=(32,))
    before = copy.deepcopy(model.state_dict())
    hlop = HLOP(rows=4)
    with pytest.raises(InjectedFailure), write_seam(model, fail_at=200):
        run_stream(model, stream, hlop, ContinualRecipe(epochs=2))
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert_clean(model)


def mlp(stream: Stream) -> nn.Module:
    torch.manual_seed(0)
    return npl.models.MLP(int(torch.tensor(stream.input_shape).prod()), stream.num_outputs, hidden=(32,))


def small_stream() -> Stream:
    gen = torch.Generator().manual_seed(0)
    tasks = []
    for _ in range(3):
        x, y = torch.randn(60, 6, generator=gen), torch.randint(0, 3, (60,), generator=gen)
        tasks.append((TensorDataset(x[:40], y[:40]), TensorDataset(x[40:50], y[40:50]),
                      TensorDataset(x[50:], y[50:])))
    return stream_from_datasets(tasks, setting="domain", name="small")


def load_small_permuted(setting: str = "domain") -> Stream:
    return permuted_stream(npl.data.digits(), tasks=3, setting=setting)


def test_torchvision_streams_are_built_from_data_on_disk(monkeypatch):
    """torchvision:<split|permuted>-<MNIST|CIFAR100>:<root> goes through the torchvision
    loader (never downloading); stood in here by digits, since torchvision is optional."""
    import neuroplastic.data.loaders as loaders
    from neuroplastic.data.streams import load_stream

    seen = []

    def fake(name, root, *, seed=0):
        seen.append((name, root))
        return npl.data.digits(seed=seed)

    monkeypatch.setattr(loaders, "load_torchvision", fake)
    split = load_stream("torchvision:split-MNIST:/data/mnist")
    assert seen[-1] == ("MNIST", "/data/mnist") and split.setting == "task" and len(split) == 5
    permuted = load_stream("torchvision:permuted-MNIST:/data/mnist", tasks=3)
    assert permuted.setting == "domain" and len(permuted) == 3
    with pytest.raises(NeuroplasticError, match="torchvision streams are"):
        load_stream("torchvision:rotated-MNIST:/data")


@pytest.mark.parametrize("method", ["gpm", "hlop"])
def test_a_grouped_convolution_is_projected_off_every_groups_old_patches(method):
    """A grouped convolution (4 groups of 2 channels): its basis lives in a group's patch
    space (2 x 3 x 3), it is not the whole space, and each group's filters' gradient is
    projected off it: the layer's outputs on old patches inside the basis cannot move."""
    from neuroplastic.continual.projection import as_rows

    stream = permuted_stream(npl.data.digits(), tasks=2, setting="domain")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1, groups=4),
                          nn.ReLU(), nn.Flatten(), nn.Linear(8 * 64, 10))
    chosen = GPM(threshold=0.9) if method == "gpm" else HLOP(rows=4)
    run_stream(model, stream, chosen, ContinualRecipe(epochs=1))
    basis = chosen.bases["2"]
    assert basis.shape[0] == 2 * 9 and 0 < basis.shape[1] < 2 * 9
    x, y = stream[1].train.tensors[0][:32], stream[1].train.tensors[1][:32]
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    raw = model[2].weight.grad.reshape(8, -1).clone()
    chosen.after_backward(model)
    projected = model[2].weight.grad.reshape(8, -1)
    assert float((projected @ basis).abs().max()) < 1e-5 * float(raw.abs().max())
    assert float((raw @ basis).abs().max()) > 1e-2 * float(raw.abs().max())  # there was something to remove
    # every group's patches are rows of the basis's space: the layer's input, group by group
    patches = as_rows(model[2], torch.relu(model[0](x)).detach())
    assert patches.shape == (32 * 64 * 4, 2 * 9)


@pytest.mark.parametrize("method", ["gpm", "hlop"])
def test_conv_layers_are_projected_on_their_unfolded_patches(method):
    """A Conv2d weight's gradient (flattened to out x in*k*k) is projected off the basis of
    the layer's unfolded input patches, so its response to old patches cannot change."""
    from neuroplastic.continual.projection import as_rows

    stream = permuted_stream(npl.data.digits(), tasks=2, setting="domain")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 10))
    chosen = GPM(threshold=0.9) if method == "gpm" else HLOP(rows=4)
    run_stream(model, stream, chosen, ContinualRecipe(epochs=1))
    basis = chosen.bases["0"]
    assert basis.shape[0] == 9  # 1 channel x 3 x 3 patches
    x, y = stream[1].train.tensors[0][:16], stream[1].train.tensors[1][:16]
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    chosen.after_backward(model)
    grad = model[0].weight.grad.reshape(4, -1)
    assert float((grad @ basis).abs().max()) < 1e-5
    patches = as_rows(model[0], stream[0].train.tensors[0][:4])
    assert patches.shape == (4 * 64, 9)


CONVS = {
    "zeros": lambda: nn.Conv2d(3, 4, 3, padding=1),
    "reflect-stride-dilation": lambda: nn.Conv2d(3, 4, (3, 2), stride=(2, 1), dilation=(1, 2),
                                                 padding=(2, 1), padding_mode="reflect"),
    "same-circular": lambda: nn.Conv2d(3, 4, 3, padding="same", padding_mode="circular"),
    "1x1": lambda: nn.Conv2d(3, 4, 1),
    "grouped": lambda: nn.Conv2d(4, 6, 3, padding=1, groups=2),
    "depthwise-reflect": lambda: nn.Conv2d(4, 4, 3, padding=1, groups=4, padding_mode="reflect"),
}


@pytest.mark.parametrize("kind", sorted(CONVS))
def test_patch_rows_are_what_the_convolution_multiplies_and_sampled_ones_are_drawn_rows(kind):
    """Oracle 1: the layer's own output, each group's filters (out / groups x in / groups * k
    * k) times that group's rows, plus the bias (a reflect- or circular-padded convolution's
    patches are padded its way, not with zeros). Oracle 2: the sampled rows are the full rows
    at the places ``torch.randperm`` draws with the same seed, gathered without unfolding the
    whole input; with no more rows than the limit, all rows in order."""
    from neuroplastic.continual.projection import as_rows, row_count, sampled_rows

    torch.manual_seed(0)
    conv = CONVS[kind]()
    x, groups, out_channels = torch.randn(5, conv.in_channels, 9, 7), conv.groups, conv.out_channels
    rows = as_rows(conv, x)
    assert rows.shape == (row_count(conv, x), conv.weight[0].numel())
    with torch.no_grad():
        out = conv(x)
        filters = conv.weight.reshape(groups, out_channels // groups, -1)
        by_rows = torch.einsum("pgw,gow->pgo", rows.reshape(-1, groups, rows.shape[1]), filters)
        by_rows = by_rows.reshape(5, -1, out_channels) + conv.bias
    assert torch.allclose(by_rows.transpose(1, 2).reshape(out.shape), out, atol=1e-5)
    sampled = sampled_rows(conv, x, limit=17, generator=torch.Generator().manual_seed(3))
    drawn = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(3))[:17]
    assert torch.equal(sampled, rows[drawn])
    every = sampled_rows(conv, x, limit=rows.shape[0], generator=torch.Generator())
    assert torch.equal(every, rows)


@pytest.mark.parametrize("layout", ["view-with-offset", "channels-last"])
def test_sampled_patches_of_an_unpadded_convolution_read_the_input_as_laid_out(layout):
    """Without padding the window view is taken on the input itself: a slice of a larger
    batch (a storage offset) and a channels-last tensor give the unfolded rows too."""
    from neuroplastic.continual.projection import as_rows, sampled_rows

    conv, big = nn.Conv2d(3, 4, 3), torch.randn(7, 3, 9, 9)
    x = big[2:6] if layout == "view-with-offset" else big.contiguous(memory_format=torch.channels_last)
    sampled = sampled_rows(conv, x, limit=11, generator=torch.Generator().manual_seed(5))
    rows = as_rows(conv, x)
    drawn = torch.randperm(rows.shape[0], generator=torch.Generator().manual_seed(5))[:11]
    assert torch.equal(sampled, rows[drawn])


def test_sampled_rows_of_a_token_sequence_are_drawn_tokens():
    from neuroplastic.continual.projection import as_rows, sampled_rows

    layer, x = nn.Linear(6, 2), torch.randn(3, 5, 6)
    sampled = sampled_rows(layer, x, limit=4, generator=torch.Generator().manual_seed(1))
    drawn = torch.randperm(15, generator=torch.Generator().manual_seed(1))[:4]
    assert torch.equal(sampled, as_rows(layer, x)[drawn])


def test_hlop_on_sampled_patches_finds_the_principal_subspace_of_all_patches():
    """HLOP reading 128 random patches per step (of the 32 x 64 a batch has) learns a subspace
    that captures >= 98% of the patch energy the exact top principal components of ALL the
    task's patches capture (same number of rows). Control: a random subspace of that size
    captures far less, so the bound can fail."""
    from neuroplastic.continual.projection import as_rows

    stream = permuted_stream(npl.data.digits(), tasks=2, setting="domain")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 5, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 10))
    k = 6
    hlop = HLOP(rows=k, max_rows=128)
    run_stream(model, stream, hlop, ContinualRecipe(epochs=3))
    patches = as_rows(model[0], stream[0].train.tensors[0]).double()  # 25-wide rows
    total = float((patches ** 2).sum())
    exact = torch.linalg.svd(patches, full_matrices=False)[2][:k].t()
    exact_energy = float(((patches @ exact) ** 2).sum()) / total
    basis = hlop.bases["0"].double()[:, :k]  # the first task's rows come first
    hebbian = float(((patches @ basis) ** 2).sum()) / total
    random_basis = torch.linalg.qr(torch.randn(25, k, dtype=torch.float64,
                                               generator=torch.Generator().manual_seed(0)))[0]
    random_energy = float(((patches @ random_basis) ** 2).sum()) / total
    assert hlop.bases["0"].shape == (25, 2 * k)
    assert random_energy < 0.9 * exact_energy  # the bound below can fail
    assert hebbian >= 0.98 * exact_energy, (hebbian, exact_energy, random_energy)


def test_layer_recorder_reads_inputs_and_outputs_and_leaves_no_hook():
    from neuroplastic.record import LayerRecorder

    model = two_layer()
    x = torch.randn(3, 6)
    with pytest.raises(RuntimeError, match="boom"), LayerRecorder({"0": model[0], "2": model[2]},
                                                                  outputs=True) as recorder:
        out = model(x)
        assert torch.equal(recorder.inputs["0"], x)
        assert torch.equal(recorder.outputs["2"], out.detach())
        assert torch.equal(recorder.inputs["2"], torch.relu(model[0](x)).detach())
        assert not recorder.outputs["2"].requires_grad
        raise RuntimeError("boom")
    assert_clean(model)


def test_gpm_representation_read_in_batches_decomposes_as_the_svd_of_all_rows():
    """GPM reads each layer's representation batch by batch: the rows while fewer than the
    inputs, then only their Gram matrix. Oracle: torch's SVD of all rows stacked, with the
    old basis projected out (same values, same subspaces, same energies), for few samples
    (rows kept) and many (Gram matrix), split over batches of uneven sizes."""
    from neuroplastic.continual.projection import Representation

    torch.manual_seed(0)
    matrix = (torch.randn(500, 6, dtype=torch.float64) @ torch.randn(6, 12, dtype=torch.float64)
              + 1e-3 * torch.randn(500, 12, dtype=torch.float64))  # (samples, inputs): rank 6 + noise
    old = torch.linalg.qr(torch.randn(12, 2, dtype=torch.float64))[0]
    for rows in (matrix, matrix[:10]):  # many samples (Gram matrix), fewer than the inputs (rows)
        representation = Representation(12, torch.device("cpu"))
        for part in torch.tensor_split(rows, [3, 4, 9, 200]):
            representation.add(part)
        assert (representation.gram is None) == (len(rows) < 12)
        for basis in (None, old):
            u, s, total, kept = representation.directions(basis)
            residual = rows.t() if basis is None else rows.t() - basis @ (basis.t() @ rows.t())
            u_ref, s_ref, _ = torch.linalg.svd(residual, full_matrices=False)
            torch.testing.assert_close(s[:6], s_ref[:6], rtol=1e-9, atol=0)
            for k in (1, 3, 6):
                projector, reference = u[:, :k] @ u[:, :k].t(), u_ref[:, :k] @ u_ref[:, :k].t()
                torch.testing.assert_close(projector, reference, rtol=0, atol=1e-8)
            assert total == pytest.approx(float((rows ** 2).sum()), rel=1e-12)
            assert kept == pytest.approx(float((rows ** 2).sum() - (residual ** 2).sum()), rel=1e-9, abs=1e-9)
