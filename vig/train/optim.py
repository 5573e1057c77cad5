"""Parameter groups and optimizers as in the seed (src/tools/optimizer.py)."""
from __future__ import annotations

from mindspore import Tensor, nn


def decays(name: str, ndim: int) -> bool:
    """The seed's rule: only `.weight` tensors (conv/linear kernels) get weight decay; biases,
    BatchNorm gamma/beta, pos_embed and other 1-d or embedding parameters do not."""
    return name.endswith(".weight") and ndim > 1


def param_groups(net, weight_decay: float) -> list[dict]:
    """[no-decay group, decay group] over the trainable parameters (frozen relative_pos excluded)."""
    no_decay, decay = [], []
    for p in net.trainable_params():
        (decay if decays(p.name, len(p.shape)) else no_decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def build_optimizer(cfg: dict, net, lr_schedule) -> nn.Optimizer:
    """AdamWeightDecay (beta, eps) or Momentum, stepping through the per-step LR array."""
    groups = param_groups(net, cfg["weight_decay"])
    lr = Tensor(lr_schedule)
    if cfg["optimizer"] == "adamw":
        beta1, beta2 = cfg["beta"]
        return nn.AdamWeightDecay(groups, learning_rate=lr, beta1=beta1, beta2=beta2, eps=cfg["eps"])
    if cfg["optimizer"] == "momentum":
        return nn.Momentum(groups, learning_rate=lr, momentum=cfg["momentum"])
    raise ValueError(f"optimizer={cfg['optimizer']!r}: expected adamw or momentum")
