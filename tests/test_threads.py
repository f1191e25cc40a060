"""--threads on every command, and the automatic choice by model size."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuroplastic.cli import main
from neuroplastic.cli.threads import fit_threads, take_threads
from neuroplastic.errors import NeuroplasticError
from neuroplastic.threads import SMALL_MODEL, auto_threads


def test_auto_threads_is_one_below_the_measured_size_or_when_busy_and_every_core_above() -> None:
    assert auto_threads(SMALL_MODEL - 1, cores=8, busy=False) == 1
    assert auto_threads(SMALL_MODEL, cores=8, busy=False) == 8
    assert auto_threads(SMALL_MODEL, cores=8, busy=True) == 1


def test_threads_option_is_lifted_from_anywhere_and_checked() -> None:
    lifted = take_threads(["forget", "--threads", "3", "--forget-class", "1"])
    assert lifted == ["forget", "--forget-class", "1"]
    assert take_threads(["--threads=2", "continual"]) == ["continual"]
    for bad in (["--threads", "0"], ["--threads", "x"], ["learn", "--threads"]):
        with pytest.raises(NeuroplasticError, match="--threads"):
            take_threads(bad)


def test_a_given_count_wins_over_the_automatic_one(monkeypatch) -> None:
    before = torch.get_num_threads()
    try:
        take_threads(["--threads", "2"])
        from neuroplastic.cli.threads import start_threads

        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        start_threads()
        assert torch.get_num_threads() == 2
        assert fit_threads(nn.Linear(2, 2)) == 2  # not lowered for a small model
        take_threads([])
        assert fit_threads(nn.Linear(2, 2)) == 1  # automatic: small model, one thread
    finally:
        take_threads([])
        torch.set_num_threads(before)


@pytest.mark.parametrize("command", [["list"], ["forget"], ["sparse", "train"], ["continual"], ["learn"],
                                     ["adapt"], ["shift"], ["forget", "skill"], ["skills", "make-demo"]])
def test_every_command_accepts_threads(command, capsys) -> None:
    before = torch.get_num_threads()
    try:
        code = main([*command, "--threads", "1", "--help"])
    finally:
        torch.set_num_threads(before)
    assert code == 0
    assert "Usage" in capsys.readouterr().out


def test_a_set_omp_num_threads_is_the_users_but_not_the_one_we_wrote(monkeypatch) -> None:
    import neuroplastic.cli.threads as threads

    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("OMP_NUM_THREADS", "2")
        monkeypatch.delenv(threads._OURS, raising=False)
        take_threads([])
        threads.start_threads()
        assert threads._chosen == [2]  # the user's
        monkeypatch.setenv(threads._OURS, "2")  # as if this module had written it
        take_threads([])
        threads.start_threads()
        assert threads._chosen == []  # automatic again
    finally:
        take_threads([])
        torch.set_num_threads(before)
