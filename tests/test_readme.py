"""Every Python block of README.md runs, with small stand-in models and data, so the README
cannot drift from the API. The blocks are read from the file, not copied here."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


class MyNet(nn.Module):
    """The README's user model: a small classifier of 8x8 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    """What the blocks assume the user has: a trained MyNet in net.pt, data sets and a
    loader, a local causal LM folder with JSONL prompt files."""
    from neuroplastic.data import digits, full_class, loader
    from neuroplastic.training import TrainConfig, fit

    root = tmp_path_factory.mktemp("readme")
    data = digits()
    torch.manual_seed(0)
    trained = MyNet()
    fit(trained, data.train, TrainConfig(epochs=5))
    torch.save(trained.state_dict(), root / "net.pt")
    scenario = full_class(data, 3)
    names = {"MyNet": MyNet, "forget_set": scenario.forget, "retain_set": scenario.retain,
             "train_set": data.train, "test_set": data.test,
             "loader": loader(data.train, batch_size=64, shuffle=True),
             "epochs": 2, "example_batch": data.val.tensors[0][:64]}
    try:
        from neuroplastic.skills.demo import DEMO_DIR
        from neuroplastic.skills.prompts import write_jsonl
        from neuroplastic.skills.tasks import examples

        shutil.copytree(DEMO_DIR, root / "my-llama")
        write_jsonl(root / "math.jsonl", examples("addition", 24, seed=1, part="held_out"))
        write_jsonl(root / "other.jsonl", examples("reversal", 24, seed=1, part="held_out")
                    + examples("sorting", 24, seed=1, part="held_out"))
    except ImportError:  # transformers missing: the skills block is skipped below
        pass
    return root, names


def test_readme_has_python_blocks():
    assert len(python_blocks()) >= 4


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index, stand_ins, monkeypatch):
    root, names = stand_ins
    block = python_blocks()[index]
    if "load_causal_lm" in block:
        pytest.importorskip("transformers")
    monkeypatch.chdir(root)
    namespace = dict(names)
    exec(compile(block, f"README.md python block {index}", "exec"), namespace)
    result = namespace.get("result")
    if isinstance(getattr(result, "metrics", None), dict) and "seconds" in result.metrics:
        assert result.metrics["seconds"] > 0
    if callable(getattr(result, "metrics", None)):  # robustness: accuracies in [0, 1]
        assert all(0 <= v <= 1 for v in result.metrics().values())
    if "build_model" in namespace:
        assert isinstance(namespace["build_model"](), nn.Module)
    if "sparse_model" in namespace:
        x = names["example_batch"]
        with torch.no_grad():
            torch.testing.assert_close(namespace["same"](x).contiguous(), namespace["sparse_model"](x),
                                       atol=1e-5, rtol=0)
