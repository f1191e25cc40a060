"""Where skill methods read and edit a transformer: the input of each block's MLP down projection.

That input is the MLP's intermediate activation, one value per neuron:
``act(gate_proj(x)) * up_proj(x)`` in Llama/Mistral/Qwen/Gemma-style blocks
and ``act(c_fc(x))`` in GPT-2-style blocks (whose ``c_proj`` is a Conv1D).
"""

from __future__ import annotations

import fnmatch

from torch import nn

from neuroplastic.errors import NeuroplasticError
from neuroplastic.targets import Targets

# Module-name patterns of MLP down projections, by architecture family.
DOWN_PROJECTIONS: tuple[str, ...] = (
    "*.mlp.down_proj",        # Llama, Mistral, Qwen2, Gemma, Phi-3
    "*.mlp.c_proj",           # GPT-2, GPT-J style (Conv1D in GPT-2)
    "*.mlp.fc2",              # OPT-like / Phi
    "*.mlp.dense_4h_to_h",    # GPT-NeoX, Falcon
    "*.feed_forward.w2",      # Mixtral-style naming
)


def mlp_sites(model: nn.Module, *, targets: Targets | None = None) -> list[str]:
    """Module names whose *input* is an MLP intermediate activation, in block order.

    Args:
        model: any Hugging Face causal LM (or other module).
        targets: names other modules instead (``Targets(include=("*.my_mlp.out",))``);
            their input is read and edited the same way.

    Raises:
        NeuroplasticError: if no MLP down projection is found.
    """
    if targets is not None:
        return [name for name, _ in targets.named_modules(model)]
    found = [name for name, _ in model.named_modules()
             if any(fnmatch.fnmatchcase(name, pattern) for pattern in DOWN_PROJECTIONS)]
    if not found:
        raise NeuroplasticError(
            f"no MLP down projection found in {type(model).__name__} "
            f"(looked for {', '.join(p.removeprefix('*.') for p in DOWN_PROJECTIONS)}); "
            "name the modules with Targets(include=...)"
        )
    return found


def key_site(model: nn.Module, *, targets: Targets | None = None) -> str:
    """The last block's down projection: its input at the last token is KSD's key."""
    return mlp_sites(model, targets=targets)[-1]
