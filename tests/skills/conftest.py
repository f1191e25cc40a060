"""Config-built tiny Llama- and GPT-2-style models with the character tokenizer (no download)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from neuroplastic.skills.demo import char_tokenizer  # noqa: E402


def tiny_llama(tokenizer, *, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    return transformers.LlamaForCausalLM(config).eval()


def tiny_gpt2(tokenizer, *, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=4, n_positions=64,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    return transformers.GPT2LMHeadModel(config).eval()


@pytest.fixture
def tokenizer():
    return char_tokenizer()


@pytest.fixture(params=["llama", "gpt2"])
def lm(request, tokenizer):
    """(architecture, model) for both block styles."""
    build = tiny_llama if request.param == "llama" else tiny_gpt2
    return request.param, build(tokenizer)
