"""Key Space Detection (KSD) from "Effective Skill Unlearning through Intervention and Abstention"
(Li et al., NAACL 2025), a calibrated variant, and the ``KeySpaceGuard`` around ``generate``.

The key of a prompt is the input of the last block's MLP down projection at
its last token. A detector says, per key, whether the prompt asks for the
forgotten skill; the guard then abstains.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from neuroplastic.batches import model_device
from neuroplastic.errors import NeuroplasticError
from neuroplastic.importance.activations import last_token_keys
from neuroplastic.registry import register
from neuroplastic.skills.lm import encoded_batches
from neuroplastic.skills.neuron_adjust import NeuronAdjust
from neuroplastic.skills.prompts import Example, require_examples
from neuroplastic.skills.sites import key_site
from neuroplastic.skills.skill_base import Intervention, SkillUnlearner
from neuroplastic.targets import Targets


class KeyDetector(ABC):
    """Decides from last-token keys whether a prompt asks for the forgotten skill."""

    @abstractmethod
    def score(self, keys: Tensor) -> Tensor:
        """One number per key, for plots: how far it is from (or how close to) the skill."""

    @abstractmethod
    def flags(self, keys: Tensor) -> Tensor:
        """Bool per key: abstain."""


def bisect_scale(keys: Tensor, mean: Tensor, std: Tensor, *, low: float = 0.0, high: float = 1e4,
                 tol: float = 1e-5) -> float:
    """Smallest k (to ``tol``) with every key inside ``mean +- k * std``, by bisection as published.

    Raises:
        NeuroplasticError: if even ``high`` does not contain every key.
    """
    def contains(k: float) -> bool:
        return bool(((keys - mean).abs() <= k * std).all())

    if not contains(high):
        raise NeuroplasticError(f"no k <= {high} puts every forget key inside the hypercube")
    while high - low > tol:
        mid = (low + high) / 2
        low, high = (low, mid) if contains(mid) else (mid, high)
    return high


class HypercubeDetector(KeyDetector):
    """The published detector: abstain when every coordinate of the key lies in
    ``mean +- k * h * std`` of the forget-skill keys (sample std; k by :func:`bisect_scale`).

    Args:
        h: widening factor (the paper's scripts: 2 for GSM8K, 1.4 for MBPP).
    """

    def __init__(self, *, h: float = 1.4) -> None:
        if not h > 0:
            raise NeuroplasticError(f"h must be > 0, got {h}")
        self.h = h

    def fit(self, forget_keys: Tensor) -> HypercubeDetector:
        if forget_keys.shape[0] < 2:
            raise NeuroplasticError("the hypercube needs at least 2 forget prompts")
        self.mean, self.std = forget_keys.mean(0), forget_keys.std(0)
        self.k = bisect_scale(forget_keys, self.mean, self.std)
        return self

    def score(self, keys: Tensor) -> Tensor:
        """Largest per-coordinate distance in forget stds (abstain when <= k * h)."""
        deviation = (keys - self.mean.to(keys.device)).abs()
        return (deviation / self.std.to(keys.device).clamp_min(1e-12)).amax(-1)

    @property
    def decision(self) -> tuple[float, str]:
        """The score at which the detector abstains, and on which side (for plots)."""
        return self.k * self.h, "abstain at or below"

    def flags(self, keys: Tensor) -> Tensor:
        width = self.k * self.h * self.std.to(keys.device)
        return ((keys - self.mean.to(keys.device)).abs() <= width).all(-1)


class CalibratedDetector(KeyDetector):
    """A logistic probe on standardised keys, forget (1) against retain (0) prompts.

    The retain keys are split: a seeded ``holdout`` share is never fitted,
    and the abstain threshold is the ``1 - false_abstain`` quantile of the
    probe's scores on it, so about ``false_abstain`` of retained-skill
    prompts are refused.

    Args:
        false_abstain: target rate of abstention on retained skills.
        holdout: share of the retain keys kept for the threshold.
        seed: seed of the split.
    """

    def __init__(self, *, false_abstain: float = 0.01, holdout: float = 0.25, seed: int = 0) -> None:
        if not 0 < false_abstain < 1:
            raise NeuroplasticError(f"false_abstain must be in (0, 1), got {false_abstain}")
        if not 0 < holdout < 1:
            raise NeuroplasticError(f"holdout must be in (0, 1), got {holdout}")
        self.false_abstain, self.holdout, self.seed = false_abstain, holdout, seed

    def fit(self, forget_keys: Tensor, retain_keys: Tensor) -> CalibratedDetector:
        from sklearn.linear_model import LogisticRegression

        order = torch.randperm(retain_keys.shape[0], generator=torch.Generator().manual_seed(self.seed))
        cut = round(retain_keys.shape[0] * self.holdout)
        held, fitted = retain_keys[order[:cut]], retain_keys[order[cut:]]
        if cut < 1 or fitted.shape[0] < 1:
            raise NeuroplasticError("the calibrated detector needs at least 2 retain prompts")
        train = torch.cat([forget_keys, fitted])
        self.center, self.scale = train.mean(0), train.std(0).clamp_min(1e-6)
        labels = np.r_[np.ones(forget_keys.shape[0]), np.zeros(fitted.shape[0])]
        probe = LogisticRegression(max_iter=2000, class_weight="balanced")
        probe.fit(self._standardise(train).numpy(), labels)
        self.weight = torch.tensor(probe.coef_[0], dtype=torch.float32)
        self.bias = float(probe.intercept_[0])
        self.threshold = float(torch.quantile(self.score(held), 1 - self.false_abstain))
        return self

    def _standardise(self, keys: Tensor) -> Tensor:
        return (keys - self.center.to(keys.device)) / self.scale.to(keys.device)

    def score(self, keys: Tensor) -> Tensor:
        """The probe's logit: higher means more like the forget skill."""
        return self._standardise(keys.float()) @ self.weight.to(keys.device) + self.bias

    def flags(self, keys: Tensor) -> Tensor:
        return self.score(keys) > self.threshold

    @property
    def decision(self) -> tuple[float, str]:
        """The score at which the detector abstains, and on which side (for plots)."""
        return self.threshold, "abstain above"


class KeySpaceGuard:
    """Wraps ``model.generate``: reads the key at every forward pass and abstains when flagged.

    Args:
        detector: a fitted :class:`KeyDetector`.
        site: the module whose input is the key (the last down projection).
        every_step: check the key at every generated token, as the paper does,
            or only the prompt's (what a detector fitted on prompt keys was calibrated for).
    """

    def __init__(self, detector: KeyDetector, *, site: str, every_step: bool) -> None:
        self.detector, self.site, self.every_step = detector, site, every_step

    def generate(self, model: nn.Module, **inputs: Any) -> tuple[Tensor, Tensor]:
        """``model.generate(**inputs)`` plus a bool per sequence: abstained.

        With ``every_step``, a sequence's passes after its end-of-sequence token
        (batched generation keeps feeding padding) are not checked: the paper
        generates one prompt at a time, where they do not exist.
        """
        rows = inputs["input_ids"].shape[0]
        flags: list[Tensor] = []

        def hook(module: nn.Module, args: tuple[Any, ...]) -> None:
            if flags and not self.every_step:
                return
            keys = args[0][:, -1, :]
            if keys.shape[0] != rows:
                raise NeuroplasticError("KeySpaceGuard needs one generated sequence per prompt")
            flags.append(self.detector.flags(keys.float()).cpu())

        handle = model.get_submodule(self.site).register_forward_pre_hook(hook)
        try:
            sequences = model.generate(**inputs)
        finally:
            handle.remove()
        checked = torch.stack(flags)  # (passes, rows); pass j > 0 reads generated token j - 1
        if self.every_step:
            new = sequences[:, inputs["input_ids"].shape[1]:].cpu()
            eos = inputs.get("eos_token_id", getattr(model.generation_config, "eos_token_id", None))
            ended = torch.isin(new, torch.tensor(eos if eos is not None else [], dtype=new.dtype).flatten())
            # pass j > 0 counts while no end-of-sequence token is among generated tokens 0..j-1
            before_end = torch.cumsum(ended.long(), dim=1) == 0
            valid = torch.cat([torch.ones(rows, 1, dtype=torch.bool), before_end], dim=1)
            valid = valid[:, : checked.shape[0]].T
            checked = checked & valid
        return sequences, checked.any(0)


def prompt_keys(model: nn.Module, tokenizer: Any, examples: Sequence[Example], *, site: str,
                batch_size: int = 64) -> Tensor:
    """Keys of the prompts of ``examples`` (no answers) at ``site``."""
    batches = encoded_batches(tokenizer, [e.prompt for e in examples], batch_size=batch_size,
                              device=model_device(model))
    return last_token_keys(model, batches, site=site)


@register("ksd", kind="skill")
class KeySpaceDetection(SkillUnlearner):
    """Key Space Detection as published: abstain inside the forget keys' widened hypercube.

    Fits mean, sample std and k on the forget prompts' keys; at generation
    checks every forward pass (:class:`KeySpaceGuard` with ``every_step``).

    Args:
        h: widening factor of the hypercube.
        targets: names the key module instead of the last MLP down projection.
    """

    def __init__(self, *, h: float = 1.4, targets: Targets | None = None) -> None:
        HypercubeDetector(h=h)  # validates h before any work
        self.h, self.targets = h, targets

    def _apply(self, model: nn.Module, tokenizer: Any, forget: Sequence[Example],
               retain: Sequence[Example], intervention: Intervention) -> None:
        site = key_site(model, targets=self.targets)
        detector = HypercubeDetector(h=self.h).fit(prompt_keys(model, tokenizer, forget, site=site))
        intervention.generate = KeySpaceGuard(detector, site=site, every_step=True).generate
        intervention.metrics.update(h=detector.h, k=detector.k)
        intervention.details.update(detector=detector, key_site=site)


@register("ksd-calibrated", kind="skill", needs=('retain',))
class CalibratedKeySpaceDetection(SkillUnlearner):
    """Key-space abstention calibrated on retained skills (the default skill method).

    A logistic probe on prompt keys, forget against retain, with its
    threshold set on held-out retain keys for a target false-abstain rate
    (:class:`CalibratedDetector`); the guard checks the prompt's key.

    Args:
        false_abstain: target abstain rate on retained skills (default 1%).
        targets: names the key module instead of the last MLP down projection.
    """

    def __init__(self, *, false_abstain: float = 0.01, seed: int = 0,
                 targets: Targets | None = None) -> None:
        CalibratedDetector(false_abstain=false_abstain, seed=seed)  # validates before any work
        self.false_abstain, self.seed, self.targets = false_abstain, seed, targets

    def _apply(self, model: nn.Module, tokenizer: Any, forget: Sequence[Example],
               retain: Sequence[Example], intervention: Intervention) -> None:
        require_examples(retain, "retain")
        site = key_site(model, targets=self.targets)
        detector = CalibratedDetector(false_abstain=self.false_abstain, seed=self.seed).fit(
            prompt_keys(model, tokenizer, forget, site=site),
            prompt_keys(model, tokenizer, retain, site=site),
        )
        intervention.generate = KeySpaceGuard(detector, site=site, every_step=False).generate
        intervention.metrics.update(false_abstain=detector.false_abstain, threshold=detector.threshold)
        intervention.details.update(detector=detector, key_site=site)


@register("na-ksd", kind="skill", needs=('retain',))
class NeuronAdjustWithAbstention(SkillUnlearner):
    """Neuron Adjust, then the calibrated key-space guard fitted on the adjusted model.

    Args:
        percent: NA's share of neurons.
        false_abstain: the guard's target abstain rate on retained skills.
        seed: seed of NA's draws and of the guard's split.
    """

    def __init__(self, *, percent: float = 3.0, false_abstain: float = 0.01, seed: int = 0) -> None:
        self.adjust = NeuronAdjust(percent=percent, seed=seed)
        self.guard = CalibratedKeySpaceDetection(false_abstain=false_abstain, seed=seed)

    def _apply(self, model: nn.Module, tokenizer: Any, forget: Sequence[Example],
               retain: Sequence[Example], intervention: Intervention) -> None:
        self.adjust._apply(model, tokenizer, forget, retain, intervention)
        self.guard._apply(model, tokenizer, forget, retain, intervention)
