"""Membership inference attacks used to judge unlearning."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from neuroplastic.evaluate.outputs import Outputs


def entropy_mia(retain: Outputs, test: Outputs, forget: Outputs) -> float:
    """Fraction of forget samples an entropy-based attacker calls "member".

    The attack of the SSD paper (Foster et al. 2024, after Chundawat et al.):
    the feature is the entropy of the softmax output; a logistic regression
    with balanced class weights is trained on retain-train samples (member,
    1) vs test samples (non-member, 0). The reference passes
    ``multi_class="multinomial"`` with C = 1; for two classes that equals a
    binary logistic regression with C = 2, used here (the option is gone
    from scikit-learn 1.7+). Lower after unlearning is better; a model
    retrained without the forget set is the target.
    """
    x = np.concatenate([retain.entropies().numpy(), test.entropies().numpy()])[:, None]
    y = np.concatenate([np.ones(len(retain.labels)), np.zeros(len(test.labels))])
    clf = LogisticRegression(class_weight="balanced", C=2.0, solver="lbfgs")
    clf.fit(x, y)
    return float(clf.predict(forget.entropies().numpy()[:, None]).mean())


#: Below this AUC on the original model an attack is taken to tell members from non-members
#: no better than a coin, and its figures on unlearned models say nothing.
INFORMATIVE_AUC = 0.6


def entropy_attack_auc(members: Outputs, nonmembers: Outputs, *, seed: int = 0) -> float:
    """The entropy attack's own power: the AUC of its logistic regression at telling
    ``members`` (e.g. retain-train samples of the original model) from ``nonmembers``
    (held-out samples), 2-fold cross-validated so no sample is scored by a fit that saw it."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x = np.concatenate([members.entropies().numpy(), nonmembers.entropies().numpy()])[:, None]
    y = np.concatenate([np.ones(len(members.labels)), np.zeros(len(nonmembers.labels))])
    if min(int(y.sum()), int((1 - y).sum())) < 2:
        return float("nan")
    clf = LogisticRegression(class_weight="balanced", C=2.0, solver="lbfgs")
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed)
    scores = cross_val_predict(clf, x, y, cv=folds, method="decision_function")
    return float(roc_auc_score(y, scores))


def best_threshold(member: Tensor, nonmember: Tensor) -> float:
    """Loss threshold t maximising balanced accuracy of the rule "loss <= t is a member"."""
    values = np.concatenate([member.numpy(), nonmember.numpy()])
    is_member = np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))])
    order = np.argsort(values, kind="stable")
    values, is_member = values[order], is_member[order]
    tpr = np.cumsum(is_member) / max(len(member), 1)
    fpr = np.cumsum(1 - is_member) / max(len(nonmember), 1)
    # a threshold may only sit after the last of a run of equal values
    last_of_run = np.append(values[1:] != values[:-1], True)
    score = np.where(last_of_run, (tpr + 1 - fpr) / 2, -1.0)
    best = int(np.argmax(score))
    if score[best] <= 0.5:  # no threshold beats calling nobody a member
        return float("-inf")
    return float(values[best])


def loss_threshold_mia(retain: Outputs, test: Outputs, forget: Outputs) -> float:
    """Fraction of forget samples whose loss is at or below the threshold that best
    separates retain-train from test losses (Yeom et al. 2018 style attack)."""
    threshold = best_threshold(retain.losses(), test.losses())
    return float((forget.losses() <= threshold).float().mean())
