"""Skills of language models: prompts, Hugging Face loading, generation, the shipped demo model."""

from neuroplastic.skills.prompts import Example, load_jsonl, write_jsonl

__all__ = ["Example", "load_jsonl", "write_jsonl"]
