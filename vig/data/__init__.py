"""Data pipeline: ImageNet-format folders -> mindspore.dataset with the seed's augmentation, reproducibly.

    build_train_dataset(root, cfg, batch_size, rank=0, world_size=1, seed=0, epoch=0)
        -> {"image": (B,3,S,S) float32, "label": (B,C) float32 soft targets}; one dataset per epoch
    build_eval_dataset(root, cfg, batch_size, rank=0, world_size=1, split="val")
        -> {"image": (B,3,S,S) float32, "label": (B,) int32}; rank shards cover every image once
    train_steps_per_epoch(root, batch_size, world_size=1)
    eval_transforms(image_size, crop_pct, mean, std, interpolation="bicubic")(PIL image or HWC uint8)
        -> (3,S,S) float32, the one eval/export preprocessing
    class_names(split_dir), DEFAULTS, data_config(cfg)
"""
from .dataset import build_eval_dataset, build_train_dataset, eval_shard, train_shard, train_steps_per_epoch
from .folder import class_names, list_images
from .mixup import MixupCutmix, cutmix_box, smoothed_one_hot
from .rand_augment import RandAugment, RandAugmentSpec, parse_rand_augment
from .settings import DEFAULTS, data_config
from .transforms import EvalTransform, TrainTransform, eval_transforms, load_rgb, random_erase

__all__ = [
    "DEFAULTS", "EvalTransform", "MixupCutmix", "RandAugment", "RandAugmentSpec", "TrainTransform",
    "build_eval_dataset", "build_train_dataset", "class_names", "cutmix_box", "data_config", "eval_shard",
    "eval_transforms", "list_images", "load_rgb", "parse_rand_augment", "random_erase", "smoothed_one_hot",
    "train_shard", "train_steps_per_epoch",
]
