"""The named ViG variants as plain data (no MindSpore import, so the workflow can check names fast).

The original's names; the seed model zoo's names are aliases of the isotropic ones.
"""
from __future__ import annotations


def _isotropic(channels: int, blocks: int, **kw) -> dict:
    return dict(channels=(channels,), blocks=(blocks,), k_growth=True, stem_stride=16, reduce_ratios=(1,),
                relative_pos=False, pyramid=False, **kw)


def _pyramid(channels: tuple, blocks: tuple, **kw) -> dict:
    return dict(channels=channels, blocks=blocks, k_growth=False, stem_stride=4, reduce_ratios=(4, 2, 1, 1),
                relative_pos=True, pyramid=True, **kw)


VARIANTS = {
    "vig_ti_224_gelu": _isotropic(192, 12),
    "vig_s_224_gelu": _isotropic(320, 16),
    "vig_b_224_gelu": _isotropic(640, 16),
    "pvig_ti_224_gelu": _pyramid((48, 96, 240, 384), (2, 2, 6, 2)),
    "pvig_s_224_gelu": _pyramid((80, 160, 400, 640), (2, 2, 6, 2)),
    "pvig_m_224_gelu": _pyramid((96, 192, 384, 768), (2, 2, 16, 2)),
    "pvig_b_224_gelu": _pyramid((128, 256, 512, 1024), (2, 2, 18, 2), crop_pct=0.95),
}
SEED_ALIASES = {
    "vig_ti_patch16_224": "vig_ti_224_gelu",
    "vig_s_patch16_224": "vig_s_224_gelu",
    "vig_b_patch16_224": "vig_b_224_gelu",
}


def known_arch_names() -> list[str]:
    return sorted(list(VARIANTS) + list(SEED_ALIASES))
