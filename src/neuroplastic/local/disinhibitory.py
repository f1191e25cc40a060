"""Dis-inhibitory control of the sign of plasticity (Rossbroich & Zenke, NeurIPS 2023,
arXiv 2310.19614; reference code ``fmi-basel/disinhibitory-control``).

The circuit: every hidden excitatory unit (E) has its own inhibitory interneuron (I):

    tau_E du_E/dt = -u_E + W h_prev + b - phi_I(u_I)
    tau_I du_I/dt = -u_I + phi_E(u_E) - (c Q)           (per hidden layer)
    tau_E du_o/dt = -u_o + W_o h_last + c               (readout, no bias)

with ``h = phi_E(u_E)`` (softplus for E and I). The top-down control ``c`` comes from a
leaky PI controller on the output error ``e = y* - softmax(u_o)`` (soft targets):
``c = k_i c_int + k_p e``, ``tau_c dc_int/dt = e - leak c_int``. Control inhibits the
interneurons, so error *dis-inhibits* the E cells. The feedback weights ``Q`` are not
learned: per sample, the Jacobian of the output with respect to ``u_E`` (through the
linearised feed-forward chain ``W_o D_L W_L ... W_(l+1) D_l``, ``D = diag(phi_E'(u_E))``)
times ``phi_I'(u_I)`` per unit, at the open-loop state, scaled to Frobenius norm 1 (the
reference's ``calculate_jacobian`` + ``norm_fb_weights``).

Learning: from the open-loop steady state, the closed loop runs to its steady state; each
hidden layer's local error ``delta = (phi_I^-1(r_I) - phi_E(u_E)) phi_E'(u_E)`` (``exact``:
the inverse is ``u_I``; ``lin-thresh``: phi_I^-1 linearised around the batch's mean
inhibitory rate) and the readout's ``W_o h - u_o`` (= -c) give the update
``delta x h_prev`` averaged over the batch, handed to any optimizer as a gradient.

The open-loop steady state, which is also the network's prediction, needs no ODE: each
unit solves ``u + phi_I(phi_E(u)) = a`` (strictly increasing and convex in u), found by
Newton's method; its gradient is the implicit one, so backprop through
:class:`DisinhibitoryMLP` is backprop of the same network (the reference's BP trainer
differentiates through the open-loop ODE solve, which converges to the same point).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuroplastic import loop
from neuroplastic.checks import require_choice, require_in, require_positive
from neuroplastic.data.splits import DataSplit, loader
from neuroplastic.errors import NeuroplasticError
from neuroplastic.local.base import add_grad_, alignment
from neuroplastic.local.broyden import RootResult, broyden
from neuroplastic.local.protocol import LearnContext, LearnDefaults, LearnMethod, LearnOutcome
from neuroplastic.registry import register
from neuroplastic.types import LossFn


def softplus_inverse(r: Tensor) -> Tensor:
    """``log(exp(r) - 1)``, linear above 50 for stability (as the reference)."""
    return torch.where(r > 50, r, torch.log(torch.expm1(r.clamp_min(1e-30))))


class Activation:
    """An activation with its derivative and inverse (softplus by default; ``linear`` for
    the closed-form tests)."""

    def __init__(self, kind: str = "softplus") -> None:
        self.kind = require_choice("activation", kind, ("softplus", "linear"))

    def __call__(self, u: Tensor) -> Tensor:
        return F.softplus(u) if self.kind == "softplus" else u

    def deriv(self, u: Tensor) -> Tensor:
        return torch.sigmoid(u) if self.kind == "softplus" else torch.ones_like(u)

    def inverse(self, r: Tensor) -> Tensor:
        return softplus_inverse(r) if self.kind == "softplus" else r


class UnitRest(NamedTuple):
    """Where :func:`solve_units` stopped: ``u_E``, its rate ``phi_E(u_E)`` and the residual
    ``u_E + phi_I(phi_E(u_E) - t) - drive`` there."""

    exc: Tensor
    rate: Tensor
    residual: Tensor


def solve_units(drive: Tensor, top_down: Tensor, phi: Activation, *, start: Tensor | None = None,
                iterations: int = 50, tol: float = 1e-7) -> UnitRest:
    """Per unit, the E state ``u`` at which the E and I equations both rest for a fixed
    top-down input ``t``: ``u + phi_I(phi_E(u) - t) = drive`` (then ``u_I = phi_E(u) - t``).

    The left side is increasing and convex in ``u`` (slope >= 1), so Newton's method
    converges from any start: from the right monotonically, from the left after one step.
    ``drive`` itself lies right of the root. Stops when every residual is below ``tol`` or
    below the rounding floor of the dtype (16 ulp of the largest drive), no gradient.
    """
    with torch.no_grad():
        u = (drive if start is None else start).clone()
        floor = max(tol, 16 * torch.finfo(drive.dtype).eps * float(drive.abs().max()))
        for step in range(iterations + 1):
            rate = phi(u)
            inh = rate - top_down
            residual = u + phi(inh) - drive
            if step == iterations or float(residual.abs().max()) <= floor:
                break
            u = u - residual / (1 + phi.deriv(inh) * phi.deriv(u))
    return UnitRest(u, rate, residual)


class DisinhibitoryMLP(nn.Module):
    """The E/I network at its open-loop steady state: hidden ``Linear`` layers (with bias)
    whose units each pair an E cell with an I interneuron, and a bias-free readout.

    ``forward`` returns the readout ``u_o = W_o phi_E(u_E)``, with ``u_E`` solving
    ``u_E + phi_I(phi_E(u_E)) = W h + b`` per unit (differentiable, implicit gradient).
    """

    def __init__(self, in_features: int, num_classes: int, *, hidden: tuple[int, ...] = (64, 64),
                 activation: str = "softplus") -> None:
        super().__init__()
        widths = (in_features, *hidden)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        self.readout = nn.Linear(widths[-1], num_classes, bias=False)
        self.phi = Activation(activation)
        with torch.no_grad():  # the reference's (flax Dense) init: LeCun normal, zero bias
            for layer in [*self.hidden, self.readout]:
                nn.init.trunc_normal_(layer.weight, std=1.0, a=-2.0, b=2.0)
                layer.weight.mul_(1 / math.sqrt(layer.in_features) / 0.87962566103423978)
                if layer.bias is not None:
                    layer.bias.zero_()

    def excitatory_state(self, drive: Tensor) -> Tensor:
        """``u`` solving ``u + phi_I(phi_E(u)) = drive`` (:func:`solve_units` without
        top-down input), differentiable in ``drive`` through the implicit-function gradient."""
        phi = self.phi
        rest = solve_units(drive.detach(), torch.zeros((), dtype=drive.dtype, device=drive.device), phi)
        slope = 1 + phi.deriv(rest.rate) * phi.deriv(rest.exc)
        # value u; gradient d u / d drive = 1 / slope (u itself carries no graph)
        return rest.exc + (drive - drive.detach() - rest.residual) / slope

    def open_loop(self, x: Tensor) -> OpenLoop:
        """Drives, E and I states of every hidden layer and the readout, at the open-loop
        steady state (``u_I = phi_E(u_E)``)."""
        phi = self.phi
        h = x.flatten(1)
        state = OpenLoop(inputs=[], drives=[], exc=[], out=h)
        for layer in self.hidden:
            state.inputs.append(h)
            drive = layer(h)
            state.drives.append(drive)
            u = self.excitatory_state(drive)
            state.exc.append(u)
            h = phi(u)
        state.inputs.append(h)
        state.out = self.readout(h)
        return state

    def forward(self, x: Tensor) -> Tensor:
        return self.open_loop(x).out


@dataclass
class OpenLoop:
    """A steady state of :class:`DisinhibitoryMLP`: ``inputs[l]`` feeds layer l (the last
    feeds the readout), ``drives[l]`` is layer l's ``W h + b``, ``exc[l]`` its ``u_E``,
    ``out`` the readout."""

    inputs: list[Tensor]
    drives: list[Tensor]
    exc: list[Tensor]
    out: Tensor


class Scratch:
    """Tensors reused from batch to batch, one per role: on CPU a fresh (batch, outputs,
    units) tensor in every step costs its page faults (0.8 ms of a 9.9 ms step of
    784-256x3-10 at batch 100, measured); CUDA's caching allocator makes this a no-op."""

    def __init__(self) -> None:
        self.tensors: dict[str, Tensor] = {}

    def get(self, role: str, shape: tuple[int, ...], like: Tensor) -> Tensor:
        """An uninitialised tensor of ``shape`` (``like``'s dtype and device) for ``role``."""
        held = self.tensors.get(role)
        if held is None or held.shape != shape or held.dtype != like.dtype or held.device != like.device:
            held = self.tensors[role] = torch.empty(shape, dtype=like.dtype, device=like.device)
        return held


@dataclass
class Feedback:
    """One hidden layer's feedback weights ``Q = jacobian * scale`` (scale per sample and
    unit): ``jacobian`` is ``d y / d h`` of the chain above the layer, (outputs, units) when
    the batch shares it (the last layer: ``W_o``) or (batch, outputs, units);
    ``scale`` (batch, units) is ``phi_E'(u_E) phi_I'(u_I) / ||Q||_F``. Kept factored, the
    last layer's ``c Q`` is one matmul and no (batch, outputs, units) tensor is built."""

    jacobian: Tensor
    scale: Tensor

    def top_down(self, control: Tensor) -> Tensor:
        """``c Q`` per sample, (batch, units), for the control ``c`` (batch, outputs)."""
        if self.jacobian.dim() == 2:
            return (control @ self.jacobian) * self.scale
        return torch.bmm(control.unsqueeze(1), self.jacobian).squeeze(1) * self.scale

    def dense(self) -> Tensor:
        """``Q`` itself, (batch, outputs, units)."""
        return self.jacobian * self.scale.unsqueeze(1)


@dataclass
class CircuitState:
    """The closed-loop state: E and I of every hidden layer, readout, controller integral."""

    exc: list[Tensor]
    inh: list[Tensor]
    out: Tensor
    integral: Tensor

    def tensors(self) -> list[Tensor]:
        return [*self.exc, *self.inh, self.out, self.integral]

    def combine(self, other: CircuitState, scale: float) -> CircuitState:
        """``self + scale * other`` (other is a time derivative)."""
        mixed = [torch.add(a, b, alpha=scale) for a, b in zip(self.tensors(), other.tensors(), strict=True)]
        n = len(self.exc)
        return CircuitState(mixed[:n], mixed[n:2 * n], mixed[2 * n], mixed[2 * n + 1])


class RootPoint(NamedTuple):
    """One evaluation of :meth:`DisinhibitoryControl.root_loop`: the state, its residual
    (<= 1: at rest) and every hidden layer's drive and top-down input there."""

    state: CircuitState
    residual: float
    drives: list[Tensor]
    top_downs: list[Tensor]


@dataclass
class SolveStats:
    """How the closed-loop solves went over training: ``steps`` counts root evaluations
    (``root``) or integration steps (``euler``/``rk4``); ``fallbacks`` the root solves that
    failed and were integrated instead."""

    solves: int = 0
    steps: int = 0
    unconverged: int = 0
    worst_residual: float = 0.0
    fallbacks: int = 0

    def to_metrics(self) -> dict[str, float]:
        return {"closed_loop.solves": float(self.solves),
                "closed_loop.mean_steps": self.steps / max(self.solves, 1),
                "closed_loop.unconverged": float(self.unconverged),
                "closed_loop.worst_residual": self.worst_residual,
                "closed_loop.ode_fallbacks": float(self.fallbacks)}


@register("disinhibitory", kind="learn", needs=("labels", "lr", "own_network"))
class DisinhibitoryControl(LearnMethod):
    """Dis-inhibitory control of plasticity (Rossbroich & Zenke, NeurIPS 2023): a PI
    controller's top-down signal dis-inhibits E cells; each weight learns from its own
    unit's E-I mismatch at the closed-loop steady state.

    Args (defaults of the reference's ``conf/``, times in seconds):
        variant: ``exact`` (ExactTrainer) or ``lin-thresh`` (AvgInhTaylorApproxTrainer).
        solver: how the closed loop reaches its steady state. ``root`` (default) finds it
            as the root it is (:meth:`root_loop`: Broyden's method on the control signal,
            a few forward passes per batch); ``euler`` or ``rk4`` integrate the ODE with
            fixed step ``dt`` (as the reference does with its adaptive Tsit5), checked every
            ``check_every`` steps, up to ``horizon``; a root solve that fails is integrated
            with Euler instead (counted). Every solver stops at steady state, i.e. when
            every sample's RMS time derivative is below ``atol + rtol * RMS state``.
        root_iterations: the most Broyden steps per batch (50).
        tau_exc, tau_inh, tau_ctrl: time constants (20 ms, 5 ms, 100 ms).
        k_p, k_i, leak: the leaky PI controller (0.2, 0.4, 1).
        soft_target: the target probability of the true class (0.99).
        error: ``softmax`` (cross-entropy error, the reference's) or ``linear``
            (``y* - u_o``, the MSE error; with linear activations the closed loop is linear).
        avg_inh_lambda, avg_inh_init: lin-thresh's running mean inhibitory rate (1, 0.8).
    """

    # the reference's Adam 1e-3 undertrains on digits (shared/LOCAL.md); 5e-3 as in the demo
    defaults = LearnDefaults((64, 64), 30, 5e-3, 100)
    own_network = True

    def __init__(self, *, variant: str = "exact", solver: str = "root", dt: float = 2e-3,
                 horizon: float = 2.0, rtol: float = 1e-3, atol: float = 1e-6, check_every: int = 10,
                 tau_exc: float = 20e-3, tau_inh: float = 5e-3, tau_ctrl: float = 100e-3,
                 k_p: float = 0.2, k_i: float = 0.4, leak: float = 1.0, soft_target: float = 0.99,
                 error: str = "softmax", avg_inh_lambda: float = 1.0, avg_inh_init: float = 0.8,
                 root_iterations: int = 50) -> None:
        self.variant = require_choice("variant", variant, ("exact", "lin-thresh"))
        self.solver = require_choice("solver", solver, ("root", "euler", "rk4"))
        self.root_iterations = int(require_positive("root_iterations", root_iterations))
        self.error = require_choice("error", error, ("softmax", "linear"))
        for name, value in (("dt", dt), ("horizon", horizon), ("tau_exc", tau_exc),
                            ("tau_inh", tau_inh), ("tau_ctrl", tau_ctrl)):
            require_positive(name, value)
        if dt > horizon:
            raise NeuroplasticError(f"dt ({dt}) must not exceed the horizon ({horizon})")
        self.dt, self.horizon, self.rtol, self.atol = dt, horizon, rtol, atol
        self.check_every = int(require_positive("check_every", check_every))
        self.tau_exc, self.tau_inh, self.tau_ctrl = tau_exc, tau_inh, tau_ctrl
        self.k_p, self.k_i, self.leak = k_p, k_i, leak
        self.soft_target = require_in("soft_target", soft_target, 0.0, 1.0, low_open=True)
        self.avg_inh_lambda = require_in("avg_inh_lambda", avg_inh_lambda, 0.0, 1.0, low_open=True)
        self.avg_inh_init = require_positive("avg_inh_init", avg_inh_init)
        self.avg_inh: list[Tensor] | None = None
        self.stats = SolveStats()
        self.scratch = Scratch()

    # ----- the learn protocol -----
    def network(self, split: DataSplit, hidden: tuple[int, ...]) -> nn.Module:
        """A :class:`DisinhibitoryMLP` (E/I pairs) of ``hidden`` widths."""
        return DisinhibitoryMLP(math.prod(split.input_shape), split.num_classes, hidden=hidden)

    def train(self, model: nn.Module, ctx: LearnContext) -> LearnOutcome:
        """Adam on the closed-loop updates (``batch_grads``), logging the alignment with
        backprop's gradient on a validation batch after every epoch."""
        outcome = LearnOutcome()
        probe = next(iter(loader(ctx.split.val, batch_size=256)))
        device = ctx.example.device
        log = AlignmentLog(self, (probe[0].to(device), probe[1].to(device)), outcome.alignment)
        optimizer = torch.optim.Adam(model.parameters(), lr=ctx.lr)
        loop.fit(model, ctx.batches(ctx.batch_size), optimizer=optimizer, epochs=ctx.epochs,
                 batch_grads=self.batch_grads, plugins=[log, *ctx.plugins], progress=ctx.progress)
        for layer, (cosine, sign) in outcome.alignment[-1].items():
            name = layer.removesuffix(".weight")
            outcome.metrics[f"alignment.{name}"] = cosine
            outcome.metrics[f"alignment.{name}.sign"] = sign
        outcome.metrics.update(self.stats.to_metrics())
        if self.stats.unconverged:
            outcome.notes.append(
                f"the closed loop did not reach steady state within the horizon ({self.horizon:g} s) "
                f"in {self.stats.unconverged} of {self.stats.solves} batches (largest residual "
                f"{self.stats.worst_residual:.3g} x the tolerance): those updates rest on unsettled "
                "states; raise --param horizon=... or dt")
        return outcome

    def twin_loss(self) -> LossFn:
        """Backprop minimises this rule's own loss (soft targets, its error function)."""
        return lambda out, y: self.loss(out, self.targets(y, out.shape[-1]))

    # ----- targets and feedback -----
    def targets(self, y: Tensor, classes: int) -> Tensor:
        """Soft targets: ``soft_target`` on the true class, the rest spread evenly."""
        rest = (1 - self.soft_target) / (classes - 1)
        return F.one_hot(y, classes).to(torch.get_default_dtype()) * (self.soft_target - rest) + rest

    def output_error(self, out: Tensor, target: Tensor) -> Tensor:
        return target - (torch.softmax(out, dim=-1) if self.error == "softmax" else out)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        """The loss whose negative gradient the controller's error is (batch mean)."""
        if self.error == "softmax":
            return -(target * torch.log_softmax(out, dim=-1)).sum(-1).mean()
        return 0.5 * (target - out).pow(2).sum(-1).mean()

    @torch.no_grad()
    def feedback_weights(self, model: DisinhibitoryMLP, exc: list[Tensor],
                         rates: list[Tensor] | None = None, *, scratch: Scratch | None = None
                         ) -> list[Feedback]:
        """Per hidden layer, ``Q_l`` (per sample, outputs x units): the linearised output
        Jacobian with respect to ``u_E``, times ``phi_I'(u_I)`` at the open-loop state
        (``u_I = phi_E(u_E)``), scaled to Frobenius norm 1; kept factored (:class:`Feedback`),
        without gradient (the feedback weights are not learned).

        Args:
            exc: the open-loop ``u_E`` of every hidden layer.
            rates: their ``phi_E(u_E)`` if already computed.
            scratch: where to build the per-sample Jacobians (then valid until its next use;
                fresh tensors without it).
        """
        phi = model.phi
        scratch = Scratch() if scratch is None else scratch
        rates = [phi(u) for u in exc] if rates is None else rates
        # prefix: d y / d h_l, the chain above layer l (W_o for the last layer, shared)
        prefix = model.readout.weight
        out: list[Feedback] = []
        for index in reversed(range(len(exc))):
            slope = phi.deriv(exc[index])
            unit = slope * phi.deriv(rates[index])
            # ||Q||_F^2 = sum_j unit_j^2 sum_k prefix_kj^2 (summed over the outputs first)
            squared = prefix.square() if prefix.dim() == 2 else \
                torch.mul(prefix, prefix, out=scratch.get("squared", prefix.shape, prefix))
            norm = (unit.square() * squared.sum(dim=-2)).sum(dim=1).sqrt().clamp_min(1e-30)
            out.insert(0, Feedback(prefix, unit / norm.unsqueeze(1)))
            if index > 0:
                weight = model.hidden[index].weight
                shape = (len(slope), *prefix.shape[-2:])
                scaled = torch.mul(prefix, slope.unsqueeze(1), out=scratch.get("scaled", shape, slope))
                prefix = torch.matmul(scaled, weight, out=scratch.get(f"jacobian{index - 1}",
                                                                       (*shape[:2], weight.shape[1]), slope))
        return out

    # ----- dynamics -----
    def derivative(self, model: DisinhibitoryMLP, x: Tensor, target: Tensor, feedback: list[Feedback],
                   s: CircuitState) -> tuple[CircuitState, Tensor]:
        """The time derivative of the closed-loop state, and the control ``c``."""
        phi = model.phi
        error = self.output_error(s.out, target)
        control = self.k_i * s.integral + self.k_p * error
        d_exc, d_inh = [], []
        h = x
        for layer, u_e, u_i, q in zip(model.hidden, s.exc, s.inh, feedback, strict=True):
            rate = phi(u_e)
            d_exc.append((layer(h) - u_e - phi(u_i)).div_(self.tau_exc))
            top_down = q.top_down(control)
            d_inh.append((rate - u_i - top_down).div_(self.tau_inh))
            h = rate
        d_out = (model.readout(h) - s.out + control).div_(self.tau_exc)
        d_int = (error - self.leak * s.integral).div_(self.tau_ctrl)
        return CircuitState(d_exc, d_inh, d_out, d_int), control

    def closed_loop(self, model: DisinhibitoryMLP, x: Tensor, target: Tensor, feedback: list[Feedback],
                    start: CircuitState, *, drives: list[Tensor] | None = None
                    ) -> tuple[CircuitState, float, int]:
        """The closed-loop steady state from ``start`` (the open-loop state) with the
        configured solver; a failed root solve falls back to Euler integration.

        Args:
            drives: every hidden layer's ``W h + b`` at ``start``, if already computed.

        Returns:
            The final state, its largest per-sample residual ``RMS(ds/dt) / (atol + rtol *
            RMS(s))`` (<= 1 means converged) and the number of steps (root evaluations or
            integration steps) taken.
        """
        if self.solver != "root":
            return self.integrate(model, x, target, feedback, start, solver=self.solver)
        if drives is None:
            drives, h = [], x
            for layer, u in zip(model.hidden, start.exc, strict=True):
                drives.append(layer(h))
                h = model.phi(u)
        root = self.root_loop(model, x, target, feedback, start, drives)
        if root.converged:
            return root.aux.state, root.aux.residual, root.evaluations
        self.stats.fallbacks += 1
        state, residual, steps = self.integrate(model, x, target, feedback, start, solver="euler")
        return state, residual, steps + root.evaluations

    def root_loop(self, model: DisinhibitoryMLP, x: Tensor, target: Tensor, feedback: list[Feedback],
                  start: CircuitState, drives: list[Tensor]) -> RootResult[RootPoint]:
        """The steady state as a root in the control ``c`` alone (K numbers per sample).

        At rest the controller gives ``c = kappa e`` with ``kappa = k_i / leak + k_p`` and
        ``e`` the output error; for a given ``c`` every hidden unit rests where
        ``u_E + phi_I(phi_E(u_E) - (cQ)_j) = W h + b`` (:func:`solve_units`, layer by layer)
        and the readout at ``W_o h + c``. So the steady state is the root of
        ``F(c) = leak c - (k_i + leak k_p) e(c)`` (``c - k_p e(c)`` without an integrator),
        found by Broyden's method from the open loop (``c = 0``), with the first inverse
        Jacobian from the last hidden layer's direct response to ``c`` (exact with one
        hidden layer; the earlier layers' share is learnt by the secant updates). It stops
        by the integrators' own rule, at the same residual.

        Each unit solve starts where the linearisation at the open loop moves the last
        evaluation's state for the change of drive ``a`` and top-down input ``t``:
        ``du = (da + phi_I' dt) / (1 + phi_I' phi_E')``, one Newton step without evaluating
        the residual there (``drives``: every layer's ``W h + b`` at ``start``).
        """
        phi = model.phi
        integrating = self.k_i > 0
        a, b = (self.leak, self.k_i + self.leak * self.k_p) if integrating else (1.0, self.k_p)
        # phi_E'(u_E) and phi_I'(u_I) at the open loop, per layer
        slopes = [(phi.deriv(u_e), phi.deriv(u_i)) for u_e, u_i in zip(start.exc, start.inh, strict=True)]
        steer = [(1 / (1 + d_i * d_e), d_i) for d_e, d_i in slopes]

        def evaluate(c: Tensor, previous: RootPoint | None) -> tuple[Tensor, RootPoint]:
            if previous is None:
                warm, warm_drives = start.exc, drives
                warm_tops: list[Tensor | None] = [None] * len(drives)
            else:
                warm, warm_drives, warm_tops = previous.state.exc, previous.drives, list(previous.top_downs)
            exc, inh, unit_residuals, now_drives, tops, h = [], [], [], [], [], x
            for index, (layer, q) in enumerate(zip(model.hidden, feedback, strict=True)):
                drive = drives[0] if index == 0 else layer(h)
                top_down = q.top_down(c)
                inverse_slope, d_i = steer[index]
                shift = top_down if warm_tops[index] is None else top_down - warm_tops[index]
                guess = warm[index] + (drive - warm_drives[index] + d_i * shift) * inverse_slope
                # the units' share of the stopping rule, a tenth of it
                tol = 0.1 * self.tau_exc * (self.atol + self.rtol * float(drive.square().mean().sqrt()))
                rest = solve_units(drive, top_down, phi, start=guess, tol=tol)
                exc.append(rest.exc)
                inh.append(rest.rate - top_down)
                unit_residuals.append(rest.residual / -self.tau_exc)
                now_drives.append(drive)
                tops.append(top_down)
                h = rest.rate
            out = model.readout(h) + c
            error = self.output_error(out, target)
            if integrating:  # the integral that makes the controller's output exactly c
                integral = (c - self.k_p * error) / self.k_i
            else:
                integral = error / self.leak if self.leak > 0 else torch.zeros_like(error)
            control = self.k_i * integral + self.k_p * error
            state = CircuitState(exc, inh, out, integral)
            # ds/dt there: the I cells rest by construction, so only these parts move
            moving = [*unit_residuals, (control - c) / self.tau_exc,
                      (error - self.leak * integral) / self.tau_ctrl]
            return a * c - b * error, RootPoint(state, self.residual(state, moving), now_drives, tops)

        # first inverse Jacobian: dF/dc = a I + b S (I + W_o diag(phi'(u_E) phi'(u_I) / slope) Q^T);
        # W_o diag(v) W_o^T for every sample as one product with the columns' outer products
        (d_e, d_i), last = slopes[-1], feedback[-1]
        weight = model.readout.weight
        outer = (weight.T.unsqueeze(2) * last.jacobian.T.unsqueeze(1)).flatten(1)  # (units, K * K)
        classes = weight.shape[0]
        response = ((d_e * d_i * steer[-1][0] * last.scale) @ outer).view(-1, classes, classes)
        eye = torch.eye(classes, dtype=response.dtype, device=response.device)
        response = response + eye
        if self.error == "softmax":
            p = torch.softmax(start.out, dim=-1)
            response = (torch.diag_embed(p) - p.unsqueeze(-1) * p.unsqueeze(-2)) @ response
        inverse = torch.linalg.inv(a * eye + b * response)
        # at c = 0 the units rest at the open loop, so F(0) = -b e(open loop); the controller
        # is not at rest there unless the error is exactly 0, which the Broyden step then keeps
        start_error = self.output_error(start.out, target)
        return broyden(evaluate, torch.zeros_like(start.out), inverse, residual0=-b * start_error,
                       converged=lambda _, aux: aux.residual <= 1.0, iterations=self.root_iterations)

    def integrate(self, model: DisinhibitoryMLP, x: Tensor, target: Tensor, feedback: list[Feedback],
                  start: CircuitState, *, solver: str) -> tuple[CircuitState, float, int]:
        """Integrate the ODE (``euler`` or ``rk4``) from ``start`` to steady state or the horizon.

        Returns:
            The final state, its largest per-sample residual ``RMS(ds/dt) / (atol + rtol *
            RMS(s))`` (<= 1 means converged) and the number of steps taken.
        """
        def f(s: CircuitState) -> CircuitState:
            return self.derivative(model, x, target, feedback, s)[0]

        state, dt = start, self.dt
        limit = max(1, math.ceil(self.horizon / dt - 1e-9))
        residual = float("inf")
        for step in range(1, limit + 1):
            k1 = f(state)
            if step % self.check_every == 0:
                residual = self.residual(state, k1)  # at the state before this step
                if residual <= 1.0:
                    return state, residual, step - 1
            if solver == "euler":
                state = state.combine(k1, dt)
            else:
                k2 = f(state.combine(k1, dt / 2))
                k3 = f(state.combine(k2, dt / 2))
                k4 = f(state.combine(k3, dt))
                slope = k1.combine(k2, 2.0).combine(k3, 2.0).combine(k4, 1.0)
                state = state.combine(slope, dt / 6)
        residual = self.residual(state, f(state))
        return state, residual, limit

    def residual(self, state: CircuitState, slope: CircuitState | list[Tensor]) -> float:
        """Largest per-sample ``RMS(slope) / (atol + rtol * RMS(state))``; ``slope`` may be
        given as a list of its parts that are not zero."""
        parts = state.tensors()
        size = sum(t[0].numel() for t in parts)

        def rms(tensors: list[Tensor]) -> Tensor:
            return (sum(t.flatten(1).square().sum(dim=1) for t in tensors) / size).sqrt()

        moving = slope.tensors() if isinstance(slope, CircuitState) else slope
        return float((rms(moving) / (self.atol + self.rtol * rms(parts))).max())

    # ----- learning -----
    def local_errors(self, model: DisinhibitoryMLP, state: CircuitState, open_inh: list[Tensor],
                     rates: list[Tensor] | None = None) -> list[Tensor]:
        """Per hidden layer ``(phi_I^-1(r_I) - phi_E(u_E)) phi_E'(u_E)`` at the closed loop
        (``rates``: the closed loop's ``phi_E(u_E)`` if already computed)."""
        phi = model.phi
        rates_e = [phi(u) for u in state.exc] if rates is None else rates
        if self.variant == "lin-thresh":
            rates = [phi(u).mean(dim=0) for u in open_inh]
            if self.avg_inh is None or [len(a) for a in self.avg_inh] != [len(r) for r in rates]:
                self.avg_inh = [torch.full_like(r, self.avg_inh_init) for r in rates]
            lam = self.avg_inh_lambda
            self.avg_inh = [(1 - lam) * a.to(r) + lam * r for a, r in zip(self.avg_inh, rates, strict=True)]
        errors = []
        for index, (u_e, u_i) in enumerate(zip(state.exc, state.inh, strict=True)):
            if self.variant == "exact":
                inverse = u_i
            else:
                y0 = self.avg_inh[index]  # type: ignore[index]
                at = phi.inverse(y0)
                slope = 1 / phi.deriv(at)
                inverse = (at - y0 * slope) + slope * phi(u_i)
            errors.append((inverse - rates_e[index]) * phi.deriv(u_e))
        return errors

    def updates(self, model: DisinhibitoryMLP, x: Tensor, y: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """The local update of every parameter for the batch ``(x, y)`` (a descent direction,
        as a gradient), and the open-loop loss."""
        with torch.no_grad():
            x = x.flatten(1)
            open_state = model.open_loop(x)
            target = self.targets(y, open_state.out.shape[-1])
            open_inh = open_state.inputs[1:]  # at the open loop u_I = phi_E(u_E), each layer's output
            feedback = self.feedback_weights(model, open_state.exc, open_inh, scratch=self.scratch)
            # the solvers build new tensors and never write into their start
            start = CircuitState(open_state.exc, open_inh, open_state.out, torch.zeros_like(open_state.out))
            state, residual, steps = self.closed_loop(model, x, target, feedback, start,
                                                      drives=open_state.drives)
            self.stats.solves += 1
            self.stats.steps += steps
            if residual > 1.0:
                self.stats.unconverged += 1
                self.stats.worst_residual = max(self.stats.worst_residual, residual)
            rates = [model.phi(u) for u in state.exc]
            errors = self.local_errors(model, state, open_inh, rates)
            grads: dict[str, Tensor] = {}
            batch = len(x)
            for index, (error, h) in enumerate(zip(errors, [x, *rates[:-1]], strict=True)):  # h: its input
                grads[f"hidden.{index}.weight"] = error.T @ h / batch
                grads[f"hidden.{index}.bias"] = error.mean(dim=0)
            h = rates[-1]
            grads["readout.weight"] = (model.readout(h) - state.out).T @ h / batch
            loss = self.loss(open_state.out, target)
        return grads, loss

    def batch_grads(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """For :func:`neuroplastic.loop.fit` (``batch_grads=``): writes the local updates
        into ``.grad``; returns the open-loop loss."""
        if not isinstance(model, DisinhibitoryMLP):
            raise NeuroplasticError("dis-inhibitory control trains a DisinhibitoryMLP (E/I pairs per "
                                    f"hidden unit), got {type(model).__name__}")
        grads, loss = self.updates(model, x, y)
        params = dict(model.named_parameters())
        for name, grad in grads.items():
            add_grad_(params[name], grad)
        return loss

    def backprop_gradients(self, model: DisinhibitoryMLP, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        """Backprop's gradient of the same loss for the same network (open loop)."""
        params = dict(model.named_parameters())
        with torch.enable_grad():
            out = model(x.flatten(1))
            loss = self.loss(out, self.targets(y, out.shape[-1]))
            grads = torch.autograd.grad(loss, list(params.values()))
        return dict(zip(params, grads, strict=True))

    def measure_alignment(self, model: DisinhibitoryMLP, x: Tensor,
                          y: Tensor) -> dict[str, tuple[float, float]]:
        """Per weight matrix: cosine and sign agreement of the local update with backprop's
        gradient on this batch (without changing the model or the solver statistics)."""
        stats, avg = self.stats, self.avg_inh
        self.stats = SolveStats()
        try:
            local, _ = self.updates(model, x, y)
        finally:
            self.stats, self.avg_inh = stats, avg
        reference = self.backprop_gradients(model, x, y)
        weights = {k: v for k, v in local.items() if k.endswith("weight")}
        return alignment(weights, reference)


@dataclass
class AlignmentLog:
    """A loop plugin: after every epoch, the alignment of dis-inhibitory control's update
    with backprop's gradient on a fixed batch."""

    rule: DisinhibitoryControl
    batch: tuple[Tensor, Tensor]
    history: list[dict[str, tuple[float, float]]] = field(default_factory=list)

    def after_epoch(self, model: nn.Module, epoch: int) -> None:
        x, y = self.batch
        self.history.append(self.rule.measure_alignment(model, x, y))  # type: ignore[arg-type]
