"""Training engine: the seed's recipe (vig_reference.md B) on MindSpore, exactly resumable, data parallel.

Modules: schedule (per-step LR), optim (param groups, AdamW/Momentum), loss, step (AMP, loss scaling,
clipping, EMA, the compiled step), checkpoint (atomic per-epoch state, resume), evaluate, loop (the
Trainer), distributed (rank table, communication init, msrun/Ascend launchers), cli (shared CLI glue).
Importing this package does not import MindSpore.
"""
from .checkpoint import StateError, pick_resume_state, verify_state
from .distributed import LaunchError, Topology, launch_plan, read_topology, resolve_launcher
from .schedule import build_lr_schedule, lr_at, lr_scale

__all__ = [
    "LaunchError", "StateError", "Topology", "build_lr_schedule", "launch_plan", "lr_at", "lr_scale",
    "pick_resume_state", "read_topology", "resolve_launcher", "verify_state",
]
