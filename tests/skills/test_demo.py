"""The shipped demo model: small, skilled (checked by a slow one-prompt greedy loop), and the
default method's published claim on it; make-demo is reproducible."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from neuroplastic.cli import main
from neuroplastic.skills.demo import DEMO_DIR, DemoRecipe, load_demo, make_demo
from neuroplastic.skills.tasks import SKILLS, examples


@pytest.fixture(scope="module")
def demo():
    return load_demo()


def greedy_one(model, tokenizer, prompt: str, budget: int = 8) -> str:
    """Oracle decoding: one prompt, no padding, argmax token by token, no cache, no generate()."""
    ids = tokenizer(prompt)["input_ids"]
    out = []
    with torch.no_grad():
        for _ in range(budget):
            nxt = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt == tokenizer.eos_token_id:
                break
            out.append(nxt)
    return tokenizer.decode(out)


def test_the_demo_model_is_small_and_committed():
    size = (DEMO_DIR / "model.safetensors").stat().st_size
    parameters = sum(t.numel() for t in load_file(DEMO_DIR / "model.safetensors").values())
    assert size < 10 * 2**20 and parameters < 2_000_000
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "demo.json"):
        assert (DEMO_DIR / name).is_file(), name


@pytest.mark.parametrize("skill", list(SKILLS))
def test_each_demo_skill_reaches_95_percent_exact_match(demo, skill):
    model, tokenizer = demo
    held_out = examples(skill, 60, seed=123_456, part="held_out")  # never trained on
    hits = sum(greedy_one(model, tokenizer, e.prompt) == e.answer for e in held_out)
    assert hits / len(held_out) >= 0.95


def test_forgetting_addition_with_the_default_method_meets_the_claim(tmp_path, capsys):
    # No options: the shipped model, forget addition with calibrated KSD.
    assert main(["forget", "skill", "--out", str(tmp_path / "run"), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["method"] == "ksd-calibrated" and metrics["forget_skill"] == "addition"
    assert metrics["skills.addition.acc_before"] >= 0.95
    assert metrics["forget_ratio"] <= 0.15
    assert metrics["retain_ratio"] >= 0.97


def test_make_demo_is_reproducible(tmp_path):
    recipe = DemoRecipe(hidden_size=16, intermediate_size=32, layers=1, heads=2, steps=3, batch_size=8)
    make_demo(tmp_path / "a", recipe=recipe, eval_count=4)
    make_demo(tmp_path / "b", recipe=recipe, eval_count=4)
    first = load_file(tmp_path / "a" / "model.safetensors")
    second = load_file(tmp_path / "b" / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    initial = DemoRecipe(hidden_size=16, intermediate_size=32, layers=1, heads=2, steps=1, batch_size=8)
    make_demo(tmp_path / "c", recipe=initial, eval_count=4)
    third = load_file(tmp_path / "c" / "model.safetensors")
    assert not all(torch.equal(first[k], third[k]) for k in first)  # training did change the weights
