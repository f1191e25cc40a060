"""The continual verb: a method is a plugin of the training loop that also sees each task."""

from __future__ import annotations

from torch.utils.data import ConcatDataset, Dataset

from neuroplastic.data.streams import Experience, Stream
from neuroplastic.loop import Plugin


class ContinualMethod(Plugin):
    """Base class of continual-learning methods (kind ``continual``).

    It is a :class:`~neuroplastic.loop.Plugin`: the runner trains each task with
    :func:`neuroplastic.loop.fit` and passes the task's :class:`Experience` as the loop's
    ``task`` argument, so ``before_task(model, experience)`` and
    ``after_task(model, experience)`` see the task's data. Penalties go in ``loss``,
    gradient masks or projections in ``after_backward``, accumulators in ``after_step``.

    Attributes:
        needs_task_labels: the method needs task-incremental output units (e.g. CLNP's
            frozen units cannot share an output head); the runner refuses other settings.
    """

    name = "continual"
    needs_task_labels = False

    def training_data(self, stream: Stream, index: int) -> Dataset:
        """What to train on for task ``index`` (default: that task's training set)."""
        return stream[index].train

    def before_task(self, model, experience: Experience) -> None:  # type: ignore[override]
        """Called before training on ``experience``."""

    def after_task(self, model, experience: Experience) -> None:  # type: ignore[override]
        """Called after training on ``experience`` (consolidate here)."""

    def set_learning_rate(self, lr: float) -> None:
        """The runner tells the method its optimizer's learning rate before training (a
        proximal penalty step needs it); methods that do not need it ignore it."""

    def cleanup(self, model) -> None:  # type: ignore[no-untyped-def]
        """Remove anything attached to ``model`` (hooks); the runner calls it after the
        stream, also when training failed midway."""


def seen_so_far(stream: Stream, index: int) -> Dataset:
    """The training sets of tasks 0..index, concatenated (the joint upper bound's data)."""
    return ConcatDataset([stream[i].train for i in range(index + 1)])
