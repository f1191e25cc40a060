"""Which parameters an operation touches: one explicit ``Targets`` object."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from torch import nn

from neuroplastic.errors import NeuroplasticError


@dataclass(frozen=True)
class Targets:
    """Selects parameters of a model by name pattern and owning module type.

    Defaults: every parameter that requires grad (weights, biases, norm
    affine parameters), which is what SSD's reference touches.

    Args:
        include: ``fnmatch`` patterns on the full parameter name; a parameter
            must match at least one. Default ``("*",)``.
        exclude: patterns that remove a parameter even if included.
        module_types: if given, the parameter's owning module must be an
            instance of one of these types.
        require_grad: skip parameters with ``requires_grad=False`` (frozen).
    """

    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()
    module_types: tuple[type[nn.Module], ...] | None = None
    require_grad: bool = True

    def named_parameters(self, model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """Return the ``(name, parameter)`` pairs of ``model`` this selects, in model order.

        Raises:
            NeuroplasticError: if nothing is selected.
        """
        modules = dict(model.named_modules())
        chosen = []
        for name, param in model.named_parameters():
            if self.require_grad and not param.requires_grad:
                continue
            if not any(fnmatch.fnmatchcase(name, pat) for pat in self.include):
                continue
            if any(fnmatch.fnmatchcase(name, pat) for pat in self.exclude):
                continue
            if self.module_types is not None:
                owner = modules[name.rpartition(".")[0]]
                if not isinstance(owner, self.module_types):
                    continue
            chosen.append((name, param))
        if not chosen:
            raise NeuroplasticError(
                f"no parameter of {type(model).__name__} matches {self!r}"
            )
        return chosen

    def named_modules(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """The ``(name, module)`` pairs whose module name matches (the root is never selected).

        The same include/exclude patterns and module types apply, to module
        names instead of parameter names.

        Raises:
            NeuroplasticError: if nothing is selected.
        """
        chosen = [
            (name, module) for name, module in model.named_modules()
            if name
            and any(fnmatch.fnmatchcase(name, pat) for pat in self.include)
            and not any(fnmatch.fnmatchcase(name, pat) for pat in self.exclude)
            and (self.module_types is None or isinstance(module, self.module_types))
        ]
        if not chosen:
            raise NeuroplasticError(f"no module of {type(model).__name__} matches {self!r}")
        return chosen
