"""Synthetic skills of the demo model: addition, reversal, sorting and copying.

Each skill is a generator of ``Example(prompt, answer)`` pairs with a short
keyword prefix, e.g. ``"add 27+405="`` -> ``"432"``. The prompts are what a
user would type to ask for the skill; nothing here is shaped to make one
unlearning method look better than another.
"""

from __future__ import annotations

import random
import string
import zlib
from collections.abc import Callable

from neuroplastic.errors import NeuroplasticError
from neuroplastic.skills.prompts import Example

ALPHABET = string.ascii_lowercase
MAX_DIGITS = 3
MIN_LETTERS, MAX_LETTERS = 3, 6


def _letters(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(MIN_LETTERS, MAX_LETTERS)))


def _number(rng: random.Random) -> int:
    # 1, 2 or 3 digits with equal chance, so operands of unequal length are common
    digits = rng.randint(1, MAX_DIGITS)
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def addition(rng: random.Random) -> Example:
    """Two integers of 1-3 digits (each length equally likely); the answer is their decimal sum."""
    a, b = _number(rng), _number(rng)
    return Example(prompt=f"add {a}+{b}=", answer=str(a + b))


def reversal(rng: random.Random) -> Example:
    """3-6 lowercase letters, answered back to front."""
    word = _letters(rng)
    return Example(prompt=f"rev {word}=", answer=word[::-1])


def sorting(rng: random.Random) -> Example:
    """3-6 lowercase letters, answered in alphabetical order."""
    word = _letters(rng)
    return Example(prompt=f"sort {word}=", answer="".join(sorted(word)))


def copying(rng: random.Random) -> Example:
    """3-6 lowercase letters, answered unchanged."""
    word = _letters(rng)
    return Example(prompt=f"copy {word}=", answer=word)


SKILLS: dict[str, Callable[[random.Random], Example]] = {
    "addition": addition,
    "reversal": reversal,
    "sorting": sorting,
    "copying": copying,
}

VOCABULARY = string.digits + ALPHABET + " +="


PARTS = ("train", "held_out")


def part_of(prompt: str) -> str:
    """``held_out`` for a fixed tenth of all prompts (by a stable hash), else ``train``.

    The demo model is trained on the ``train`` part only, so its accuracy on
    ``held_out`` prompts measures the skill, not memorised examples.
    """
    return "held_out" if zlib.crc32(prompt.encode()) % 10 == 0 else "train"


def examples(skill: str, count: int, *, seed: int, part: str | None = None) -> list[Example]:
    """``count`` examples of ``skill`` drawn with a seeded generator.

    Args:
        part: ``train`` or ``held_out`` to draw only prompts of that part
            (see :func:`part_of`); ``None`` for any prompt.

    Raises:
        NeuroplasticError: if ``skill`` is not one of :data:`SKILLS` or ``part`` is unknown.
    """
    if skill not in SKILLS:
        raise NeuroplasticError(f"unknown skill {skill!r}; choose from {', '.join(SKILLS)}")
    if part is not None and part not in PARTS:
        raise NeuroplasticError(f"part must be one of {', '.join(PARTS)}, got {part!r}")
    # The seed is mixed with the skill name so that skills drawn with one seed differ.
    rng = random.Random(f"{skill}:{seed}")
    make = SKILLS[skill]
    drawn: list[Example] = []
    while len(drawn) < count:
        example = make(rng)
        if part is None or part_of(example.prompt) == part:
            drawn.append(example)
    return drawn
