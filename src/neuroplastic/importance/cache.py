"""Full-data importance computed once per (estimator, model, data) and reused.

Unlearning requests on the same trained model all need the importance over
the full training set; only the forget-set importance differs between
requests. Entries live in memory and on disk (safetensors), keyed by a hash
of the estimator settings, every tensor of the model's state and every
batch of the data (so a shuffled loader, whose batches differ per pass,
never hits: the batch-mean Fisher depends on the batching).
"""

from __future__ import annotations

import hashlib
import inspect
import os
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, SequentialSampler, TensorDataset
from torch.utils.data._utils.collate import default_collate

from neuroplastic.batches import ConcatData, iter_batches, model_device
from neuroplastic.distributed import any_process, rank_batches
from neuroplastic.errors import NeuroplasticError
from neuroplastic.importance.base import ImportanceEstimator
from neuroplastic.io import load_tensors, save_tensors
from neuroplastic.runs import writes_files
from neuroplastic.sharded import whole
from neuroplastic.types import Batch, Data, LossFn, Scores


def _update_with_tensor(digest: hashlib._Hash, tensor: Tensor) -> None:
    tensor = whole(tensor.detach()).cpu().contiguous()  # an FSDP2 slice: every rank hashes the whole
    digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
    digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 over the class name and every named tensor of ``model.state_dict()``."""
    digest = hashlib.sha256(type(model).__qualname__.encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        _update_with_tensor(digest, tensor)
    return digest.hexdigest()


def _tensor_batches(data: Data) -> Iterator[Batch]:
    """The batches of ``data``, read straight from the tensors for an unshuffled
    ``DataLoader`` over a ``TensorDataset`` (the same batches, without per-sample
    collation), else by iterating it."""
    if isinstance(data, ConcatData):
        for part in data.parts:
            yield from _tensor_batches(part)
        return
    if (isinstance(data, DataLoader) and isinstance(data.dataset, TensorDataset)
            and type(data.sampler) is SequentialSampler and data.batch_size is not None
            and data.collate_fn is default_collate and len(data.dataset.tensors) == 2):
        x, y = data.dataset.tensors
        step = data.batch_size
        stop = len(x) - len(x) % step if data.drop_last else len(x)
        for start in range(0, stop, step):
            yield x[start:start + step], y[start:start + step]
        return
    yield from iter_batches(data, device="cpu", name="fingerprinted")


def data_fingerprint(data: Data) -> str:
    """SHA-256 over every batch (inputs, labels and the batch boundaries) of ``data``."""
    digest = hashlib.sha256()
    for x, y in _tensor_batches(data):
        _update_with_tensor(digest, x)
        _update_with_tensor(digest, y)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """``$NEUROPLASTIC_CACHE_DIR`` or ``~/.cache/neuroplastic``."""
    root = os.environ.get("NEUROPLASTIC_CACHE_DIR") or Path.home() / ".cache" / "neuroplastic"
    return Path(root)


def loss_identity(loss_fn: LossFn) -> str:
    """A name that tells ``loss_fn`` apart from every other loss: a module-level function by
    its module and name, an ``nn.Module`` loss by its type, settings and buffers.

    Raises:
        NeuroplasticError: for a lambda, a closure, a bound method or another callable whose
            behaviour its name does not pin down (two lambdas share a name); pass
            ``cache_key=`` to name such a loss.
    """
    if isinstance(loss_fn, nn.Module):
        settings = sorted((k, repr(v)) for k, v in vars(loss_fn).items()
                          if not k.startswith("_") and isinstance(v, (int, float, str, bool, type(None))))
        tensors = [f"{n}:{hashlib.sha256(t.detach().cpu().numpy().tobytes()).hexdigest()[:16]}"
                   for n, t in loss_fn.state_dict().items()]
        return f"{type(loss_fn).__module__}.{type(loss_fn).__qualname__}{settings}{tensors}"
    qualname = getattr(loss_fn, "__qualname__", "")
    plain_function = (inspect.isfunction(loss_fn) or inspect.isbuiltin(loss_fn)) and \
        getattr(loss_fn, "__closure__", None) is None and "<" not in qualname
    if not plain_function:
        raise NeuroplasticError(
            f"the importance cache cannot identify the loss {qualname or type(loss_fn).__name__!r} "
            "(a lambda, closure or bound method); pass cache_key='...' naming it, or no cache")
    return f"{loss_fn.__module__}.{qualname}"


class ImportanceCache:
    """Memory + disk cache of importance scores.

    Args:
        directory: where safetensors entries are kept; ``None`` keeps
            entries in memory only.
        max_memory_entries: least-recently-used entries beyond this are
            dropped from memory (they stay on disk).
    """

    def __init__(self, *, directory: str | os.PathLike[str] | None = None,
                 max_memory_entries: int = 8) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.max_memory_entries = max_memory_entries
        self._memory: OrderedDict[str, Scores] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def key(self, estimator: ImportanceEstimator, model: nn.Module, data: Data,
            loss_fn: LossFn | None = None, *, cache_key: str | None = None) -> str:
        """Cache key of one (estimator, model, data, loss) combination; ``cache_key`` names a
        loss :func:`loss_identity` cannot tell apart from others."""
        loss_name = "default" if loss_fn is None else cache_key or loss_identity(loss_fn)
        parts = [estimator.cache_key, loss_name, model_fingerprint(model), data_fingerprint(data)]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]

    def get_or_compute(self, estimator: ImportanceEstimator, model: nn.Module, data: Data, *,
                       loss_fn: LossFn | None = None, cache_key: str | None = None) -> Scores:
        """Return cached scores, computing and storing them on a miss.

        The returned tensors are on the model's device; callers must not
        modify them in place.
        """
        key = self.key(estimator, model, data, loss_fn, cache_key=cache_key)
        scores = self._lookup(key)
        # under torchrun the ranks compute together (collectives): a miss anywhere is a miss
        # everywhere (another machine's rank may not see rank 0's file)
        if any_process(scores is None):
            self.misses += 1
            scores = estimator.estimate(model, rank_batches(data), loss_fn=loss_fn)
            self._store(key, scores)
        else:
            self.hits += 1
        device = model_device(model)
        return {name: value.to(device) for name, value in scores.items()}

    def _lookup(self, key: str) -> Scores | None:
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.directory is not None and (self.directory / f"{key}.safetensors").is_file():
            scores = load_tensors(self.directory / f"{key}.safetensors")
            self._remember(key, scores)
            return scores
        return None

    def _store(self, key: str, scores: Scores) -> None:
        self._remember(key, scores)
        if self.directory is not None:
            whole_scores = {name: whole(value) for name, value in scores.items()}  # every rank gathers
            if writes_files():  # under torchrun rank 0 writes it
                save_tensors(whole_scores, self.directory / f"{key}.safetensors")

    def _remember(self, key: str, scores: Scores) -> None:
        self._memory[key] = scores
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_memory_entries:
            self._memory.popitem(last=False)

    def clear_memory(self) -> None:
        """Forget the in-memory entries (disk entries stay)."""
        self._memory.clear()


_DEFAULT: ImportanceCache | None = None


def default_cache() -> ImportanceCache:
    """The process-wide cache, on disk under :func:`default_cache_dir` ``/importance``."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ImportanceCache(directory=default_cache_dir() / "importance")
    return _DEFAULT
