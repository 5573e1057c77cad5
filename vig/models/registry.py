"""Registry of named model variants: `create_model(name, ...)` and `list_models()`."""
from __future__ import annotations

from typing import Callable

_REGISTRY: dict[str, dict] = {}


def register_model(name: str, factory: Callable, config: dict | None = None, alias_of: str | None = None):
    if name in _REGISTRY:
        raise KeyError(f"model {name!r} is registered twice")
    _REGISTRY[name] = {"factory": factory, "config": dict(config or {}), "alias_of": alias_of}
    return factory


def list_models(include_aliases: bool = True) -> list[str]:
    return sorted(n for n, e in _REGISTRY.items() if include_aliases or e["alias_of"] is None)


def model_entry(name: str) -> dict:
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; valid names: {', '.join(list_models())}")
    return _REGISTRY[name]


def create_model(name: str, num_classes: int = 1000, drop_path_rate: float = 0.0, ops: str | None = None,
                 **overrides):
    """Build a registered variant. `overrides` change any ViGConfig field (channels, blocks, k,
    image_size, stem_stride, conv, ...), which is how the small test and demo models are made. `ops`
    is the vig.ops setting its layers are built with ("auto", "native"; None: the one in force)."""
    from ..ops import use

    entry = model_entry(name)
    with use(ops):
        return entry["factory"](num_classes=num_classes, drop_path_rate=drop_path_rate, **overrides)


# Graphs: which network a variant's config builds (`model_overrides: {graph: NAME}`); "original" is the
# original PyTorch code's, others register themselves (vig/models/seed_port.py).
_GRAPHS: dict[str, Callable] = {}


def register_graph(name: str, builder: Callable) -> Callable:
    if name in _GRAPHS:
        raise KeyError(f"graph {name!r} is registered twice")
    _GRAPHS[name] = builder
    return builder


def list_graphs() -> list[str]:
    return sorted(_GRAPHS)


def graph_builder(name: str) -> Callable:
    if name not in _GRAPHS:
        raise ValueError(f"graph={name!r}: expected one of {', '.join(list_graphs())}")
    return _GRAPHS[name]
