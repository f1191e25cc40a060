"""GPM's and HLOP's input statistics and CLNP's unit activity in a process group: 2 processes,
each reading its part of every batch, learn the bases, units and weights one process learns
from whole batches (the sums behind them are all-reduced: GPM's Gram matrices and stacked
rows, each Oja iteration's update and the batch's input energy in HLOP, CLNP's activity)."""

from __future__ import annotations

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import TensorDataset

from neuroplastic.continual import CLNP, GPM, HLOP, ContinualRecipe, run_stream
from neuroplastic.data.streams import stream_from_datasets
from tests.test_distributed import in_group

# batch 13 over 40 samples: parts of 7/6 rows and a last batch of 1 that one rank has no part of
RECIPE = ContinualRecipe(epochs=2, batch_size=13, lr=0.05)


def _stream(setting: str):  # type: ignore[no-untyped-def]
    gen = torch.Generator().manual_seed(0)
    tasks = []
    for t in range(3):
        x = torch.randn(60, 1, 6, 6, generator=gen) + t
        y = (x.mean(dim=(1, 2, 3)) * 3 + torch.randn(60, generator=gen)).round().long() % 3
        tasks.append((TensorDataset(x[:40], y[:40]), TensorDataset(x[40:50], y[40:50]),
                      TensorDataset(x[50:], y[50:])))
    return stream_from_datasets(tasks, setting=setting, name="small-images")


def _model(name: str, outputs: int) -> nn.Module:
    torch.manual_seed(0)
    if name == "clnp":  # hidden ReLU units of Linear layers
        return nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Linear(16, outputs))
    # the convolution's 36 patches per sample take GPM's Gram-matrix path; the Linear layer's
    # 40 samples of 108 inputs keep their rows
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(108, 3))


def _method(name: str):  # type: ignore[no-untyped-def]
    # the convolution reads 25 samples: 20 of rank 0's part of the batch, 5 of rank 1's
    methods = {"gpm": GPM(threshold=0.9, max_samples=40, conv_samples=25), "hlop": HLOP(rows=2),
               "clnp": CLNP(l1=1e-3)}
    return methods[name]


def _run(name: str) -> dict:
    stream = _stream("task" if name == "clnp" else "domain")  # CLNP: one head per task
    model, method = _model(name, stream.num_outputs), _method(name)
    result = run_stream(model, stream, method, RECIPE)
    learned = method.active if name == "clnp" else method.bases
    return {"learned": {k: v.clone() for k, v in learned.items()}, "state": model.state_dict(),
            "acc": result.matrix.clone()}


def _activity() -> dict:
    class Task:  # 600 samples: 3 batches of CLNP's 256, dealt out to the ranks
        train = TensorDataset(torch.randn(600, 1, 6, 6, generator=torch.Generator().manual_seed(0)),
                              torch.zeros(600, dtype=torch.long))

    model = _model("clnp", 3)
    return CLNP()._activity(model, [("1", model[1])], Task())  # type: ignore[arg-type]


NAMES = ("gpm", "hlop", "clnp", "activity")


def _found(name: str) -> dict:
    return _activity() if name == "activity" else _run(name)


def _worker(rank: int, store_file: str, out: str) -> None:
    def body() -> None:
        found = {name: _found(name) for name in NAMES}  # one group for all: a spawn costs seconds
        if rank == 0:
            torch.save(found, out)

    in_group(rank, store_file, body)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> dict:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("two-processes")
    out = str(folder / "found.pt")
    mp.spawn(_worker, args=(str(folder / "store"), out), nprocs=2, join=True)
    return torch.load(out, weights_only=True)


@pytest.mark.parametrize("name", ["gpm", "hlop", "clnp"])
def test_two_processes_learn_the_bases_units_and_weights_of_one(two_processes, name):
    two, one = two_processes[name], _run(name)
    assert two["learned"].keys() == one["learned"].keys() == ({"1", "3"} if name == "clnp" else {"0", "3"})
    for layer, learned in one["learned"].items():
        assert two["learned"][layer].shape == learned.shape, layer
        if name == "clnp":  # the units kept active
            assert torch.equal(two["learned"][layer], learned)
            continue
        torch.testing.assert_close(two["learned"][layer] @ two["learned"][layer].t(), learned @ learned.t(),
                                   rtol=0, atol=1e-5)
    for key, value in one["state"].items():
        torch.testing.assert_close(two["state"][key], value, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(two["acc"], one["acc"], rtol=0, atol=1e-12)
    if name == "clnp":  # pruning chose: some hidden units kept, some freed
        assert 0 < int(one["learned"]["1"].sum()) < 16


def test_clnp_activity_read_in_parts_is_the_one_process_mean(two_processes):
    two, one = two_processes["activity"], _activity()
    assert float(one["1"].max()) > 0
    torch.testing.assert_close(two["1"], one["1"], rtol=1e-6, atol=0)
