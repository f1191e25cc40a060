"""``loop.fit`` in a process group: 2 processes step exactly as 1 process on the same global
batches (uneven and tiny batches included), plugins see the plain module, a
DistributedDataParallel model is accepted, and a stop on one rank stops both."""

from __future__ import annotations

import torch
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from neuroplastic import distributed, loop
from tests.test_distributed import in_group


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(37, 6, generator=gen)
    y = torch.randint(0, 3, (37,), generator=gen)
    # 16 + 16 + 4 + 1: an uneven split and a batch smaller than the group
    return [(x[:16], y[:16]), (x[16:32], y[16:32]), (x[32:36], y[32:36]), (x[36:], y[36:])]


def _model(batch_norm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(6, 8), *([nn.BatchNorm1d(8)] if batch_norm else []), nn.Tanh(), nn.Linear(8, 3)]
    return nn.Sequential(*layers)


class Penalty(loop.Plugin):
    """An L2 penalty added once per step and a record of what the plugins were handed."""

    def __init__(self) -> None:
        self.seen: list[type] = []

    def loss(self, model, x, y, loss):
        self.seen.append(type(model))
        return loss + 0.01 * sum((p ** 2).sum() for p in model.parameters())


class StopOnRankOne(loop.Plugin):
    def should_stop(self, step: int) -> bool:
        return step == 2 and distributed.rank() == 1


def _mean_rule(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A local rule's pseudo-gradient: the batch mean of the inputs (NaN on zero rows)."""
    model[0].weight.grad = x.mean(dim=0).expand_as(model[0].weight).clone()
    return torch.zeros(())


def _token_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Rows of 4 labelled positions, most of them ignored (-100) in the later rows: a row
    share is not a token share."""
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(24, 6, generator=gen)
    y = torch.randint(0, 3, (24, 4), generator=gen)
    y[6:12, 1:] = -100
    y[18:, 2:] = -100
    return [(x[:12], y[:12]), (x[12:], y[12:])]


def _token_mean(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy averaged over the labelled positions, as a causal LM's loss."""
    return nn.functional.cross_entropy(output.reshape(-1, 3), labels.reshape(-1), ignore_index=-100)


def _token_mean_by_rows(output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return _token_mean(output, labels)


_token_mean.units = lambda labels: (labels != -100).sum()  # type: ignore[attr-defined]


def _train_tokens(loss_fn) -> tuple[dict[str, torch.Tensor], float, int, list[type]]:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 12))
    result = loop.fit(model, _token_batches(), optimizer=torch.optim.SGD(model.parameters(), lr=0.5),
                      epochs=3, loss_fn=loss_fn)
    return model.state_dict(), result.last_loss, result.steps, []


def _train(kind: str) -> tuple[dict[str, torch.Tensor], float, int, list[type]]:
    if kind == "tokens":  # and, as a control in the same group, weighted by rows
        state, last, steps, _ = _train_tokens(_token_mean)
        by_rows = _train_tokens(_token_mean_by_rows)[0]
        return {**state, **{f"by_rows.{k}": v for k, v in by_rows.items()}}, last, steps, []
    if kind == "rule":
        model = _model()
        optimizer = torch.optim.SGD([model[0].weight], lr=0.1)
        result = loop.fit(model, _batches(), optimizer=optimizer, epochs=1, batch_grads=_mean_rule)
        return model.state_dict(), result.last_loss, result.steps, []
    model = _model(batch_norm=kind == "bn")
    net = DistributedDataParallel(model) if kind == "ddp" else model
    penalty = Penalty()
    plugins: list = [penalty] + ([StopOnRankOne()] if kind == "stop" else [])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    # DDP needs >= 1 row per rank, BatchNorm >= 2 rows in training (in one process too)
    batches = _batches()[:3] if kind in ("ddp", "bn") else _batches()
    result = loop.fit(net, batches, optimizer=optimizer, epochs=2, plugins=plugins)
    return model.state_dict(), result.last_loss, result.steps, penalty.seen


def _worker(rank: int, store_file: str, kind: str, out: str) -> None:
    def body() -> None:
        state, last, steps, seen = _train(kind)
        torch.save({"state": state, "last": last, "steps": steps,
                    "plain": all(t is nn.Sequential for t in seen)}, f"{out}.{rank}")

    in_group(rank, store_file, body)


def _two_processes(tmp_path, kind: str) -> list[dict]:
    out = str(tmp_path / kind)
    mp.spawn(_worker, args=(str(tmp_path / f"{kind}.store"), kind, out), nprocs=2, join=True)
    return [torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1)]


def _one_process(kind: str) -> tuple[dict[str, torch.Tensor], float, int]:
    model = _model(batch_norm=kind == "bn")
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    batches = _batches()[:3] if kind in ("ddp", "bn") else _batches()
    plugins: list = [Penalty()] + ([loop.StopWhen(lambda step: step == 2)] if kind == "stop" else [])
    result = loop.fit(model, batches, optimizer=optimizer, epochs=2, plugins=plugins)
    return model.state_dict(), result.last_loss, result.steps


def _assert_close_to(state: dict[str, torch.Tensor], alone: dict[str, torch.Tensor]) -> None:
    for name, value in alone.items():
        torch.testing.assert_close(state[name], value, rtol=1e-5, atol=1e-6)


def test_two_processes_train_as_one(tmp_path):
    ranks = _two_processes(tmp_path, "plain")
    alone, last, steps = _one_process("plain")
    assert ranks[0]["steps"] == ranks[1]["steps"] == steps == 8
    for name, value in alone.items():
        torch.testing.assert_close(ranks[0]["state"][name], value, rtol=1e-5, atol=1e-6)
        assert torch.equal(ranks[0]["state"][name], ranks[1]["state"][name])  # identical ranks
    assert abs(ranks[0]["last"] - last) < 1e-5 and ranks[0]["last"] == ranks[1]["last"]
    assert ranks[0]["plain"] and ranks[1]["plain"]
    # the oracle is sensitive: training on one rank's half alone ends elsewhere
    half = _model()
    loop.fit(half, [(x[: len(x) // 2 + len(x) % 2], y[: len(y) // 2 + len(y) % 2]) for x, y in _batches()],
             optimizer=torch.optim.Adam(half.parameters(), lr=0.05), epochs=2, plugins=[Penalty()])
    assert not torch.allclose(half.state_dict()["0.weight"], alone["0.weight"], atol=1e-3)


def test_a_ddp_model_is_accepted_and_plugins_see_the_module_inside(tmp_path):
    ranks = _two_processes(tmp_path, "ddp")
    alone, _, steps = _one_process("ddp")
    assert ranks[0]["steps"] == steps == 6 and ranks[0]["plain"]
    _assert_close_to(ranks[0]["state"], alone)


def test_a_stop_on_one_rank_stops_every_rank(tmp_path):
    ranks = _two_processes(tmp_path, "stop")
    alone, _, steps = _one_process("stop")
    assert ranks[0]["steps"] == ranks[1]["steps"] == steps == 2
    _assert_close_to(ranks[0]["state"], alone)


def test_batch_norm_statistics_are_averaged_over_the_ranks(tmp_path):
    ranks = _two_processes(tmp_path, "bn")
    alone, _, _ = _one_process("bn")
    # per-rank batch statistics differ from the full batch's (as under DDP without
    # SyncBatchNorm): equal across ranks, close to but not equal to one process
    for name, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][name]), name
    torch.testing.assert_close(ranks[0]["state"]["1.running_mean"], alone["1.running_mean"], rtol=0, atol=0.2)


def test_a_local_rule_on_a_batch_smaller_than_the_group_counts_nothing_from_the_empty_part(tmp_path):
    ranks = _two_processes(tmp_path, "rule")
    alone = _model()
    loop.fit(alone, _batches(), optimizer=torch.optim.SGD([alone[0].weight], lr=0.1), epochs=1,
             batch_grads=_mean_rule)
    assert torch.isfinite(ranks[0]["state"]["0.weight"]).all()  # the 1-row batch left rank 1 empty
    _assert_close_to(ranks[0]["state"], alone.state_dict())


def test_a_loss_averaged_over_tokens_is_reduced_by_token_shares(tmp_path):
    """A loss function with ``units`` (as the causal LM loss has) weights each rank's part by
    its share of the labelled positions: the whole batch's token mean, as one process."""
    ranks = _two_processes(tmp_path, "tokens")
    alone, last, steps = _train_tokens(_token_mean)[:3]
    assert steps == ranks[0]["steps"] == 6
    _assert_close_to(ranks[0]["state"], alone)
    assert abs(ranks[0]["last"] - last) < 1e-5
    # the oracle is sensitive: weighting the parts by their rows instead ends elsewhere
    assert not torch.allclose(ranks[0]["state"]["by_rows.0.weight"], alone["0.weight"], atol=1e-3)
