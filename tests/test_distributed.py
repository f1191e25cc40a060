"""Under torch.distributed, two processes = one process: estimators sum over processes, and
in-place sparse masks hold under DistributedDataParallel."""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from neuroplastic.importance import Fisher
from neuroplastic.sparse import SparseMasks
from tests.conftest import TinyNet, tiny_batches


def join_group(rank: int, store_file: str) -> None:
    # A file store needs no free port; loopback keeps gloo off whatever
    # interface the host name resolves to on a CI machine.
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store_file}",
        rank=rank,
        world_size=2,
        timeout=timedelta(seconds=120),
    )


def in_group(rank: int, store_file: str, body) -> None:  # type: ignore[no-untyped-def]
    """Run ``body()`` as rank ``rank`` of a 2-process gloo group, then leave it cleanly."""
    join_group(rank, store_file)
    try:
        body()
        # Neither process may tear the group down while the other still uses it
        # (an early teardown aborted a CI run with "terminate called").
        dist.barrier()
    finally:
        dist.destroy_process_group()
    exit_quietly()


def _worker(rank: int, store_file: str, mode: str, out: str) -> None:
    def body() -> None:
        torch.manual_seed(0)
        model = TinyNet()
        batches = tiny_batches(n=40, batch=8)
        mine = batches[rank::2]  # each process sees half of the batches
        scores = Fisher(mode=mode).estimate(model, mine)
        if rank == 0:
            torch.save(scores, out)

    in_group(rank, store_file, body)


def exit_quietly() -> None:
    """End a worker that succeeded without the interpreter's teardown: gloo's background
    threads can still be joinable when static destructors run, which aborts the process
    ("terminate called without an active exception", seen once in a fresh-clone run). A
    failing worker raises before this, so mp.spawn still reports its error."""
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def test_two_processes_give_the_single_process_scores(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    batches = tiny_batches(n=40, batch=8)
    for mode in ("batch_sq", "per_sample"):
        out = str(tmp_path / f"{mode}.pt")
        store_file = str(tmp_path / f"{mode}.store")
        mp.spawn(_worker, args=(store_file, mode, out), nprocs=2, join=True)
        shared = torch.load(out, weights_only=True)
        alone = Fisher(mode=mode).estimate(model, batches)
        for name in alone:
            torch.testing.assert_close(shared[name], alone[name], rtol=1e-5, atol=1e-10)


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3))


def _masks(model: nn.Module, flip: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    masks = {n: torch.rand(p.shape, generator=gen) > 0.6
             for n, p in model.named_parameters() if n.endswith("weight")}
    return {n: ~m for n, m in masks.items()} if flip else masks


def _sparse_train(model: nn.Module, steps: list, wrap=lambda m: m) -> nn.Module:
    """Adam on masked weights; the masks flip halfway (dropped weights have momentum)."""
    masks = SparseMasks()
    masks.prepare(model, _masks(model))
    net = wrap(model)
    optimizer = torch.optim.Adam(net.parameters(), lr=0.05)
    for i, (x, y) in enumerate(steps):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
        if i == len(steps) // 2:
            masks.update(_masks(model, flip=True))
    return masks.squash()


def _ddp_worker(rank: int, store_file: str, out: str) -> None:
    def body() -> None:
        steps = [(x[rank::2], y[rank::2]) for x, y in tiny_batches(n=96, batch=16)]
        model = _sparse_train(_mlp(), steps, wrap=DistributedDataParallel)
        if rank == 0:
            torch.save(model.state_dict(), out)

    in_group(rank, store_file, body)


def test_in_place_masks_under_ddp_match_one_process(tmp_path):
    out = str(tmp_path / "ddp.pt")
    mp.spawn(_ddp_worker, args=(str(tmp_path / "ddp.store"), out), nprocs=2, join=True)
    shared = torch.load(out, weights_only=True)
    # oracle: one process on both halves of every batch (DDP averages the two half-batch
    # gradients; equal halves make that the full batch's mean loss)
    alone = _sparse_train(_mlp(), [(torch.cat([x[0::2], x[1::2]]), torch.cat([y[0::2], y[1::2]]))
                                   for x, y in tiny_batches(n=96, batch=16)]).state_dict()
    final = _masks(_mlp(), flip=True)
    for name, value in alone.items():
        torch.testing.assert_close(shared[name], value, rtol=1e-4, atol=1e-6)
        if name in final:
            assert torch.all(shared[name][~final[name]] == 0), name


def test_the_scaling_benchmark_runs_and_two_processes_compute_what_one_does(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = tmp_path / "distributed.json"
    done = subprocess.run([sys.executable, str(root / "benchmarks" / "distributed.py"), "--quick",
                           "--json", str(out)], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    assert results["scores_max_relative_difference"] < 1e-5
    assert results["weights_max_relative_difference"] < 1e-5
    for row in results["examples_per_second"].values():
        assert all(value > 0 for value in row.values())


def _shadow_setup():
    from torch.utils.data import TensorDataset

    gen = torch.Generator().manual_seed(5)
    pool = TensorDataset(torch.randn(40, 16, generator=gen), torch.randint(0, 3, (40,), generator=gen))

    def build(index: int) -> nn.Module:
        torch.manual_seed(100 + index)
        return nn.Sequential(nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3))

    def train(model: nn.Module, dataset) -> None:
        from neuroplastic import loop

        x, y = dataset.tensors
        loop.fit(model, [(x, y)], optimizer=torch.optim.SGD(model.parameters(), lr=0.5), epochs=5)

    def unlearn(model: nn.Module, forget, retain, trained) -> None:
        with torch.no_grad():
            model[0].weight.mul_(0.9)

    return pool, build, train, unlearn


def _shadow_worker(rank: int, store_file: str, out: str) -> None:
    from neuroplastic.evaluate.ulira import train_shadows, unlearned_shadow_scores

    def body() -> None:
        pool, build, train, unlearn = _shadow_setup()
        candidates = torch.arange(0, 40, 4)
        shadows = train_shadows(pool, build, train, shadows=4, seed=0, candidates=candidates)
        scores = unlearned_shadow_scores(shadows, pool, candidates, unlearn)
        torch.save({"trained": [m is not None for m in shadows.models], "scores": scores}, f"{out}.{rank}")

    in_group(rank, store_file, body)


def test_ulira_shadows_are_dealt_out_and_scored_as_in_one_process(tmp_path):
    from neuroplastic.evaluate.ulira import train_shadows, unlearned_shadow_scores

    out = str(tmp_path / "shadows")
    mp.spawn(_shadow_worker, args=(str(tmp_path / "shadows.store"), out), nprocs=2, join=True)
    ranks = [torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1)]
    assert ranks[0]["trained"] == [True, False, True, False]
    assert ranks[1]["trained"] == [False, True, False, True]
    pool, build, train, unlearn = _shadow_setup()
    candidates = torch.arange(0, 40, 4)
    shadows = train_shadows(pool, build, train, shadows=4, seed=0, candidates=candidates)
    alone = unlearned_shadow_scores(shadows, pool, candidates, unlearn)
    for found in ranks:
        assert torch.equal(found["scores"], alone)
    assert not torch.equal(alone[0], alone[1])  # the shadows differ: rows are not interchangeable
