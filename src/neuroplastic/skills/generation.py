"""Greedy answers to prompts, exact match, and perplexity on answers."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from neuroplastic.batches import model_device
from neuroplastic.skills.lm import IGNORE, causal_lm_loss, encode_prompts, training_batches
from neuroplastic.skills.prompts import Example

# ``generate(model, input_ids=..., attention_mask=..., **options)`` -> (sequences, abstained)
GenerateFn = Callable[..., tuple[Tensor, Tensor]]


def plain_generate(model: nn.Module, **inputs: Any) -> tuple[Tensor, Tensor]:
    """``model.generate`` with no guard: nothing abstains."""
    sequences = model.generate(**inputs)
    return sequences, torch.zeros(sequences.shape[0], dtype=torch.bool)


@dataclass
class Answers:
    """Generated answers (refusal text where the model abstained) and abstain flags."""

    texts: list[str] = field(default_factory=list)
    abstained: list[bool] = field(default_factory=list)

    def exact_match(self, examples: Sequence[Example]) -> float:
        """Fraction of answers equal to the expected one; an abstention counts as wrong."""
        hits = sum(not a and t.strip() == e.answer.strip()
                   for t, a, e in zip(self.texts, self.abstained, examples, strict=True))
        return hits / max(len(examples), 1)

    def abstain_rate(self) -> float:
        return sum(self.abstained) / max(len(self.abstained), 1)


def max_answer_tokens(tokenizer: Any, examples: Sequence[Example]) -> int:
    """Longest expected answer in tokens, plus one for end-of-sequence."""
    return max(len(tokenizer(e.answer, add_special_tokens=False)["input_ids"]) for e in examples) + 1


def greedy_options(tokenizer: Any, examples: Sequence[Example], *,
                   max_new_tokens: int | None = None) -> dict[str, Any]:
    """``generate`` options of greedy decoding, with room for the longest expected answer
    (or ``max_new_tokens``)."""
    return {"max_new_tokens": max_new_tokens or max_answer_tokens(tokenizer, examples),
            "do_sample": False, "pad_token_id": tokenizer.pad_token_id,
            "eos_token_id": tokenizer.eos_token_id}


@torch.no_grad()
def answer(model: nn.Module, tokenizer: Any, examples: Sequence[Example], *,
           generate: GenerateFn = plain_generate, batch_size: int = 128,
           max_new_tokens: int | None = None, refusal: str = "I can't help with that.") -> Answers:
    """Greedy-decode an answer to every prompt, in batches.

    Args:
        generate: the generation call; a :class:`~neuroplastic.skills.key_space.KeySpaceGuard`
            passes its guarded ``generate`` here.
        max_new_tokens: default: the longest expected answer plus one.
        refusal: the text reported for an abstained prompt.
    """
    device = model_device(model)
    options = greedy_options(tokenizer, examples, max_new_tokens=max_new_tokens)
    out = Answers()
    model.eval()
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        inputs = encode_prompts(tokenizer, [e.prompt for e in chunk], device=device)
        sequences, abstained = generate(model, **inputs, **options)
        new = sequences[:, inputs["input_ids"].shape[1]:]
        texts = tokenizer.batch_decode(new, skip_special_tokens=True)
        flags = [bool(f) for f in abstained.tolist()]
        out.texts += [refusal if f else t for t, f in zip(texts, flags, strict=True)]
        out.abstained += flags
    return out


@torch.no_grad()
def perplexity(model: nn.Module, tokenizer: Any, examples: Sequence[Example], *,
               batch_size: int = 128) -> float:
    """exp of the mean per-token cross-entropy of the expected answers given their prompts."""
    device = model_device(model)
    total, tokens = 0.0, 0
    model.eval()
    for ids, labels in training_batches(tokenizer, examples, batch_size=batch_size, device=device):
        count = int((labels[:, 1:] != IGNORE).sum())
        total += float(causal_lm_loss(model(ids), labels)) * count
        tokens += count
    return math.exp(total / max(tokens, 1))
