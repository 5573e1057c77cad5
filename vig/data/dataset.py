"""Training and evaluation datasets on `mindspore.dataset`, reproducible to the bit.

Determinism: MindSpore does no shuffling or random op here. The epoch's order comes from a numpy
permutation seeded by (seed, epoch); every image's augmentation from a Generator seeded by
(seed, epoch, image index); every batch's Mixup/CutMix from (seed, epoch, rank, batch index). A dataset
built for the same (seed, epoch, rank, world_size) therefore yields the same batches whatever ran before
and however many workers run it (a resumed run repeats its interrupted epoch from the start).
"""
import os

import numpy as np
import mindspore.dataset as ds

from .folder import class_names, list_images
from .mixup import MixupCutmix
from .settings import data_config, effective_workers, mixup_active
from .transforms import TrainTransform, eval_transforms, load_rgb

# distinct SeedSequence streams so the shuffle, per-image and per-batch draws never share random numbers
_SHUFFLE_STREAM, _SAMPLE_STREAM, _BATCH_STREAM = 1, 2, 3


def _check_int(name, value, low, high=None):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (
            high is not None and value > high):
        upper = f", at most {high}" if high is not None else ""
        raise ValueError(f"{name} = {value!r}: expected an integer >= {low}{upper}")
    return int(value)


def _check_rank(rank, world_size):
    world_size = _check_int("world_size", world_size, 1)
    return _check_int("rank", rank, 0, world_size - 1), world_size


def _check_classes(split_dir, names, dcfg):
    if len(names) != dcfg["num_classes"]:
        raise ValueError(f"{split_dir} has {len(names)} class folders but num_classes = {dcfg['num_classes']}; "
                         f"set num_classes: {len(names)} in the config or fix the folder")


def train_shard(num_images, batch_size, rank, world_size, seed, epoch):
    """Image indices of `rank` for one epoch, whole batches only.

    All ranks permute the same way (seed, epoch), cut the permutation into `world_size` equal disjoint
    blocks of num_images // world_size, and keep whole batches; the few images left over change every epoch.
    """
    order = np.random.default_rng([seed, epoch, _SHUFFLE_STREAM]).permutation(num_images)
    per_rank = num_images // world_size
    block = order[rank * per_rank:(rank + 1) * per_rank]
    return block[:(per_rank // batch_size) * batch_size]


def train_steps_per_epoch(root, batch_size, world_size=1):
    """Batches per rank per epoch of `<root>/train` (the same for every rank and epoch; for LR schedules)."""
    batch_size = _check_int("batch_size", batch_size, 1)
    world_size = _check_int("world_size", world_size, 1)
    _, paths, _ = list_images(os.path.join(os.fspath(root), "train"))
    return (len(paths) // world_size) // batch_size


def eval_shard(num_images, rank, world_size):
    """Contiguous blocks in file order; the first num_images % world_size ranks get one image more."""
    return np.array_split(np.arange(num_images), world_size)[rank]


class _TrainSample:
    """index -> (augmented CHW float32 image, int32 label, batch id); runs inside dataset workers."""

    def __init__(self, paths, labels, dcfg, seed, epoch):
        self.paths, self.labels = paths, labels
        self.transform = TrainTransform(dcfg)
        self.seed, self.epoch = seed, epoch

    def __call__(self, index, batch):
        index = int(index)
        rng = np.random.default_rng([self.seed, self.epoch, index, _SAMPLE_STREAM])
        image = self.transform(load_rgb(self.paths[index]), rng)
        return image, np.int32(self.labels[index]), batch


class _BatchTargets:
    """Batch -> (mixed images, (B, C) float32 soft targets) with a per-batch Generator."""

    def __init__(self, mixer, seed, epoch, rank):
        self.mixer, self.seed, self.epoch, self.rank = mixer, seed, epoch, rank

    def __call__(self, images, labels, batch):
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, int(batch[0]), _BATCH_STREAM])
        result = self.mixer.apply(images, labels, rng)
        return result.images, result.targets


class _EvalSample:
    def __init__(self, paths, labels, transform):
        self.paths, self.labels, self.transform = paths, labels, transform

    def __call__(self, index):
        index = int(index)
        return self.transform(load_rgb(self.paths[index])), np.int32(self.labels[index])


# Up to this many workers run as threads in the training process. PIL's decode/resize/affine and numpy
# release the GIL for ~3/4 of an image's time (cProfile of the seed chain), so on 2 cores threads keep pace
# with forked processes (bench/data_vs_step.py: same or higher img/s, less CPU per image), and they spare
# every epoch's dataset MindSpore's process shutdown (it sleeps 0.5 s per exiting worker: 1.1 s with 2) and
# slower start-up (0.3-1.0 s vs 0.1-0.3 s). More workers fork: the GIL would cap threads.
THREAD_WORKERS_MAX = 2


def _map_kwargs(workers):
    return dict(num_parallel_workers=workers, python_multiprocessing=workers > THREAD_WORKERS_MAX)


def _check_batching(dcfg, batch_size, rank, world_size):
    batch_size = _check_int("batch_size", batch_size, 1)
    rank, world_size = _check_rank(rank, world_size)
    if mixup_active(dcfg) and batch_size % 2:
        raise ValueError(f"batch_size = {batch_size}: Mixup/CutMix (mix_up = {dcfg['mix_up']}, "
                         f"cutmix = {dcfg['cutmix']}) pairs each sample with the flipped batch and needs an even "
                         f"batch size; use an even batch_size or set mix_up and cutmix to 0")
    return batch_size, rank, world_size


def _epoch_plan(split_dir, num_images, batch_size, rank, world_size, seed, epoch):
    """(image indices, batch index of each) for this rank's epoch."""
    order = train_shard(num_images, batch_size, rank, world_size, seed, epoch)
    num_batches = len(order) // batch_size
    if num_batches == 0:
        raise ValueError(f"{split_dir} has {num_images} images: with world_size = {world_size} each rank gets "
                         f"{num_images // world_size}, less than one batch of batch_size = {batch_size}")
    return order, np.arange(len(order)) // batch_size


def build_train_dataset(root, cfg, batch_size, rank=0, world_size=1, seed=0, epoch=0):
    """Rank `rank`'s training batches of one epoch from `<root>/train`: {"image": (B,3,S,S) float32,
    "label": (B, num_classes) float32 soft targets (smoothed one-hot, Mixup/CutMix-mixed when on)}.

    Build one dataset per epoch and iterate it once (the trainer resumes whole epochs).
    """
    dcfg = data_config(cfg)
    batch_size, rank, world_size = _check_batching(dcfg, batch_size, rank, world_size)
    seed, epoch = _check_int("seed", seed, 0), _check_int("epoch", epoch, 0)
    split_dir = os.path.join(os.fspath(root), "train")
    names, paths, labels = list_images(split_dir)
    _check_classes(split_dir, names, dcfg)
    order, batch_ids = _epoch_plan(split_dir, len(paths), batch_size, rank, world_size, seed, epoch)
    workers = effective_workers(dcfg["num_parallel_workers"])
    print(f"[data] train {split_dir}: {len(paths)} images, {len(names)} classes; epoch {epoch} random seed {seed} "
          f"rank {rank}/{world_size}: batches {batch_ids[0]}..{batch_ids[-1]} of {batch_size}, {workers} workers",
          flush=True)
    mixer = MixupCutmix(dcfg["mix_up"], dcfg["cutmix"], dcfg["mixup_prob"], dcfg["switch_prob"],
                        dcfg["label_smoothing"], dcfg["num_classes"])
    dataset = ds.NumpySlicesDataset({"index": order.astype(np.int64), "batch": batch_ids.astype(np.int64)},
                                    shuffle=False)
    dataset = dataset.map(_TrainSample(paths, labels, dcfg, seed, epoch), input_columns=["index", "batch"],
                          output_columns=["image", "label", "batch"], **_map_kwargs(workers))
    dataset = dataset.batch(batch_size, drop_remainder=True)
    # one in-process worker: a batch is large to ship between processes and mixing it is cheap
    return dataset.map(_BatchTargets(mixer, seed, epoch, rank), input_columns=["image", "label", "batch"],
                       output_columns=["image", "label"], num_parallel_workers=1)


def build_eval_dataset(root, cfg, batch_size, rank=0, world_size=1, split="val"):
    """Rank `rank`'s share of `<root>/<split>` in file order: {"image": (B,3,S,S) float32, "label": (B,) int32}.

    Shards are disjoint contiguous blocks covering every image once (the first N % world_size ranks hold
    one image more, so ranks may differ by one batch); the last batch may be short. Sum correct counts
    and image counts over ranks to get the accuracy of the whole split.
    """
    dcfg = data_config(cfg)
    batch_size = _check_int("batch_size", batch_size, 1)
    rank, world_size = _check_rank(rank, world_size)
    split_dir = os.path.join(os.fspath(root), split)
    names, paths, labels = list_images(split_dir)
    _check_classes(split_dir, names, dcfg)
    if split != "train":
        _check_same_classes_as_train(os.path.join(os.fspath(root), "train"), split_dir, names)
    if len(paths) < world_size:
        raise ValueError(f"{split_dir} has {len(paths)} images, fewer than world_size = {world_size}")
    shard = eval_shard(len(paths), rank, world_size)
    workers = effective_workers(dcfg["num_parallel_workers"])
    print(f"[data] eval {split_dir}: {len(paths)} images; rank {rank}/{world_size}: images "
          f"{shard[0]}..{shard[-1]} ({len(shard)}), batch {batch_size}, {workers} workers", flush=True)
    transform = eval_transforms(dcfg["image_size"], dcfg["crop_pct"], dcfg["mean"], dcfg["std"],
                                dcfg["interpolation"])
    dataset = ds.NumpySlicesDataset({"index": shard.astype(np.int64)}, shuffle=False)
    dataset = dataset.map(_EvalSample(paths, labels, transform), input_columns=["index"],
                          output_columns=["image", "label"], **_map_kwargs(workers))
    return dataset.batch(batch_size, drop_remainder=False)


def _check_same_classes_as_train(train_dir, split_dir, names):
    """Labels are positions in the sorted class names, so a split with other classes would be mislabelled."""
    if not os.path.isdir(train_dir):
        return
    try:
        train_names = class_names(train_dir)
    except ValueError:  # an empty train folder says nothing about the labels
        return
    if train_names != names:
        difference = next((f"{a!r} vs {b!r}" for a, b in zip(names, train_names) if a != b),
                          f"{len(names)} vs {len(train_names)} classes")
        raise ValueError(f"class folders of {split_dir} differ from those of {train_dir} (first difference: "
                         f"{difference}); labels would not match")
