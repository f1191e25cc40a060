"""The synthetic skills: answers checked by independent computation; train/held-out parts disjoint."""

from __future__ import annotations

import pytest

from neuroplastic.errors import NeuroplasticError
from neuroplastic.skills.tasks import SKILLS, examples, part_of


def expected_answer(prompt: str) -> str:
    keyword, _, body = prompt.partition(" ")
    body = body.removesuffix("=")
    if keyword == "add":
        left, right = body.split("+")
        return str(int(left) + int(right))
    return {"rev": body[::-1], "sort": "".join(sorted(body)), "copy": body}[keyword]


@pytest.mark.parametrize("skill", list(SKILLS))
def test_every_answer_is_right_and_seeded(skill):
    drawn = examples(skill, 300, seed=7)
    assert all(e.answer == expected_answer(e.prompt) for e in drawn)
    assert drawn == examples(skill, 300, seed=7)
    assert drawn != examples(skill, 300, seed=8)


def test_parts_are_disjoint_and_about_a_tenth_is_held_out():
    train = {e.prompt for s in SKILLS for e in examples(s, 500, seed=3, part="train")}
    held = {e.prompt for s in SKILLS for e in examples(s, 500, seed=3, part="held_out")}
    assert not train & held
    everything = [e.prompt for s in SKILLS for e in examples(s, 2000, seed=4)]
    share = sum(part_of(p) == "held_out" for p in everything) / len(everything)
    assert 0.08 < share < 0.12


def test_unknown_skill_or_part_is_refused():
    with pytest.raises(NeuroplasticError, match="unknown skill"):
        examples("juggling", 3, seed=0)
    with pytest.raises(NeuroplasticError, match="part must be"):
        examples("addition", 3, seed=0, part="test")
