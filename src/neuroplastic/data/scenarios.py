"""Forgetting requests on a labelled data set: full class, random samples,
given indices, sub-class, and corrective (poisoned samples, partly identified)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

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
    skipped_rows: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.forget_idx) == 0:
            raise NeuroplasticError(f"{self.description}: the forget set is empty")
        if len(self.retain_idx) == 0:
            raise NeuroplasticError(f"{self.description}: nothing is left to retain (the retain set "
                                    "is empty)")

    @property
    def forget_rows(self) -> list[int]:
        """File rows of the forget set (training positions where the data has no row map)."""
        rows = self.data.rows.get("train")
        return (rows[self.forget_idx] if rows is not None else self.forget_idx).tolist()

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


def given_rows(data: DataSplit, rows: list[int] | Tensor) -> ForgetScenario:
    """Forget the records in rows ``rows`` of the user's data file (0-based, in file order;
    for the built-in data sets, in their documented order).

    A requested row that the split put in the validation or test split was never trained
    on: it is left out and reported in ``skipped_rows`` (row -> split). Without a row map
    (a hand-made ``DataSplit``) rows are positions in the training split.

    Raises:
        NeuroplasticError: for an empty request, a row outside the file, or a request of
            which no row was trained on.
    """
    requested = torch.as_tensor(rows, dtype=torch.long).flatten()
    if requested.numel() == 0:
        raise NeuroplasticError("the forget set is empty: no rows given")
    requested = torch.unique(requested)  # sorted, duplicates once
    train_rows = data.rows.get("train", torch.arange(len(data.train)))
    known = torch.cat([r for r in data.rows.values()]) if data.rows else train_rows
    file_rows = int(known.max()) + 1 if len(known) else 0
    bad = requested[(requested < 0) | (requested >= file_rows)]
    if len(bad):
        raise NeuroplasticError(f"row {int(bad[0])} is not in the data (rows 0..{file_rows - 1})")
    position_of = {int(r): i for i, r in enumerate(train_rows.tolist())}
    forget, skipped = [], {}
    for row in requested.tolist():
        if row in position_of:
            forget.append(position_of[row])
        else:
            where = data.locate(row)
            skipped[row] = {"val": "validation", "test": "test"}.get(where[0], "?") if where else "?"
    if not forget:
        raise NeuroplasticError(f"none of the {len(requested)} requested rows was trained on (all are in "
                                "the validation or test split); nothing to forget")
    idx = torch.tensor(sorted(forget), dtype=torch.long)
    if idx.numel() == len(data.train):
        raise NeuroplasticError("the forget set is the whole training set; nothing would remain")
    return ForgetScenario(
        name="indices",
        description=f"forget {idx.numel()} given records",
        data=data,
        forget_idx=idx,
        retain_idx=_complement(len(data.train), idx),
        test_retain_idx=torch.arange(len(data.test)),
        skipped_rows=skipped,
    )


def request_loaders(dataset: Dataset, rows: list[int] | Tensor, *, batch_size: int = 64,
                    seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """A deletion request on any indexable data set: (forget loader over exactly ``rows``,
    in order; retain loader over every other row, shuffled with ``seed``), ready for
    ``Unlearner.unlearn(model, forget, retain)``.

    Raises:
        NeuroplasticError: for an empty request, a row outside ``dataset`` or a request
            that leaves nothing to retain.
    """
    n = len(dataset)  # type: ignore[arg-type]
    idx = torch.unique(torch.as_tensor(rows, dtype=torch.long).flatten())
    if idx.numel() == 0:
        raise NeuroplasticError("the forget set is empty: no rows given")
    bad = idx[(idx < 0) | (idx >= n)]
    if len(bad):
        raise NeuroplasticError(f"row {int(bad[0])} is not in the data set ({n} rows)")
    if idx.numel() == n:
        raise NeuroplasticError("the forget set is the whole data set; nothing would remain")
    forget = DataLoader(Subset(dataset, idx.tolist()), batch_size=batch_size)
    retain = DataLoader(Subset(dataset, _complement(n, idx).tolist()), batch_size=batch_size,
                        shuffle=True, generator=torch.Generator().manual_seed(seed))
    return forget, retain


def rows_of_ids(data: DataSplit, ids: list[str]) -> list[int]:
    """The file rows of the records named by ``ids`` (values of the data's id column).

    Raises:
        NeuroplasticError: if the data has no id column, an id is unknown, or an id names
            several rows.
    """
    if data.row_ids is None:
        raise NeuroplasticError("the data has no id column (CSV: --id-column NAME)")
    where: dict[str, list[int]] = {}
    for row, ident in enumerate(data.row_ids):
        where.setdefault(ident, []).append(row)
    rows = []
    for ident in ids:
        if ident not in where:
            raise NeuroplasticError(f"no record has id {ident!r}")
        if len(where[ident]) > 1:
            raise NeuroplasticError(f"id {ident!r} names rows {where[ident][:3]}; ids must be unique")
        rows.append(where[ident][0])
    return rows


def random_samples(data: DataSplit, *, fraction: float = 0.1, count: int | None = None,
                   seed: int = 0) -> ForgetScenario:
    """Forget a uniformly random ``fraction`` of the training samples (or exactly ``count``)."""
    n = len(data.train)
    if count is None:
        if not 0 < fraction < 1:
            raise NeuroplasticError(f"random forget fraction must be in (0, 1), got {fraction}")
        count = max(1, round(fraction * n))
        description = f"forget a random {fraction:.0%} of the training samples"
    else:
        if not 0 < count < n:
            raise NeuroplasticError(f"random forget count must be in 1..{n - 1}, got {count}")
        description = f"forget {count} random training samples"
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=gen)[:count].sort().values
    return ForgetScenario(name="random", description=description, data=data, forget_idx=idx,
                          retain_idx=_complement(n, idx), test_retain_idx=torch.arange(len(data.test)))


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

    coarse_data = data.same_rows(
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
    poisoned_data = data.same_rows(name=f"{data.name}-poisoned", train=TensorDataset(x_p, y_p))
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
