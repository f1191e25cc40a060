"""Under torch.distributed, estimators sum over processes: two processes = one process."""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from neuroplastic.importance import Fisher
from tests.conftest import TinyNet, tiny_batches


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, port: int, mode: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        model = TinyNet()
        batches = tiny_batches(n=40, batch=8)
        mine = batches[rank::2]  # each process sees half of the batches
        scores = Fisher(mode=mode).estimate(model, mine)
        if rank == 0:
            torch.save(scores, out)
    finally:
        dist.destroy_process_group()


def test_two_processes_give_the_single_process_scores(tmp_path):
    torch.manual_seed(0)
    model = TinyNet()
    batches = tiny_batches(n=40, batch=8)
    for mode in ("batch_sq", "per_sample"):
        out = str(tmp_path / f"{mode}.pt")
        mp.spawn(_worker, args=(_free_port(), mode, out), nprocs=2, join=True)
        shared = torch.load(out, weights_only=True)
        alone = Fisher(mode=mode).estimate(model, batches)
        for name in alone:
            torch.testing.assert_close(shared[name], alone[name], rtol=1e-5, atol=1e-10)
