"""JSONL prompt files and local Hugging Face model directories, on files the tests write."""

from __future__ import annotations

import json

import pytest
import torch

from neuroplastic.errors import NeuroplasticError
from neuroplastic.skills.lm import encode_prompts, load_causal_lm
from neuroplastic.skills.prompts import Example, load_jsonl, write_jsonl
from tests.skills.conftest import tiny_gpt2, tiny_llama


def test_jsonl_round_trip_skips_blank_lines_and_extra_fields(tmp_path):
    path = tmp_path / "skill.jsonl"
    path.write_text('{"prompt": "add 1+1=", "answer": "2", "source": "x"}\n\n'
                    '{"prompt": "add 2+2=", "answer": "4"}\n', encoding="utf-8")
    assert load_jsonl(path) == [Example("add 1+1=", "2"), Example("add 2+2=", "4")]
    write_jsonl(tmp_path / "copy.jsonl", load_jsonl(path))
    assert load_jsonl(tmp_path / "copy.jsonl") == load_jsonl(path)


@pytest.mark.parametrize(("text", "message"), [
    ('{"prompt": "a"}\n', r"bad\.jsonl:1: missing string field 'answer'"),
    ('{"prompt": "a", "answer": "b"}\n{"answer": "b"}\n', r"bad\.jsonl:2: missing string field 'prompt'"),
    ('{"prompt": "a", "answer": 3}\n', "missing string field 'answer'"),
    ("not json\n", r"bad\.jsonl:1: not valid JSON"),
    ('["prompt", "answer"]\n', "expected an object"),
    ("\n\n", "holds no examples"),
])
def test_bad_jsonl_gets_one_line_naming_file_and_line(tmp_path, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(NeuroplasticError, match=message) as err:
        load_jsonl(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
def test_a_local_model_directory_loads_with_its_tokenizer(tmp_path, tokenizer, build):
    model = build(tokenizer)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = load_causal_lm(tmp_path)
    prompts = ["add 1+2=", "rev abc="]
    inputs = encode_prompts(loaded_tokenizer, prompts)
    assert torch.equal(inputs["input_ids"], encode_prompts(tokenizer, prompts)["input_ids"])
    with torch.no_grad():
        torch.testing.assert_close(loaded(**inputs).logits, model(**inputs).logits)


def test_a_directory_that_is_not_a_causal_lm_is_refused(tmp_path):
    transformers = pytest.importorskip("transformers")
    transformers.ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=8).save_pretrained(tmp_path)
    with pytest.raises(NeuroplasticError, match="does not hold a causal language model"):
        load_causal_lm(tmp_path)
    with pytest.raises(NeuroplasticError, match="not a Hugging Face model directory"):
        load_causal_lm(tmp_path / "missing")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(NeuroplasticError, match="does not hold a causal language model"):
        load_causal_lm(tmp_path)
