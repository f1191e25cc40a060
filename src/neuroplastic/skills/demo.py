"""The shipped demo: a tiny Llama-style decoder trained on four synthetic skills.

``make_demo`` regenerates it (``neuroplastic skills make-demo``): a
character-level tokenizer, a transformers ``LlamaConfig`` model under 2M
parameters, trained with AdamW on a seeded stream of examples of every
skill (loss on the answer tokens only). The trained checkpoint is committed
in ``neuroplastic/skills/demo_model`` so the demo and tests load it instantly.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from neuroplastic import loop
from neuroplastic.errors import NeuroplasticError
from neuroplastic.io import write_json
from neuroplastic.loop import ClipGradNorm, Plugin, ProgressFn
from neuroplastic.runs import check_new_folder, staged_folder, writes_files
from neuroplastic.skills.generation import answer
from neuroplastic.skills.lm import causal_lm_loss, load_causal_lm, require_transformers, training_batches
from neuroplastic.skills.tasks import SKILLS, VOCABULARY, examples

DEMO_DIR = Path(__file__).with_name("demo_model")
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")
EVAL_SEED = 10_000  # the seed of the evaluation prompts; training streams use seeds below it


@dataclass(frozen=True)
class DemoRecipe:
    """Model size and training recipe of the demo model."""

    hidden_size: int = 128
    intermediate_size: int = 384
    layers: int = 4
    heads: int = 4
    steps: int = 10000
    batch_size: int = 128
    # examples per batch in these proportions; addition (carries across digits) is the
    # slowest skill to learn, so it gets twice the share
    mix: tuple[tuple[str, int], ...] = (("addition", 2), ("reversal", 1), ("sorting", 1), ("copying", 1))
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup: int = 200
    seed: int = 0


def char_tokenizer() -> Any:
    """A character-level ``PreTrainedTokenizerFast`` over the skills' vocabulary."""
    require_transformers()
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate([*SPECIAL_TOKENS, *VOCABULARY])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>", padding_side="left")


def demo_config(recipe: DemoRecipe, tokenizer: Any) -> Any:
    """The ``LlamaConfig`` of the demo model."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size, num_hidden_layers=recipe.layers,
        num_attention_heads=recipe.heads, num_key_value_heads=recipe.heads,
        max_position_embeddings=64, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def skill_accuracy(model: Any, tokenizer: Any, *, count: int = 200) -> dict[str, float]:
    """Exact match of greedy answers on ``count`` held-out prompts of each skill (never trained on)."""
    held_out = {skill: examples(skill, count, seed=EVAL_SEED, part="held_out") for skill in SKILLS}
    return {skill: answer(model, tokenizer, items).exact_match(items) for skill, items in held_out.items()}


def _lr_at(step: int, recipe: DemoRecipe) -> float:
    if step < recipe.warmup:
        return recipe.lr * (step + 1) / recipe.warmup
    progress = (step - recipe.warmup) / max(recipe.steps - recipe.warmup, 1)
    return recipe.lr * 0.5 * (1 + math.cos(math.pi * progress))


class DemoStream:
    """``steps`` training batches of the skills mixed in ``per_skill`` proportions, drawn from
    ``rng`` as they are needed (one pass: a fresh stream per training run)."""

    def __init__(self, tokenizer: Any, per_skill: dict[str, int], *, steps: int, rng: random.Random,
                 device: str | torch.device) -> None:
        self.tokenizer, self.per_skill, self.steps, self.rng, self.device = (
            tokenizer, per_skill, steps, rng, device)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for _ in range(self.steps):
            batch = [e for skill, count in self.per_skill.items()
                     for e in examples(skill, count, seed=self.rng.randrange(EVAL_SEED), part="train")]
            self.rng.shuffle(batch)
            (ids, labels), = training_batches(self.tokenizer, batch, batch_size=len(batch),
                                              device=self.device)
            yield ids, labels


class CosineWarmup(Plugin):
    """The demo's learning rate: linear warm-up, then cosine decay to zero, set before every
    step (``before_task`` for the first, ``after_step`` for the next)."""

    def __init__(self, optimizer: torch.optim.Optimizer, recipe: DemoRecipe) -> None:
        self.optimizer, self.recipe = optimizer, recipe

    def _set(self, step: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = _lr_at(step, self.recipe)

    def before_task(self, model: nn.Module, task: int) -> None:
        self._set(0)

    def after_step(self, model: nn.Module, step: int) -> None:
        self._set(step)


def make_demo(out: str | os.PathLike[str], *, recipe: DemoRecipe | None = None,
              device: str | torch.device = "cpu", progress: ProgressFn | None = None,
              eval_count: int = 200, replace: bool = False) -> dict[str, float]:
    """Train the demo model and write it (config, safetensors, tokenizer, ``demo.json``) to ``out``.

    ``out`` must be absent or an empty folder (checked before training), unless
    ``replace`` is given: then an existing model folder there (e.g. the shipped
    ``DEMO_DIR``) is swapped for the new one once training and evaluation have
    succeeded. Nothing else is ever deleted.

    Args:
        eval_count: held-out prompts per skill for the accuracy written to ``demo.json``.
        replace: allow replacing an existing demo model folder at ``out``.

    Returns:
        Exact-match accuracy per skill on the held-out prompts.
    """
    from transformers import LlamaForCausalLM

    out = Path(out)
    if replace and out.is_dir() and any(out.iterdir()) and not (out / "demo.json").is_file():
        raise NeuroplasticError(f"{out} is not a demo model folder (no demo.json); refusing to replace it")
    if not (replace and out.is_dir()):
        check_new_folder(out)
    recipe = recipe or DemoRecipe()
    torch.manual_seed(recipe.seed)
    tokenizer = char_tokenizer()
    model = LlamaForCausalLM(demo_config(recipe, tokenizer)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    rng = random.Random(recipe.seed)
    weight = sum(w for _, w in recipe.mix)
    per_skill = {skill: max(1, round(recipe.batch_size * w / weight)) for skill, w in recipe.mix}
    stream = DemoStream(tokenizer, per_skill, steps=recipe.steps, rng=rng, device=device)
    start = time.perf_counter()
    loop.fit(model, stream, optimizer=optimizer, epochs=1, loss_fn=causal_lm_loss,
             plugins=[CosineWarmup(optimizer, recipe), ClipGradNorm(1.0)], progress=progress)
    model.eval()
    accuracy = skill_accuracy(model, tokenizer, count=eval_count)
    _write_folder(Path(out), model, tokenizer, {
        "recipe": asdict(recipe), "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": time.perf_counter() - start, "exact_match": accuracy,
    })
    return accuracy


def _write_folder(out: Path, model: Any, tokenizer: Any, info: dict[str, Any]) -> None:
    """Write the model into a staging folder beside ``out``, then rename it into place; an
    existing demo model at ``out`` (``replace=True``) is moved aside first and removed only
    after the new one is in place. Under torchrun rank 0 alone writes."""
    if not writes_files():
        return
    aside = None
    if out.is_dir() and any(out.iterdir()):
        aside = Path(tempfile.mkdtemp(prefix=f".{out.name}.previous-", dir=out.parent))
        os.replace(out, aside / out.name)
    try:
        with staged_folder(out) as staging:
            model.save_pretrained(staging, safe_serialization=True)
            tokenizer.save_pretrained(staging)
            write_json(staging / "demo.json", info)
    except BaseException:
        if aside is not None:
            os.replace(aside / out.name, out)
            aside.rmdir()
        raise
    if aside is not None:
        shutil.rmtree(aside)


def load_demo(*, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """The shipped demo model and tokenizer.

    Raises:
        NeuroplasticError: if the demo model was never built (run ``neuroplastic skills make-demo``).
    """
    if not (DEMO_DIR / "model.safetensors").is_file():
        raise NeuroplasticError("the demo model is missing; run `neuroplastic skills make-demo`")
    return load_causal_lm(DEMO_DIR, device=device)


def demo_info() -> dict[str, Any]:
    """``demo.json`` of the shipped model: recipe, size, training time, exact match per skill."""
    return json.loads((DEMO_DIR / "demo.json").read_text(encoding="utf-8"))
