"""Under torch.distributed, estimators sum over processes: two processes = one process."""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from neuroplastic.importance import Fisher
from tests.conftest import TinyNet, tiny_batches


def _worker(rank: int, store_file: str, mode: str, out: str) -> None:
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
    try:
        torch.manual_seed(0)
        model = TinyNet()
        batches = tiny_batches(n=40, batch=8)
        mine = batches[rank::2]  # each process sees half of the batches
        scores = Fisher(mode=mode).estimate(model, mine)
        if rank == 0:
            torch.save(scores, out)
        # Neither process may tear the group down while the other still uses it
        # (an early teardown aborted a CI run with "terminate called").
        dist.barrier()
    finally:
        dist.destroy_process_group()


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
