"""Each rule where it must match its original: the task-IL Fisher over the task's own
units, SI's relu on the sum and its proximal step, GPM's first-task count, HLOP's
reference (EMA) update, all against hand computations or slow loops."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from neuroplastic.continual import EWC, GPM, HLOP, SI
from neuroplastic.data.splits import DataSplit
from neuroplastic.data.streams import split_stream
from neuroplastic.importance import Fisher


def tiny_split_stream() -> tuple:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=gen)
    y = torch.arange(60) % 4
    ds = TensorDataset(x, y)
    data = DataSplit(train=ds, val=ds, test=ds, num_classes=4, name="toy")
    return split_stream(data, classes_per_task=2, setting="task")


def slow_task_fisher(model: nn.Module, dataset: TensorDataset, units: tuple[int, ...], mode: str,
                     batch_size: int = 32) -> dict[str, torch.Tensor]:
    """The Fisher with the softmax over ``units`` only, by plain loops (one sample, one class
    at a time; batch_sq: one batch at a time)."""
    keep = list(units)
    params = dict(model.named_parameters())
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    x, y = dataset.tensors
    local = {u: i for i, u in enumerate(keep)}
    if mode == "batch_sq":
        count = 0
        for start in range(0, len(x), batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            loss = nn.functional.cross_entropy(model(xb)[:, keep], torch.tensor([local[int(v)] for v in yb]))
            grads = torch.autograd.grad(loss, list(params.values()))
            for (n, _), g in zip(params.items(), grads, strict=True):
                sums[n] += g ** 2
            count += 1
        return {n: s / count for n, s in sums.items()}
    for i in range(len(x)):
        log_p = torch.log_softmax(model(x[i:i + 1])[0, keep], -1)
        classes = range(len(keep)) if mode == "exact" else [local[int(y[i])]]
        for c in classes:
            grads = torch.autograd.grad(-log_p[c], list(params.values()), retain_graph=True)
            weight = float(log_p[c].detach().exp()) if mode == "exact" else 1.0
            for (n, _), g in zip(params.items(), grads, strict=True):
                sums[n] += weight * g ** 2
    return {n: s / len(x) for n, s in sums.items()}


@pytest.mark.parametrize("mode", ["batch_sq", "per_sample", "exact"])
def test_ewc_task_il_fisher_is_the_loop_over_the_tasks_own_units(mode):
    stream = tiny_split_stream()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4))
    ewc = EWC(fisher=mode)
    experience = stream[0]
    ewc.after_task(model, experience)
    fisher, _ = ewc.terms[0]
    expected = slow_task_fisher(model, experience.train, experience.classes, mode)
    for name, value in expected.items():
        torch.testing.assert_close(fisher[name], value, rtol=1e-4, atol=1e-7)
    # the next task's head rows get no Fisher at all: nothing anchors units not yet seen
    later = [u for u in range(4) if u not in experience.classes]
    assert float(fisher["2.weight"][later].abs().max()) == 0.0
    # the unmasked Fisher (softmax over all four units) is a different thing
    unmasked = Fisher(mode=mode).estimate(model, [(experience.train.tensors[0], experience.train.tensors[1])]
                                          if mode != "batch_sq" else
                                          torch.utils.data.DataLoader(experience.train, batch_size=32))
    assert float(unmasked["2.weight"][later].abs().max()) > 0


def test_si_relu_applies_to_the_sum_of_old_and_new_importance():
    model = nn.Linear(1, 1, bias=False)
    si = SI(c=1.0, xi=1.0)
    si.importance = {"weight": torch.tensor([[0.5]])}
    si.anchor = {"weight": torch.tensor([[0.0]])}
    si.before_task(model, None)
    si.omega = {"weight": torch.tensor([[-0.2]])}  # a negative contribution this task
    si.after_task(model, None)
    # relu(0.5 + (-0.2) / (0 + 1)) = 0.3; a relu on the new term alone would keep 0.5
    torch.testing.assert_close(si.importance["weight"], torch.tensor([[0.3]]))
    si.omega = {"weight": torch.tensor([[-0.9]])}
    si.start = {"weight": model.weight.detach().clone()}
    si.after_task(model, None)
    torch.testing.assert_close(si.importance["weight"], torch.tensor([[0.0]]))  # relu(0.3 - 0.9)


def test_si_proximal_step_is_the_closed_form_and_omega_sees_the_actual_change():
    model = nn.Linear(2, 1, bias=False)
    si = SI(c=2.0, xi=0.1, lr=0.5)
    omega_big, star = torch.tensor([[1.0, 4.0]]), torch.tensor([[0.0, 1.0]])
    si.importance, si.anchor = {"weight": omega_big}, {"weight": star}
    si.before_task(model, None)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[2.0, 3.0]]))
    model.weight.grad = torch.tensor([[0.5, -1.0]])
    si.after_backward(model)
    before = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.sub_(0.5 * model.weight.grad)  # the optimizer's step
    stepped = model.weight.detach().clone()
    si.after_step(model, 1)
    scale = 2 * 0.5 * 2.0  # 2 lr c
    expected = (stepped + scale * omega_big * star) / (1 + scale * omega_big)
    torch.testing.assert_close(model.weight.detach(), expected)
    torch.testing.assert_close(si.omega["weight"], -torch.tensor([[0.5, -1.0]]) * (expected - before))


def test_gpm_counts_directions_as_the_original():
    """First task: r = #(cumulative energy ratio < threshold); later tasks: add until the
    ratio reaches it (update_GPM in main_pmnist.py)."""
    torch.manual_seed(0)
    layer = nn.Linear(3, 2)
    model = nn.Sequential(layer)
    scales = torch.tensor([3.0, 2.0, 1.0])  # energy shares 9/14, 4/14, 1/14
    x = torch.linalg.qr(torch.randn(40, 3))[0] * scales
    ds = TensorDataset(x, torch.zeros(40, dtype=torch.long))

    class Task:
        train = ds

    gpm = GPM(threshold=0.9, max_samples=40)
    gpm.after_task(model, Task())
    # cumulative ratios 0.643, 0.929, 1.0: one below 0.9 -> one direction (the + 1 form took two)
    assert gpm.bases["0"].shape[1] == 1
    gpm.after_task(model, Task())  # kept 0.643 < 0.9: add 0.286 -> 0.929 >= 0.9, one more
    assert gpm.bases["0"].shape[1] == 2


def test_hlop_reference_update_is_an_ema_of_clamped_oja_steps_by_hand():
    hlop = HLOP(rows=1, eta=0.3, iterations=2, momentum=0.9, ema=True, normalize=False)
    h0 = torch.tensor([[0.6, 0.8, 0.0]])
    hlop.new = {"l": h0.clone()}
    hlop.velocity = {"l": torch.zeros(1, 3)}
    x = torch.tensor([[20.0, 0.0, 1.0], [0.0, 3.0, -1.0]])
    h, v = h0.clone(), torch.zeros(1, 3)
    for _ in range(2):
        y = x @ h.t()
        delta = (y.t() @ (x - y @ h) / 2).clamp(-10, 10)  # dH clamped, not H
        v = 0.9 * v + 0.1 * delta
        h = h + 0.3 * v
    torch.testing.assert_close(hlop._oja("l", x), h)
    assert float(h.abs().max()) > 1.0 or float(delta.abs().max()) == 10.0  # the clamp acted on dH


@pytest.mark.parametrize("form", [None, "residual", "gram"])
def test_hlop_update_with_old_rows_is_the_literal_oja_rule(form):
    """With an old basis taking part in y (fixed), the update -- in either of its computed
    forms, and the one chosen by cost -- equals the rule as written: y = x [H_old; H]^T,
    dH = y_new^T (x - y [H_old; H]) / B, heavy-ball momentum, clamp (the default form,
    normalised by the batch's input energy)."""
    torch.manual_seed(0)
    hlop = HLOP(rows=2, eta=0.05, iterations=3, momentum=0.9)
    old = torch.linalg.qr(torch.randn(6, 3, dtype=torch.float64))[0]  # (inputs, k_old) columns
    h0 = torch.randn(2, 6, dtype=torch.float64)
    hlop.bases = {"l": old}
    hlop.new = {"l": h0.clone()}
    hlop.velocity = {"l": torch.zeros(2, 6, dtype=torch.float64)}
    x = torch.randn(40, 6, dtype=torch.float64)
    energy = float((x * x).sum(1).mean())
    h, v = h0.clone(), torch.zeros(2, 6, dtype=torch.float64)
    for _ in range(3):
        full = torch.cat([old.t(), h])
        y = x @ full.t()
        delta = y[:, 3:].t() @ (x - y @ full) / (40 * energy)
        v = 0.9 * v + delta
        h = (h + 0.05 * v).clamp(-10, 10)
    torch.testing.assert_close(hlop._oja("l", x, form=form), h, rtol=1e-12, atol=1e-14)


def test_gpm_reads_convolutions_on_conv_samples_and_linear_layers_on_max_samples():
    """Each layer's representation comes from its own number of task samples (the original
    takes 100-125 for deep convolutions, 300 for its MLP): changing the samples after the
    first ``conv_samples`` leaves the convolution's basis exactly as it was and moves the
    Linear layer's, which reads ``max_samples``."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 3))
    x = torch.randn(50, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    changed = x.clone()
    changed[20:] = torch.randn(30, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    bases = []
    for inputs in (x, changed):
        class Task:
            train = TensorDataset(inputs, torch.zeros(50, dtype=torch.long))

        gpm = GPM(threshold=0.9, max_samples=50, conv_samples=20)
        gpm.after_task(model, Task())
        bases.append(gpm.bases)
    assert torch.equal(bases[0]["0"], bases[1]["0"])  # the convolution saw the same 20 samples
    assert bases[0]["3"].shape != bases[1]["3"].shape or not torch.allclose(bases[0]["3"], bases[1]["3"])
