"""Hugging Face causal LMs: loading a local directory, encoding prompts, the token-level loss."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from neuroplastic.errors import NeuroplasticError, first_line
from neuroplastic.skills.prompts import Example

IGNORE = -100


def require_transformers() -> None:
    """One-line error if the optional ``transformers`` package is missing."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise NeuroplasticError(
            "skill unlearning needs Hugging Face transformers: pip install 'neuroplastic[hf]'"
        ) from None


def load_causal_lm(path: str | os.PathLike[str], *, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """Load ``AutoModelForCausalLM`` and ``AutoTokenizer`` from a local directory, offline.

    The tokenizer pads on the left (what batched generation needs) and uses
    the end-of-sequence token for padding when it has no pad token.

    Returns:
        ``(model, tokenizer)``, the model in eval mode on ``device``.

    Raises:
        NeuroplasticError: if the directory is missing, holds no model
            config, or its model is not a causal LM.
    """
    require_transformers()
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder = Path(path)
    if not (folder / "config.json").is_file():
        raise NeuroplasticError(f"{folder} is not a Hugging Face model directory (no config.json)")
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(folder, config=config, local_files_only=True)
    except (ValueError, KeyError, OSError) as err:
        raise NeuroplasticError(
            f"{folder} does not hold a causal language model: {first_line(err)}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (ValueError, OSError) as err:
        raise NeuroplasticError(f"{folder} has no usable tokenizer: {first_line(err)}") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def encode_prompts(tokenizer: Any, prompts: Sequence[str], *,
                   device: str | torch.device = "cpu") -> dict[str, Tensor]:
    """Left-padded ``input_ids`` and ``attention_mask`` of ``prompts``."""
    tokenizer.padding_side = "left"
    encoded = tokenizer(list(prompts), padding=True, return_tensors="pt")
    return {"input_ids": encoded["input_ids"].to(device),
            "attention_mask": encoded["attention_mask"].to(device)}


def answer_ids(tokenizer: Any, answer: str) -> list[int]:
    """Token ids of an answer followed by end-of-sequence."""
    return [*tokenizer(answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]


def training_batches(tokenizer: Any, examples: Sequence[Example], *, batch_size: int,
                     device: str | torch.device = "cpu", width: int | None = None,
                     ) -> list[tuple[Tensor, Tensor]]:
    """``(input_ids, labels)`` batches for teacher forcing on the answers only.

    Sequences are right-padded to ``width`` tokens (default: the longest of
    ``examples``; a causal model never attends forward, so the padding changes
    no supervised position); labels are ``-100`` on prompt and padding tokens.
    The pairs plug into every ``(x, y)`` API of the library with
    :func:`causal_lm_loss` as the loss.
    """
    rows = []
    for example in examples:
        prompt = tokenizer(example.prompt)["input_ids"]
        answer = answer_ids(tokenizer, example.answer)
        rows.append((prompt + answer, [IGNORE] * len(prompt) + answer))
    batches = []
    pad = tokenizer.pad_token_id
    width = width or max(len(ids) for ids, _ in rows)
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        ids = torch.tensor([r + [pad] * (width - len(r)) for r, _ in chunk], device=device)
        labels = torch.tensor([lab + [IGNORE] * (width - len(lab)) for _, lab in chunk], device=device)
        batches.append((ids, labels))
    return batches


def sequence_length(tokenizer: Any, example: Example) -> int:
    """Tokens of prompt, answer and end-of-sequence together."""
    return len(tokenizer(example.prompt)["input_ids"]) + len(answer_ids(tokenizer, example.answer))


def causal_lm_loss(output: Any, labels: Tensor) -> Tensor:
    """Mean next-token cross-entropy over the positions whose label is not ``-100``."""
    logits = output.logits if hasattr(output, "logits") else output
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    return nn.functional.cross_entropy(shifted, labels[:, 1:].reshape(-1), ignore_index=IGNORE)


def _answer_tokens(labels: Tensor) -> Tensor:
    """The positions :func:`causal_lm_loss` averages over."""
    return (labels[:, 1:] != IGNORE).sum()


causal_lm_loss.units = _answer_tokens  # type: ignore[attr-defined]  # read by loop.fit under torchrun


def encoded_batches(tokenizer: Any, texts: Sequence[str], *, batch_size: int = 64,
                    device: str | torch.device = "cpu") -> list[dict[str, Tensor]]:
    """:func:`encode_prompts` over ``texts`` in batches of ``batch_size``."""
    return [encode_prompts(tokenizer, texts[start:start + batch_size], device=device)
            for start in range(0, len(texts), batch_size)]
