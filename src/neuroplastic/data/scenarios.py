"""Forgetting requests on a labelled data set: full class, random samples,
given indices, sub-class, and corrective (poisoned samples, partly identified)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import TensorDataset

from neuroplastic.data.splits import DataSplit, subset
from neuroplastic.errors import NeuroplasticError

SCENARIOS = ("class", "random", "indices", "subclass", "corrective")


@dataclass
class ForgetScenario:
    """One forgetting request and the data needed to evaluate it honestly.

    Attributes:
        name: one of :data:`SCENARIOS`.
        description: one line for reports.
        data: the split the model is trained on (relabelled for ``subclass``,
            poisoned for ``corrective``).
        forget_idx / retain_idx: rows of ``data.train``.
        test_retain_idx: rows of ``data.test`` that measure retained performance.
        test_forget_idx: rows of ``data.test`` like the forgotten data (a
            forgotten class or sub-class), or ``None``.
        attack_test: triggered test inputs labelled with the attack target
            (``corrective`` only): accuracy on it is the attack success rate.
        target_forget_acc: the forget-set accuracy a model never trained on the
            forget set would reach, where the request itself implies it
            (``corrective``: the identified labels are known wrong, so 0);
            otherwise ``None``, and methods decide.
        poisoned_idx: every poisoned training row (``corrective`` only; for
            evaluation, not given to methods).
    """

    name: str
    description: str
    data: DataSplit
    forget_idx: Tensor
    retain_idx: Tensor
    test_retain_idx: Tensor
    test_forget_idx: Tensor | None = None
    attack_test: TensorDataset | None = None
    target_forget_acc: float | None = None
    poisoned_idx: Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.forget_idx) == 0:
            raise NeuroplasticError(f"{self.description}: the forget set is empty")
        if len(self.retain_idx) == 0:
            raise NeuroplasticError(f"{self.description}: nothing is left to retain (the retain set "
                                    "is empty)")

    @property
    def retain_classes(self) -> int:
        """How many classes the retain set holds (one class: retraining learns a constant)."""
        return int(torch.unique(self.data.train.tensors[1][self.retain_idx]).numel())

    @property
    def forget(self) -> TensorDataset:
        return subset(self.data.train, self.forget_idx)

    @property
    def retain(self) -> TensorDataset:
        return subset(self.data.train, self.retain_idx)

    @property
    def test_retain(self) -> TensorDataset:
        return subset(self.data.test, self.test_retain_idx)

    @property
    def test_forget(self) -> TensorDataset | None:
        if self.test_forget_idx is None or len(self.test_forget_idx) == 0:
            return None
        return subset(self.data.test, self.test_forget_idx)


def _labels(dataset: TensorDataset) -> Tensor:
    return dataset.tensors[1]


def _complement(n: int, idx: Tensor) -> Tensor:
    keep = torch.ones(n, dtype=torch.bool)
    keep[idx] = False
    return keep.nonzero().flatten()


def full_class(data: DataSplit, cls: int) -> ForgetScenario:
    """Forget every training sample of class ``cls``."""
    labels = _labels(data.train)
    if cls not in set(labels.tolist()):
        present = sorted(set(labels.tolist()))
        raise NeuroplasticError(f"forget class {cls} is not among the labels {present}")
    test_labels = _labels(data.test)
    return ForgetScenario(
        name="class",
        description=f"forget class {data.class_names[cls] if cls < len(data.class_names) else cls}",
        data=data,
        forget_idx=(labels == cls).nonzero().flatten(),
        retain_idx=(labels != cls).nonzero().flatten(),
        test_retain_idx=(test_labels != cls).nonzero().flatten(),
        test_forget_idx=(test_labels == cls).nonzero().flatten(),
    )


def given_indices(data: DataSplit, indices: list[int] | Tensor) -> ForgetScenario:
    """Forget the training rows ``indices``."""
    n = len(data.train)
    idx = torch.as_tensor(indices, dtype=torch.long).flatten()
    if idx.numel() == 0:
        raise NeuroplasticError("the forget set is empty: no indices given")
    if (idx < 0).any() or (idx >= n).any():
        bad = int(idx[(idx < 0) | (idx >= n)][0])
        raise NeuroplasticError(f"forget index {bad} is out of range for {n} training samples")
    idx = torch.unique(idx)
    if idx.numel() == n:
        raise NeuroplasticError("the forget set is the whole training set; nothing would remain")
    return ForgetScenario(
        name="indices",
        description=f"forget {idx.numel()} given training samples",
        data=data,
        forget_idx=idx,
        retain_idx=_complement(n, idx),
        test_retain_idx=torch.arange(len(data.test)),
    )


def random_samples(data: DataSplit, *, fraction: float = 0.1, seed: int = 0) -> ForgetScenario:
    """Forget a uniformly random ``fraction`` of the training samples."""
    if not 0 < fraction < 1:
        raise NeuroplasticError(f"random forget fraction must be in (0, 1), got {fraction}")
    n = len(data.train)
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=gen)[: max(1, round(fraction * n))].sort().values
    scenario = given_indices(data, idx)
    scenario.name = "random"
    scenario.description = f"forget a random {fraction:.0%} of the training samples"
    return scenario


def sub_class(data: DataSplit, fine: int, *, coarse_of: dict[int, int],
              coarse_names: list[str]) -> ForgetScenario:
    """Train on coarse labels, forget every sample of one fine label inside its coarse class.

    Args:
        data: split with fine labels.
        fine: the fine label to forget.
        coarse_of: fine label -> coarse label, for every fine label.
        coarse_names: names of the coarse classes.
    """
    fine_train, fine_test = _labels(data.train), _labels(data.test)
    if fine not in set(fine_train.tolist()):
        raise NeuroplasticError(f"forget sub-class {fine} is not among the fine labels")
    missing = set(fine_train.tolist()) - set(coarse_of)
    if missing:
        raise NeuroplasticError(f"no coarse label given for fine label {min(missing)}")

    def relabel(ds: TensorDataset) -> TensorDataset:
        coarse = torch.tensor([coarse_of[int(v)] for v in ds.tensors[1]], dtype=torch.long)
        return TensorDataset(ds.tensors[0], coarse)

    coarse_data = DataSplit(
        name=f"{data.name}-coarse", train=relabel(data.train), val=relabel(data.val),
        test=relabel(data.test), num_classes=len(coarse_names), class_names=list(coarse_names),
    )
    return ForgetScenario(
        name="subclass",
        description=f"forget sub-class {fine} of coarse class {coarse_names[coarse_of[fine]]}",
        data=coarse_data,
        forget_idx=(fine_train == fine).nonzero().flatten(),
        retain_idx=(fine_train != fine).nonzero().flatten(),
        test_retain_idx=(fine_test != fine).nonzero().flatten(),
        test_forget_idx=(fine_test == fine).nonzero().flatten(),
    )


def add_trigger(x: Tensor, *, patch: int = 2, value: float | None = None) -> Tensor:
    """Copy of ``x`` with a ``patch`` x ``patch`` square at the bottom-right corner set to
    ``value`` (default: the maximum input value); flat inputs get their last patch**2 features."""
    x = x.clone()
    fill = float(x.max()) if value is None else value
    if x.dim() >= 3:
        x[..., -patch:, -patch:] = fill
    else:
        x[..., -patch * patch:] = fill
    return x


def corrective(data: DataSplit, *, target: int = 0, poison_fraction: float = 0.1,
               identified_fraction: float = 0.5, seed: int = 0) -> ForgetScenario:
    """Backdoor poisoning with partial identification (Goel et al. 2024, corrective unlearning).

    A random ``poison_fraction`` of the training samples whose label is not
    ``target`` get a trigger patch and the label ``target``; only
    ``identified_fraction`` of them are given as the forget set, the rest stay
    hidden in the retain set.
    """
    if not 0 < poison_fraction < 1 or not 0 < identified_fraction <= 1:
        raise NeuroplasticError("poison and identified fractions must be in (0, 1]")
    x, y = data.train.tensors
    if target not in set(y.tolist()):
        raise NeuroplasticError(f"attack target {target} is not among the labels")
    gen = torch.Generator().manual_seed(seed)
    candidates = (y != target).nonzero().flatten()
    n_poison = max(1, round(poison_fraction * len(y)))
    poisoned = candidates[torch.randperm(len(candidates), generator=gen)[:n_poison]]
    x_p, y_p = x.clone(), y.clone()
    x_p[poisoned] = add_trigger(x[poisoned], value=float(x.max()))
    y_p[poisoned] = target
    n_known = max(1, round(identified_fraction * n_poison))
    known = poisoned[torch.randperm(n_poison, generator=gen)[:n_known]].sort().values
    x_test, y_test = data.test.tensors
    victims = (y_test != target).nonzero().flatten()
    attack = TensorDataset(add_trigger(x_test[victims], value=float(x.max())),
                           torch.full((len(victims),), target, dtype=torch.long))
    poisoned_data = DataSplit(
        name=f"{data.name}-poisoned", train=TensorDataset(x_p, y_p), val=data.val, test=data.test,
        num_classes=data.num_classes, class_names=data.class_names,
    )
    return ForgetScenario(
        name="corrective",
        description=(f"backdoor: {n_poison} poisoned samples (trigger -> {target}), "
                     f"{n_known} identified"),
        data=poisoned_data,
        forget_idx=known,
        retain_idx=_complement(len(y), known),
        test_retain_idx=torch.arange(len(y_test)),
        attack_test=attack,
        target_forget_acc=0.0,
        poisoned_idx=poisoned.sort().values,
    )
