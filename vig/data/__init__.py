"""Data pipeline: ImageNet-format folders -> mindspore.dataset with the seed's augmentation, reproducibly."""
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
