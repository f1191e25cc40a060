"""Neuron Adjust, the key-space detectors and guard, the weight-editing baselines: math against
hand computations, removal restores outputs bit for bit, failures leave the model untouched."""

from __future__ import annotations

import math

import pytest
import torch

from neuroplastic import registry
from neuroplastic.errors import NeuroplasticError
from neuroplastic.intervene.atomic import snapshot
from neuroplastic.skills.key_space import (
    CalibratedDetector,
    HypercubeDetector,
    KeyDetector,
    KeySpaceGuard,
    bisect_scale,
    prompt_keys,
)
from neuroplastic.skills.lm import encode_prompts
from neuroplastic.skills.neuron_adjust import NeuronAdjust, adjust, example_texts
from neuroplastic.skills.sites import key_site, mlp_sites
from neuroplastic.skills.tasks import examples
from tests.clean import assert_clean
from tests.skills.conftest import tiny_llama
from tests.skills.test_substrate import unpadded_inputs

FORGET = examples("addition", 12, seed=1)
RETAIN = examples("reversal", 6, seed=1) + examples("sorting", 6, seed=1)
SKILL_METHODS = [e.name for e in registry.available("skill")]


def normal_pdf(x: float, mean: float, std: float) -> float:
    return math.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


def test_adjust_follows_the_published_rule_by_hand():
    dist = dict(forget_mean=torch.tensor(1.2), forget_std=torch.tensor(0.5),
                retain_mean=torch.tensor(0.0), retain_std=torch.tensor(1.0))
    x = torch.tensor(1.0)
    p_r, p_f = normal_pdf(1.0, 0.0, 1.0), normal_pdf(1.0, 1.2, 0.5)
    take = p_f / (p_r + p_f)  # 0.7527
    mapped = 2 * 0.0 - ((1.0 - 1.2) / 0.5 * 1.0 + 0.0)  # 0.4
    assert float(adjust(x, uniform=torch.tensor(take - 0.01), **dist)) == pytest.approx(mapped)
    assert float(adjust(x, uniform=torch.tensor(take + 0.01), **dist)) == pytest.approx(1.0)
    # more likely under the retain distribution: never changed
    assert float(adjust(torch.tensor(-1.0), uniform=torch.tensor(0.0), **dist)) == -1.0


def test_na_selects_the_top_percent_by_mean_difference(tokenizer):
    model = tiny_llama(tokenizer)
    sites = mlp_sites(model)
    difference = {}
    for site in sites:  # oracle: unpadded loop over prompt+answer texts
        f = torch.cat(unpadded_inputs(model, tokenizer, example_texts(FORGET), site)).double().mean(0)
        r = torch.cat(unpadded_inputs(model, tokenizer, example_texts(RETAIN), site)).double().mean(0)
        difference[site] = f - r
    flat = torch.cat([difference[s] for s in sites])
    k = math.ceil(flat.numel() * 10 / 100)  # the reference keeps ceil(N * p) neurons
    threshold = flat.sort(descending=True).values[k - 1]
    with NeuronAdjust(percent=10).apply(model, tokenizer, FORGET, RETAIN) as intervention:
        chosen = intervention.details["neurons"]
        for site in sites:
            expected = (difference[site] >= threshold).nonzero().flatten().tolist()
            assert sorted(chosen[site]) == expected
        assert sum(len(v) for v in chosen.values()) == k


def logits(model, tokenizer, prompts):
    with torch.no_grad():
        return model(**encode_prompts(tokenizer, prompts)).logits


@pytest.mark.parametrize("method", SKILL_METHODS)
def test_removing_an_intervention_restores_outputs_bit_for_bit(method, lm, tokenizer):
    _, model = lm
    prompts = [e.prompt for e in FORGET[:4] + RETAIN[:4]]
    before, weights = logits(model, tokenizer, prompts), snapshot(model)
    options = {"ga": {"lr": 1e-2}}.get(method, {})
    intervention = registry.create(method, kind="skill", **options).apply(model, tokenizer, FORGET, RETAIN)
    during = logits(model, tokenizer, prompts)
    if method in ("na", "na-ksd", "ga"):
        assert not torch.equal(during, before), f"{method} changed nothing"
    intervention.remove()
    assert torch.equal(logits(model, tokenizer, prompts), before)
    assert all(torch.equal(weights[k], v) for k, v in snapshot(model).items())
    assert_clean(model)


def test_bisection_finds_the_smallest_containing_scale():
    keys = torch.randn(50, 8, generator=torch.Generator().manual_seed(0)) * torch.arange(1, 9)
    mean, std = keys.mean(0), keys.std(0)
    closed_form = float(((keys - mean).abs() / std).max())
    k = bisect_scale(keys, mean, std)
    assert closed_form <= k <= closed_form + 1e-5


def test_hypercube_flags_equal_a_coordinate_loop():
    gen = torch.Generator().manual_seed(1)
    forget = torch.randn(30, 5, generator=gen)
    detector = HypercubeDetector(h=1.2).fit(forget)
    queries = torch.randn(40, 5, generator=gen) * 1.5
    for query, flag in zip(queries, detector.flags(queries), strict=True):
        inside = all(
            abs(float(query[d] - forget[:, d].mean())) <= detector.k * 1.2 * float(forget[:, d].std())
            for d in range(5)
        )
        assert bool(flag) == inside
    assert bool(detector.flags(forget).all())  # h >= 1 keeps every fitted key inside


def test_calibrated_detector_survives_the_outlier_dimension_that_widens_the_cube():
    # Skill identity lives in dimension 0; dimension 1 has a few huge outliers among forget keys.
    gen = torch.Generator().manual_seed(2)

    def keys(n: int, centre: float) -> torch.Tensor:
        out = torch.randn(n, 6, generator=gen)
        out[:, 0] += centre
        return out

    forget, retain = keys(200, 4.0), keys(400, 0.0)
    forget[:3, 1] = 40.0
    calibrated = CalibratedDetector(false_abstain=0.01).fit(forget, retain)
    cube = HypercubeDetector(h=1.0).fit(forget)
    new_forget, new_retain = keys(500, 4.0), keys(2000, 0.0)
    assert calibrated.flags(new_forget).float().mean() >= 0.95
    assert calibrated.flags(new_retain).float().mean() <= 0.03
    # the published cube, widened by the outliers, abstains on far more retained prompts
    assert cube.flags(new_retain).float().mean() > 3 * calibrated.flags(new_retain).float().mean()


class FirstCoordinate(KeyDetector):
    """Abstain when the first key coordinate exceeds a threshold."""

    def __init__(self, threshold: float) -> None:
        self.threshold = threshold

    def score(self, keys):
        return keys[:, 0]

    def flags(self, keys):
        return keys[:, 0] > self.threshold


def test_guard_abstains_exactly_where_the_detector_flags_the_prompt_key(lm, tokenizer):
    _, model = lm
    site = key_site(model)
    chosen = FORGET[:6] + RETAIN[:6]
    first = prompt_keys(model, tokenizer, chosen, site=site)[:, 0].sort().values
    detector = FirstCoordinate(float(first[5] + first[6]) / 2)  # half of the prompts above
    guard = KeySpaceGuard(detector, site=site, every_step=False)
    inputs = encode_prompts(tokenizer, [e.prompt for e in chosen])
    options = dict(max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    sequences, abstained = guard.generate(model, **inputs, **options)
    expected = detector.flags(prompt_keys(model, tokenizer, chosen, site=site))
    assert torch.equal(abstained, expected) and int(abstained.sum()) == 6
    assert torch.equal(sequences, model.generate(**inputs, **options))  # the guard only reads
    assert_clean(model)
    # checking every step can only add abstentions
    _, every = KeySpaceGuard(detector, site=site, every_step=True).generate(model, **inputs, **options)
    assert bool((every | abstained).eq(every).all())


@pytest.mark.parametrize("percent", [0, -1, 100.5])
def test_percent_outside_range_is_refused(percent):
    with pytest.raises(NeuroplasticError, match="percent"):
        NeuronAdjust(percent=percent)


@pytest.mark.parametrize("method", SKILL_METHODS)
def test_an_empty_forget_set_is_refused_and_changes_nothing(method, tokenizer):
    model = tiny_llama(tokenizer)
    weights = snapshot(model)
    with pytest.raises(NeuroplasticError, match="forget set is empty"):
        registry.create(method, kind="skill").apply(model, tokenizer, [], RETAIN)
    assert all(torch.equal(weights[k], v) for k, v in snapshot(model).items())
    assert_clean(model)


def test_a_failure_after_hooks_were_installed_removes_them(tokenizer):
    model = tiny_llama(tokenizer)
    prompts = [e.prompt for e in FORGET[:3]]
    before = logits(model, tokenizer, prompts)
    # NA succeeds and installs hooks; the guard then needs >= 2 retain prompts and fails.
    with pytest.raises(NeuroplasticError, match="at least 2 retain prompts"):
        registry.create("na-ksd", kind="skill").apply(model, tokenizer, FORGET, RETAIN[:1])
    assert_clean(model)
    assert torch.equal(logits(model, tokenizer, prompts), before)


@pytest.mark.parametrize("method", ["na", "ksd-calibrated", "ssd"])
def test_methods_that_need_retain_examples_say_so(method, tokenizer):
    model = tiny_llama(tokenizer)
    with pytest.raises(NeuroplasticError, match="retain set is empty"):
        registry.create(method, kind="skill").apply(model, tokenizer, FORGET, [])


class FlagAll(KeyDetector):
    """Abstain on every key: shows which passes the guard checks."""

    def score(self, keys):
        return keys[:, 0]

    def flags(self, keys):
        return torch.ones(keys.shape[0], dtype=torch.bool, device=keys.device)


def test_every_step_guard_ignores_passes_after_a_sequence_ended(tokenizer):
    from transformers import LogitsProcessor, LogitsProcessorList

    eos = tokenizer.eos_token_id

    class EndFirstRowAtOnce(LogitsProcessor):
        def __call__(self, input_ids, scores):
            scores = scores.clone()
            scores[0, :] = -float("inf")
            scores[0, eos] = 0.0  # row 0 emits end-of-sequence as its first token
            scores[1, eos] = -float("inf")  # row 1 never ends
            return scores

    class FlagAfterPrompt(FlagAll):
        """Abstain on every key except the prompt's (the first pass)."""

        def __init__(self):
            self.calls = 0

        def flags(self, keys):
            self.calls += 1
            return torch.full((keys.shape[0],), self.calls > 1, dtype=torch.bool)

    model = tiny_llama(tokenizer)
    inputs = encode_prompts(tokenizer, ["add 1+2=", "rev abc="])
    options = dict(max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id,
                   eos_token_id=eos, logits_processor=LogitsProcessorList([EndFirstRowAtOnce()]))
    detector = FlagAfterPrompt()
    sequences, abstained = KeySpaceGuard(detector, site=key_site(model), every_step=True).generate(
        model, **inputs, **options)
    assert int(sequences[0, inputs["input_ids"].shape[1]]) == eos
    assert detector.calls == 4  # the batch kept running for row 1
    # row 0's later passes only read padding after its end: not checked; row 1's are
    assert abstained.tolist() == [False, True]


def test_report_key_scores_are_what_the_detector_sees_at_inference(tokenizer):
    from neuroplastic.skills.experiment import SkillRequest, run_skill_forget

    model = tiny_llama(tokenizer)
    evaluation = {"addition": examples("addition", 8, seed=2),
                  "reversal": examples("reversal", 8, seed=2)}
    request = SkillRequest(forget_skill="addition", forget=FORGET, retain=RETAIN,
                           evaluation=evaluation)
    runs = {name: run_skill_forget(model, tokenizer, request,
                                   registry.create(name, kind="skill", percent=50.0)
                                   if name == "na-ksd" else registry.create(name, kind="skill"),
                                   key_scores=True, overhead_prompts=2)
            for name in ("ksd-calibrated", "na-ksd")}
    for name, run in runs.items():
        detector, site = run.details["detector"], run.details["key_site"]
        clean = detector.score(prompt_keys(model, tokenizer, evaluation["addition"], site=site))
        reported = torch.tensor(run.details["key_scores"]["addition"], dtype=clean.dtype)
        if name == "ksd-calibrated":  # nothing else changes the keys: the same numbers
            torch.testing.assert_close(reported, clean)
        else:  # scored with Neuron Adjust still applied, as the guard sees them
            assert not torch.allclose(reported, clean)


@pytest.mark.parametrize(("total", "percent", "expected"),
                         [(1000, 0.5, 5), (1001, 0.5, 6), (384 * 4, 3, 47), (7, 10, 1), (10, 100, 10)])
def test_na_neuron_count_is_the_references_ceiling(total, percent, expected):
    from neuroplastic.skills.neuron_adjust import neurons_to_adjust

    assert neurons_to_adjust(total, percent) == expected == max(1, math.ceil(total * percent / 100))
