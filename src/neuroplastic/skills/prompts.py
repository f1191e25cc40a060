"""Prompt/answer examples and their JSONL files (one ``{"prompt": ..., "answer": ...}`` per line)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from neuroplastic.errors import NeuroplasticError
from neuroplastic.io import write_text


@dataclass(frozen=True)
class Example:
    """One request of a skill and its expected answer."""

    prompt: str
    answer: str


def load_jsonl(path: str | os.PathLike[str]) -> list[Example]:
    """Read prompt/answer examples from a JSONL file.

    Blank lines are skipped; any other field than ``prompt`` and ``answer``
    is ignored.

    Raises:
        NeuroplasticError: naming the file and line, if the file is missing,
            a line is not a JSON object with string ``prompt`` and ``answer``,
            or the file holds no example.
    """
    path = Path(path)
    if not path.is_file():
        raise NeuroplasticError(f"no such JSONL file: {path}")
    found: list[Example] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise NeuroplasticError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(record, dict):
            raise NeuroplasticError(f"{path}:{number}: expected an object with prompt and answer")
        for key in ("prompt", "answer"):
            if not isinstance(record.get(key), str):
                raise NeuroplasticError(f"{path}:{number}: missing string field {key!r}")
        found.append(Example(prompt=record["prompt"], answer=record["answer"]))
    if not found:
        raise NeuroplasticError(f"{path} holds no examples")
    return found


def write_jsonl(path: str | os.PathLike[str], examples: Sequence[Example]) -> None:
    """Write ``examples`` as JSONL, atomically."""
    lines = (json.dumps({"prompt": e.prompt, "answer": e.answer}) for e in examples)
    write_text(path, "".join(line + "\n" for line in lines))


def require_examples(examples: Sequence[Example], what: str) -> None:
    """One-line error if ``examples`` is empty."""
    if len(examples) == 0:
        raise NeuroplasticError(f"the {what} set is empty")
