"""Losses: soft-target cross entropy for training (mixup/cutmix/smoothing already in the targets),
plain cross entropy on integer labels for evaluation. Computed in float32 whatever the AMP level."""
import mindspore as ms
from mindspore import nn, ops


class SoftTargetCrossEntropy(nn.Cell):
    """mean over the batch of sum_c -y_c * log_softmax(z)_c (timm / the seed's criterion)."""

    def construct(self, logits, target):
        logp = ops.log_softmax(logits.astype(ms.float32), -1)
        return (-target.astype(ms.float32) * logp).sum(-1).mean()


def per_sample_cross_entropy(logits, labels):
    """-log p(label) per sample (labels int32), float32."""
    logp = ops.log_softmax(logits.astype(ms.float32), -1)
    picked = ops.gather_elements(logp, 1, labels.astype(ms.int32).reshape(-1, 1))
    return -picked.reshape(-1)
