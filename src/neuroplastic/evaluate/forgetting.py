"""Evaluate a model on a forgetting scenario: the metrics.json numbers of one model."""

from __future__ import annotations

from torch import nn

from neuroplastic.data.scenarios import ForgetScenario
from neuroplastic.data.splits import loader
from neuroplastic.errors import NeuroplasticError
from neuroplastic.evaluate.mia import entropy_attack_auc, entropy_mia, loss_threshold_mia
from neuroplastic.evaluate.outputs import collect

#: Metrics where lower is better for an unlearned model (the rest: higher, or closer to retrain).
METRICS = ("forget_acc", "retain_acc", "test_acc", "mia", "mia_loss")


NONMEMBERS = ("test-retain", "validation")


def evaluate_forgetting(model: nn.Module, scenario: ForgetScenario, *, batch_size: int = 256,
                        nonmembers: str = "test-retain",
                        attack_power: bool = False) -> dict[str, float | list[float]]:
    """Accuracy on the forget set, the retain set and the retained part of the test split;
    entropy and loss-threshold membership inference on the forget set; and, where the
    scenario has them, accuracy on test samples like the forgotten ones
    (``forget_test_acc``) and the backdoor attack success rate (``attack_success``).
    ``class_acc`` (a list, per test class) is for plots.

    Args:
        nonmembers: the attacks' non-member samples: ``"test-retain"`` (the test split
            without the forgotten class or sub-class; default) or ``"validation"`` (the
            whole validation split, as the SSD reference code does).
        attack_power: also give ``mia_auc``, the entropy attack's cross-validated AUC at
            telling retain-train from the non-members on this model (its power; asked
            of the original model).
    """
    if nonmembers not in NONMEMBERS:
        raise NeuroplasticError(f"nonmembers must be one of {', '.join(NONMEMBERS)}, got {nonmembers!r}")

    def run(dataset):  # type: ignore[no-untyped-def]
        return collect(model, loader(dataset, batch_size=batch_size))

    forget, retain, test = run(scenario.forget), run(scenario.retain), run(scenario.test_retain)
    outsiders = test if nonmembers == "test-retain" else run(scenario.data.val)
    metrics: dict[str, float | list[float]] = {
        "forget_acc": forget.accuracy,
        "retain_acc": retain.accuracy,
        "test_acc": test.accuracy,
        "mia": entropy_mia(retain, outsiders, forget),
        "mia_loss": loss_threshold_mia(retain, outsiders, forget),
    }
    if attack_power:
        metrics["mia_auc"] = entropy_attack_auc(retain, outsiders)
    if scenario.test_forget is not None:
        metrics["forget_test_acc"] = run(scenario.test_forget).accuracy
    if scenario.attack_test is not None:
        metrics["attack_success"] = run(scenario.attack_test).accuracy
    metrics["class_acc"] = run(scenario.data.test).per_class_accuracy(scenario.data.num_classes)
    return metrics


def gaps(unlearned: dict[str, float], retrain: dict[str, float]) -> dict[str, float]:
    """``unlearned - retrain`` for every numeric metric both have (0 is ideal)."""
    return {key: unlearned[key] - retrain[key] for key in unlearned
            if key in retrain and isinstance(unlearned[key], float)
            and isinstance(retrain[key], float)}
