"""Registry of methods by name and kind (``forget``, ``sparse``, ...), in the style of timm."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from neuroplastic.errors import NeuroplasticError

T = TypeVar("T")


@dataclass(frozen=True)
class Entry:
    """One registered method: its metadata record (timm's model info is the model).

    Attributes:
        name, kind: what it is registered as (the name is written only here).
        cls: the class.
        summary: the first paragraph of its docstring.
        baseline: a reference a comparison trains beside the methods (retrain, backprop, ...).
        needs: what it needs beyond a model and its data, from ``retain``, ``full``,
            ``labels``, ``task_ids``, ``lr``, ``own_network``.
    """

    name: str
    kind: str
    cls: type
    summary: str
    baseline: bool = False
    needs: tuple[str, ...] = ()

    def defaults(self) -> dict[str, tuple[str, Any]]:
        """Every keyword hyperparameter: name -> (type as written, default), from the
        signature."""
        import inspect

        from neuroplastic.params import annotation_of, keyword_parameters

        return {key: (annotation_of(p), None if p.default is inspect.Parameter.empty else p.default)
                for key, p in keyword_parameters(self.cls).items()}

    def record(self) -> dict[str, Any]:
        """The entry as plain JSON-able values (``neuroplastic list --json``)."""
        return {"kind": self.kind, "name": self.name, "summary": self.summary, "baseline": self.baseline,
                "needs": list(self.needs),
                "defaults": {k: {"type": t, "default": d if isinstance(d, (bool, int, float, str, type(None)))
                                 else repr(d)} for k, (t, d) in self.defaults().items()}}


NEEDS = ("retain", "full", "labels", "task_ids", "lr", "own_network")

_ENTRIES: dict[tuple[str, str], Entry] = {}


def register(name: str, *, kind: str, baseline: bool = False,
             needs: tuple[str, ...] = ()) -> Callable[[type[T]], type[T]]:
    """Class decorator: register ``cls`` under ``name`` for ``kind``, and give the class its
    ``name`` (the one place it is written).

    The first paragraph of the class docstring becomes its one-line summary.
    """
    unknown = sorted(set(needs) - set(NEEDS))
    if unknown:
        raise NeuroplasticError(f"needs: unknown {unknown[0]!r}; choose from {', '.join(NEEDS)}")

    def decorate(cls: type[T]) -> type[T]:
        key = (kind, name)
        if key in _ENTRIES and _ENTRIES[key].cls is not cls:
            raise NeuroplasticError(f"{kind} method {name!r} is already registered")
        first_paragraph = (cls.__doc__ or "").strip().split("\n\n")[0]
        summary = " ".join(first_paragraph.split())
        cls.name = name  # type: ignore[attr-defined]
        _ENTRIES[key] = Entry(name=name, kind=kind, cls=cls, summary=summary,
                              baseline=baseline or bool(getattr(cls, "baseline", False)), needs=needs)
        return cls

    return decorate


BUILTIN_MODULES = (
    "neuroplastic.adapt.nhl", "neuroplastic.adapt.norm", "neuroplastic.adapt.rates",
    "neuroplastic.adapt.source",
    "neuroplastic.continual", "neuroplastic.forget", "neuroplastic.skills.key_space",
    "neuroplastic.skills.lm_baselines", "neuroplastic.skills.neuron_adjust",
    "neuroplastic.local.backprop", "neuroplastic.local.bidirectional",
    "neuroplastic.local.disinhibitory", "neuroplastic.local.softhebb", "neuroplastic.sparse",
)
"""The modules whose import registers the built-in methods (by name: the registry imports
no pillar, so every pillar can import the registry)."""

ENTRY_POINT_GROUP = "neuroplastic.methods"
"""Third-party packages register methods by naming a module (or object) in this entry-point
group; it is imported once, on the first registry lookup."""

_loaded: list[bool] = []


def _load_builtin() -> None:
    """Import the built-in method modules and the ``neuroplastic.methods`` entry points, once
    (lazily, so importing the registry has no side effects)."""
    if _loaded:
        return
    import importlib
    from importlib.metadata import entry_points

    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            entry.load()
        except Exception as err:  # a broken plug-in names itself, it does not break the library
            raise NeuroplasticError(f"the {ENTRY_POINT_GROUP} entry point {entry.name!r} "
                                    f"({entry.value}) failed to load: {err}") from None
    _loaded.append(True)


def kinds() -> list[str]:
    """Every kind with a registered method."""
    _load_builtin()
    return sorted({kind for kind, _ in _ENTRIES})


def one_line(entry: Entry, width: int = 90) -> str:
    """``entry``'s summary cut to ``width`` characters at a word boundary."""
    text = entry.summary.replace("``", "")
    if len(text) <= width:
        return text
    return text[: width - 1].rsplit(" ", 1)[0].rstrip(",;:(") + "…"


def available(kind: str | None = None) -> list[Entry]:
    """All registered methods (of one kind, if given), sorted by kind then name.

    Raises:
        NeuroplasticError: naming the kinds, if ``kind`` is not one of them.
    """
    _load_builtin()
    if kind is not None and kind not in {k for k, _ in _ENTRIES}:
        raise NeuroplasticError(f"unknown kind {kind!r}; kinds: {', '.join(kinds())}")
    return sorted(
        (e for e in _ENTRIES.values() if kind is None or e.kind == kind),
        key=lambda e: (e.kind, e.name),
    )


def get(name: str, *, kind: str) -> type:
    """The class registered as ``name`` for ``kind``.

    Raises:
        NeuroplasticError: naming the registered choices if ``name`` is unknown.
    """
    return entry(name, kind=kind).cls


def entry(name: str, *, kind: str) -> Entry:
    """The record of ``name`` for ``kind`` (class, summary, baseline flag, needs).

    Raises:
        NeuroplasticError: naming the registered choices if ``name`` is unknown.
    """
    _load_builtin()
    try:
        return _ENTRIES[(kind, name)]
    except KeyError:
        choices = ", ".join(e.name for e in available(kind))
        raise NeuroplasticError(
            f"unknown {kind} method {name!r}; registered: {choices}"
        ) from None


def create(name: str, *, kind: str, **kwargs: Any) -> Any:
    """Instantiate the method registered as ``name`` with keyword hyperparameters.

    Raises:
        NeuroplasticError: naming an unknown hyperparameter and the ones the method takes.
    """
    import inspect

    cls = get(name, kind=kind)
    params = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            takes = ", ".join(n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)
            raise NeuroplasticError(f"{kind} method {name!r} has no hyperparameter {unknown[0]!r} "
                                    f"(it takes: {takes or 'none'})")
    return cls(**kwargs)


def parse_params(name: str, *, kind: str, items: list[str], extra: Callable[..., Any] | None = None,
                 exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """``--param key=value`` texts for the method registered as ``name``, typed by its
    signature (and by ``extra``'s, less ``exclude``, for options its runner takes).

    Raises:
        NeuroplasticError: a malformed or repeated pair, an unknown key (naming the allowed
            keys, their types and defaults) or a value of the wrong type.
    """
    from neuroplastic.params import keyword_parameters, split_items, typed_params

    raw = split_items(items)
    cls = get(name, kind=kind)
    for key in exclude:
        if key in raw:
            raise NeuroplasticError(f"--param {key} is not a hyperparameter of {name}: "
                                    "use the command's own option")
    options = {} if extra is None else \
        {k: p for k, p in keyword_parameters(extra).items() if k not in exclude}
    return typed_params(cls, raw, what=f"{kind} method {name!r}", extra=options)
