"""Sites, ActivationStats and keys on config-built Llama- and GPT-2-style models, against
unpadded one-prompt-at-a-time loops."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from neuroplastic.errors import NeuroplasticError
from neuroplastic.importance.activations import ActivationStats, last_token_keys
from neuroplastic.skills.lm import encoded_batches
from neuroplastic.skills.sites import key_site, mlp_sites
from neuroplastic.targets import Targets

PROMPTS = ["add 1+2=", "rev abcdef=", "sort zyx=", "copy hello=", "add 305+7=", "rev qq="]


def unpadded_inputs(model: nn.Module, tokenizer, texts: list[str], site: str) -> list[torch.Tensor]:
    """Oracle: the input of ``site`` for each text run alone, no padding: (tokens, neurons) each."""
    seen: list[torch.Tensor] = []
    module = dict(model.named_modules())[site]
    handle = module.register_forward_hook(lambda m, inputs, out: seen.append(inputs[0][0].detach()))
    try:
        with torch.no_grad():
            for text in texts:
                model(input_ids=torch.tensor([tokenizer(text)["input_ids"]]))
    finally:
        handle.remove()
    return seen


def test_sites_are_the_mlp_down_projections_of_every_block(lm):
    arch, model = lm
    expected = {
        "llama": ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"],
        "gpt2": ["transformer.h.0.mlp.c_proj", "transformer.h.1.mlp.c_proj"],
    }[arch]
    assert mlp_sites(model) == expected
    assert key_site(model) == expected[-1]


def test_targets_name_other_modules_and_a_model_without_mlp_is_refused(lm):
    _, model = lm
    named = mlp_sites(model, targets=Targets(include=("*.0.mlp",)))
    assert len(named) == 1 and named[0].endswith(".0.mlp")
    with pytest.raises(NeuroplasticError, match="no MLP down projection"):
        mlp_sites(nn.Sequential(nn.Linear(3, 3)))


def test_activation_stats_equal_an_unpadded_loop(lm, tokenizer):
    _, model = lm
    sites = mlp_sites(model)
    batches = encoded_batches(tokenizer, PROMPTS, batch_size=4)  # left padding inside batches
    stats = ActivationStats(sites=sites).estimate(model, batches)
    total_tokens = sum(len(tokenizer(p)["input_ids"]) for p in PROMPTS)
    assert stats.tokens == total_tokens
    for site in sites:
        tokens = torch.cat(unpadded_inputs(model, tokenizer, PROMPTS, site)).double()
        width = dict(model.named_modules())[site]
        neurons = width.in_features if isinstance(width, nn.Linear) else width.weight.shape[0]
        assert stats.mean[site].shape == (neurons,)
        torch.testing.assert_close(stats.mean[site].double(), tokens.mean(0), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(stats.var[site].double(), tokens.var(0, unbiased=False),
                                   rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(stats.std()[site] ** 2, stats.var[site].clamp_min(1e-12),
                                   rtol=1e-4, atol=1e-10)


def test_last_token_keys_equal_an_unpadded_loop(lm, tokenizer):
    _, model = lm
    site = key_site(model)
    keys = last_token_keys(model, encoded_batches(tokenizer, PROMPTS, batch_size=4), site=site)
    expected = torch.stack([t[-1] for t in unpadded_inputs(model, tokenizer, PROMPTS, site)])
    assert keys.shape == expected.shape
    torch.testing.assert_close(keys, expected.float(), rtol=1e-4, atol=1e-5)


def test_right_padding_gives_the_same_keys(tokenizer):
    from tests.skills.conftest import tiny_llama

    model = tiny_llama(tokenizer)
    site = key_site(model)
    left = last_token_keys(model, encoded_batches(tokenizer, PROMPTS, batch_size=6), site=site)
    tokenizer.padding_side = "right"
    encoded = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    right = last_token_keys(model, [dict(encoded)], site=site)
    torch.testing.assert_close(left, right, rtol=1e-4, atol=1e-5)


def test_activation_stats_refuse_empty_prompts(lm):
    _, model = lm
    with pytest.raises(NeuroplasticError, match="no tokens"):
        ActivationStats(sites=mlp_sites(model)).estimate(model, [])


def _stats_in_group(rank: int, store_file: str, out: str) -> None:
    from neuroplastic.distributed import rank_batches
    from neuroplastic.skills.demo import char_tokenizer
    from tests.skills.conftest import tiny_llama
    from tests.test_distributed import in_group

    def body() -> None:
        tokenizer = char_tokenizer()
        model = tiny_llama(tokenizer)
        found = {}
        for batch_size in (2, 6):  # 3 batches dealt 2 + 1; 1 batch: rank 1 has none
            batches = encoded_batches(tokenizer, PROMPTS, batch_size=batch_size)
            stats = ActivationStats(sites=mlp_sites(model)).estimate(model, rank_batches(batches))
            found[batch_size] = {"mean": stats.mean, "var": stats.var, "tokens": stats.tokens}
        if rank == 0:
            torch.save(found, out)

    in_group(rank, store_file, body)


def test_activation_stats_of_two_processes_dealt_batches_equal_one_process(tmp_path, tokenizer):
    import torch.multiprocessing as mp

    from tests.skills.conftest import tiny_llama

    out = str(tmp_path / "stats.pt")
    mp.spawn(_stats_in_group, args=(str(tmp_path / "store"), out), nprocs=2, join=True)
    found = torch.load(out, weights_only=True)
    model = tiny_llama(tokenizer)
    for batch_size, two in found.items():
        one = ActivationStats(sites=mlp_sites(model)).estimate(
            model, encoded_batches(tokenizer, PROMPTS, batch_size=batch_size))
        assert two["tokens"] == one.tokens == sum(len(tokenizer(p)["input_ids"]) for p in PROMPTS)
        for site in one.mean:
            torch.testing.assert_close(two["mean"][site], one.mean[site], rtol=1e-6, atol=1e-7)
            torch.testing.assert_close(two["var"][site], one.var[site], rtol=1e-6, atol=1e-7)
