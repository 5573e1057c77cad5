"""ViG model family: `create_model(name, num_classes=1000, drop_path_rate=0.0, **overrides)`."""
from .registry import create_model, list_graphs, list_models, model_entry
from . import vig as _vig  # noqa: F401  (registers the variants)
from . import seed_port as _seed_port  # noqa: F401  (registers the model zoo port's graph)
from .vig import ViG, ViGConfig
from .complexity import count_macs, count_parameters, model_complexity, trace_forward

__all__ = ["create_model", "list_graphs", "list_models", "model_entry", "ViG", "ViGConfig",
           "count_parameters", "count_macs", "model_complexity", "trace_forward"]
