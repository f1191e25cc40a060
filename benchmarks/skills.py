"""Skill-unlearning benchmark on the shipped demo model: each skill forgotten in turn x each method.

Writes benchmarks/results/skills.json and the README table between the
``skills-benchmark`` markers. Run: ``.venv/bin/python benchmarks/skills.py``.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time

import torch

from neuroplastic import registry
from neuroplastic.skills.demo import demo_info, load_demo
from neuroplastic.skills.evaluation import evaluate_skills, generation_overhead, retained_examples
from neuroplastic.skills.experiment import demo_request, run_skill_forget
from neuroplastic.skills.tasks import SKILLS
from readme_table import publish

# (label, registered name, hyperparameters); ksd is run at the paper's h values.
METHODS = (
    ("NA (p=3%)", "na", {}),
    ("KSD hypercube h=1", "ksd", {"h": 1.0}),
    ("KSD hypercube h=1.4", "ksd", {"h": 1.4}),
    ("KSD hypercube h=2", "ksd", {"h": 2.0}),
    ("calibrated KSD (default)", "ksd-calibrated", {}),
    ("NA + calibrated KSD", "na-ksd", {}),
    ("gradient ascent", "ga", {}),
    ("SSD (alpha=10, lambda=1)", "ssd", {}),
)


def guard_overhead(model, tokenizer, request, *, repeats: int) -> float:
    """Generation time with the calibrated guard / without, on all retained evaluation prompts."""
    intervention = registry.create("ksd-calibrated", kind="skill").apply(
        model, tokenizer, request.forget, request.retain)
    try:
        retained = retained_examples(request.evaluation, forget_skill=request.forget_skill)
        return generation_overhead(model, tokenizer, retained, generate=intervention.generate,
                                   repeats=repeats)
    finally:
        intervention.remove()


def table(results: dict) -> str:
    """Markdown: one row per method; forget / retain ratio per forgotten skill, then means."""
    header = ["method", *(f"forget {s}" for s in SKILLS), "mean forget ratio", "mean retain ratio",
              "overhead"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, _, _ in METHODS:
        runs = [results["runs"][skill][label] for skill in SKILLS]
        cells = [f"{r['forget_ratio']:.2f} / {r['retain_ratio']:.2f}" for r in runs]
        forget = statistics.mean(r["forget_ratio"] for r in runs)
        retain = statistics.mean(r["retain_ratio"] for r in runs)
        overhead = statistics.mean(r["overhead"] for r in runs)
        means = f" | {forget:.3f} | {retain:.3f} | {overhead:.2f}x |"
        lines.append(f"| {label} | " + " | ".join(cells) + means)
    info = results["demo_model"]
    lines.append("")
    lines.append(f"Cells: forget ratio / retain ratio (accuracy after / before) when that skill is "
                 f"forgotten; {results['eval_count']} held-out prompts per skill, "
                 f"{results['fit_count']} given to each method. Demo model: {info['parameters']:,} "
                 f"parameters, exact match before: "
                 + ", ".join(f"{s} {a:.3f}" for s, a in info["exact_match"].items())
                 + f". Guard overhead (calibrated KSD, all retained prompts, best of "
                 f"{results['overhead_repeats']}): {results['guard_overhead']:.3f}x. "
                 f"`overhead` = generation time with / without the intervention (weight edits ~1 by "
                 f"construction). {results['machine']}, {results['seconds']:.0f} s.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fit-count", type=int, default=200)
    parser.add_argument("--eval-count", type=int, default=200)
    parser.add_argument("--overhead-repeats", type=int, default=5)
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    torch.manual_seed(0)
    model, tokenizer = load_demo()
    runs: dict[str, dict[str, dict]] = {}
    overheads = []
    for skill in SKILLS:
        request = demo_request(skill, fit_count=args.fit_count, eval_count=args.eval_count)
        before = evaluate_skills(model, tokenizer, request.evaluation, forget_skill=skill)
        runs[skill] = {}
        for label, name, options in METHODS:
            run = run_skill_forget(model, tokenizer, request, registry.create(name, kind="skill", **options),
                                   before=before)
            runs[skill][label] = run.metrics
            print(f"{skill:9s} {label:26s} forget {run.metrics['forget_ratio']:.3f} "
                  f"retain {run.metrics['retain_ratio']:.3f} overhead {run.metrics['overhead']:.3f}",
                  flush=True)
        overheads.append(guard_overhead(model, tokenizer, request, repeats=args.overhead_repeats))
    results = {
        "runs": runs, "fit_count": args.fit_count, "eval_count": args.eval_count,
        "overhead_repeats": args.overhead_repeats,
        "guard_overhead": statistics.mean(overheads), "guard_overhead_per_skill": overheads,
        "demo_model": demo_info(), "machine": f"{platform.machine()}, {torch.get_num_threads()} threads",
        "seconds": time.perf_counter() - start,
    }
    publish("skills", table(results), results=results, readme=not args.no_readme)
    assert all(math.isfinite(v) for v in overheads)


if __name__ == "__main__":
    main()
