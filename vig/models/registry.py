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


def create_model(name: str, num_classes: int = 1000, drop_path_rate: float = 0.0, **overrides):
    """Build a registered variant. `overrides` change any ViGConfig field (channels, blocks, k,
    image_size, stem_stride, conv, ...), which is how the small test and demo models are made."""
    entry = model_entry(name)
    return entry["factory"](num_classes=num_classes, drop_path_rate=drop_path_rate, **overrides)
