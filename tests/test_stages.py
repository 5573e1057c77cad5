"""Workflow stages without a model: dataset check, demo data, postprocess, summary gate, report plots."""
import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vig.demo_data import CLASS_NAMES, build_demo_dataset, stratified_split
from vig.deploy.postprocess import accuracy, print_seed_form
from vig.report import plot
from vig.predictions import records, top_k
from vig.summary import (DeployedTarget, ParityError, build_summary, check_images, needed_tolerance,
                         within_tolerance)
from vig.verify import DatasetError, verify_dataset

REPO = Path(__file__).resolve().parents[1]


def load_script(name):
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "workflow_scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_jpeg(path, size=(20, 16), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG", quality=90)


def make_dataset(root, layout):
    """layout: {split: {class: n images}}; file names are unique across the whole tree."""
    count = 0
    for split, classes in layout.items():
        for cls, n in classes.items():
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for _ in range(n):
                write_jpeg(root / split / cls / f"img_{count:03d}.JPEG", size=(20 + count % 3, 16), seed=count)
                count += 1
    return root


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "data", {"train": {"cat": 3, "dog": 2}, "val": {"cat": 2, "dog": 1}})


def check(root, **kw):
    return verify_dataset(root, workers=1, log=lambda _: None, **kw)


def problems_of(root, **kw):
    with pytest.raises(DatasetError) as info:
        check(root, **kw)
    return info.value.problems


# ---------------------------------------------------------------------------------------------
# verify_dataset
# ---------------------------------------------------------------------------------------------
def test_verify_clean_dataset_manifest(dataset):
    manifest = check(dataset, full_decode=True)
    assert manifest["classes"] == ["cat", "dog"] and manifest["class_to_idx"] == {"cat": 0, "dog": 1}
    assert manifest["counts"]["train"] == {"total": 5, "per_class": {"cat": 3, "dog": 2}}
    assert manifest["counts"]["val"] == {"total": 3, "per_class": {"cat": 2, "dog": 1}}
    assert manifest["image_size"]["train"]["width"] == {"min": 20, "max": 22, "mean": 20.8}
    assert manifest["image_size"]["val"]["height"] == {"min": 16, "max": 16, "mean": 16.0}
    lines = sorted(f"{p.relative_to(dataset).as_posix()}\t{p.stat().st_size}\n"
                   for p in dataset.rglob("*.JPEG"))
    assert manifest["digest"]["sha256"] == hashlib.sha256("".join(lines).encode()).hexdigest()
    assert manifest["formats"] == {"JPEG": 8}
    # the header check and the parallel path agree with the full decode
    fast = verify_dataset(dataset, workers=2, log=lambda _: None)
    assert {k: fast[k] for k in ("counts", "digest", "image_size")} == \
        {k: manifest[k] for k in ("counts", "digest", "image_size")}


def test_verify_digest_tracks_file_sizes(dataset):
    before = check(dataset)["digest"]["sha256"]
    write_jpeg(dataset / "val" / "dog" / "img_007.JPEG", size=(40, 40), seed=99)
    assert check(dataset)["digest"]["sha256"] != before


def test_verify_missing_split(dataset):
    os.rename(dataset / "val", dataset / "validation")
    problems = problems_of(dataset)
    assert len(problems) == 1 and "missing split" in problems[0] and problems[0].startswith(str(dataset / "val"))


def test_verify_empty_class(dataset):
    for f in (dataset / "val" / "dog").iterdir():
        f.unlink()
    assert problems_of(dataset) == [f"{dataset / 'val' / 'dog'}: empty class (no image files)"]


def test_verify_class_sets_differ_names_both_sides(dataset):
    make_dataset(dataset, {"train": {"emu": 1}, "val": {"fox": 1, "gnu": 1}})
    problems = problems_of(dataset)
    assert f"{dataset / 'val'}: missing class(es) present in train: emu" in problems
    assert f"{dataset / 'train'}: missing class(es) present in val: fox, gnu" in problems


@pytest.mark.parametrize("full_decode", [False, True])
def test_verify_truncated_jpeg(dataset, full_decode):
    victim = dataset / "train" / "cat" / "img_001.JPEG"
    write_jpeg(victim, size=(64, 64), seed=5)
    data = victim.read_bytes()
    victim.write_bytes(data[:len(data) // 2])
    problems = problems_of(dataset, full_decode=full_decode)
    assert len(problems) == 1
    assert problems[0].startswith(f"{victim}: undecodable or truncated image")


def test_verify_zero_byte_and_non_image_files_all_listed(dataset):
    (dataset / "train" / "dog" / "empty.JPEG").write_bytes(b"")
    (dataset / "val" / "cat" / "notes.JPEG").write_text("not a picture\n")
    problems = problems_of(dataset)
    assert problems == sorted([f"{dataset / 'train' / 'dog' / 'empty.JPEG'}: zero-byte file",
                               f"{dataset / 'val' / 'cat' / 'notes.JPEG'}: not an image (no known image header)"])


def test_verify_files_the_readers_would_skip(dataset):
    (dataset / "train" / "cat" / "labels.txt").write_text("cat\n")
    (dataset / "val" / "stray.JPEG").write_bytes((dataset / "val" / "cat" / "img_005.JPEG").read_bytes())
    (dataset / "train" / ".ipynb_checkpoints").mkdir()
    problems = problems_of(dataset)
    assert len(problems) == 3
    assert any(p.startswith(str(dataset / "train" / "cat" / "labels.txt")) and "extension" in p for p in problems)
    assert any(p.startswith(str(dataset / "val" / "stray.JPEG")) and "outside a class folder" in p
               for p in problems)
    assert any(p.startswith(str(dataset / "train" / ".ipynb_checkpoints")) and "hidden" in p for p in problems)


def test_verify_duplicate_val_names(dataset):
    source = dataset / "val" / "cat" / "img_005.JPEG"
    (dataset / "val" / "dog" / "img_005.JPEG").write_bytes(source.read_bytes())
    (dataset / "val" / "dog" / "img_006.png").write_bytes(source.read_bytes())  # same stem as img_006.JPEG
    problems = problems_of(dataset)
    assert len(problems) == 2
    assert "'img_005' occurs 2 times (cat/img_005.JPEG, dog/img_005.JPEG)" in problems[0]
    assert "'img_006' occurs 2 times" in problems[1]


def test_verify_split_without_class_folders(dataset):
    for cls in ("cat", "dog"):
        for f in (dataset / "val" / cls).iterdir():
            f.unlink()
        (dataset / "val" / cls).rmdir()
    assert problems_of(dataset) == [f"{dataset / 'val'}: no class folders (expected val/<class>/<image files>)"]


def test_verify_folder_inside_a_class_folder(dataset):
    nested = dataset / "train" / "dog" / "more"
    write_jpeg(nested / "img_100.JPEG")
    assert problems_of(dataset) == [f"{nested}: unexpected folder inside a class folder (images must sit directly "
                                    f"in train/dog/)"]


def test_verify_unsupported_image_format(dataset):
    gif = dataset / "train" / "cat" / "anim.JPEG"  # an extension the readers list, a format they cannot decode
    Image.new("RGB", (8, 8), (200, 10, 10)).save(gif, format="GIF")
    assert problems_of(dataset) == [f"{gif}: unsupported image format GIF (expected one of JPEG, MPO, PNG, BMP, "
                                    f"PPM, TIFF, WEBP)"]


def test_verify_root_that_is_a_file(tmp_path):
    root = tmp_path / "imagenet.tar"
    root.write_bytes(b"not a folder")
    assert problems_of(root) == [f"{root}: dataset root is not a folder (expected <root>/train/<class>/<image> "
                                 f"and <root>/val/<class>/<image>)"]
    assert problems_of(tmp_path / "absent")[0].startswith(f"{tmp_path / 'absent'}: dataset root does not exist")


def test_verify_cli_writes_nothing_on_failure(dataset, tmp_path, capsys):
    cli = load_script("verify_dataset")
    output = tmp_path / "out" / "manifest.json"
    (dataset / "val" / "dog" / "img_007.JPEG").write_bytes(b"")
    assert cli.main(["--data_url", str(dataset), "--output", str(output), "--workers", "1"]) == 2  # bad input
    assert not output.exists()
    assert "zero-byte file" in capsys.readouterr().err
    (dataset / "val" / "dog" / "img_007.JPEG").unlink()
    write_jpeg(dataset / "val" / "dog" / "img_007.JPEG")
    cli.main(["--data_url", str(dataset), "--output", str(output), "--workers", "1", "--full_decode"])
    assert json.loads(output.read_text())["counts"]["val"]["total"] == 3
    assert sorted(os.listdir(output.parent)) == ["manifest.json"]  # no temp file left behind


# ---------------------------------------------------------------------------------------------
# demo dataset
# ---------------------------------------------------------------------------------------------
def test_stratified_split_is_stratified_and_deterministic():
    labels = np.repeat(np.arange(4), [10, 20, 30, 41])
    train, val = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(np.sort(np.concatenate([train, val])), np.arange(labels.size))
    assert np.bincount(labels[val]).tolist() == [2, 4, 6, 8]
    again = stratified_split(labels, 0.2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, val), again))
    assert not np.array_equal(val, stratified_split(labels, 0.2, seed=4)[1])
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(labels, 1.0, seed=0)


def test_demo_dataset_counts_classes_and_determinism(tmp_path):
    from sklearn.datasets import load_digits

    targets = load_digits().target
    summary = build_demo_dataset(tmp_path / "a", image_size=16, seed=0, log=lambda _: None)
    root = tmp_path / "a"
    assert sorted(os.listdir(root / "train")) == list(CLASS_NAMES) == [str(d) for d in range(10)]
    files = {split: sorted(p.relative_to(root / split).as_posix() for p in (root / split).rglob("*.JPEG"))
             for split in ("train", "val")}
    assert len(files["train"]) + len(files["val"]) == 1797
    for split in ("train", "val"):
        for rel in files[split]:  # the folder is the digit the image shows (class index = digit)
            folder, name = rel.split("/")
            assert targets[int(name[len("digit_"):-len(".JPEG")])] == int(folder)
    per_class = np.bincount(targets)
    assert [summary["counts"]["val"][c] for c in CLASS_NAMES] == [int(round(n * 0.2)) for n in per_class]
    with Image.open(root / "val" / files["val"][0]) as img:
        assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (16, 16))
    build_demo_dataset(tmp_path / "b", image_size=16, seed=0, log=lambda _: None)
    digest = lambda r: hashlib.sha256(b"".join(  # noqa: E731
        p.relative_to(r).as_posix().encode() + p.read_bytes() for p in sorted(r.rglob("*.JPEG")))).hexdigest()
    assert digest(root) == digest(tmp_path / "b")
    manifest = check(root, full_decode=True)
    assert manifest["counts"]["val"]["total"] == len(files["val"])


# ---------------------------------------------------------------------------------------------
# postprocess
# ---------------------------------------------------------------------------------------------
def write_results(folder, logits_by_stem):
    folder.mkdir(parents=True, exist_ok=True)
    for stem, logits in logits_by_stem.items():
        np.asarray(logits, dtype=np.float32).tofile(folder / f"{stem}_0.bin")


def test_postprocess_known_top1_top5(tmp_path, capsys):
    # 7 classes; true class ranks: a 1st, b 2nd, c 5th, d 6th -> top-1 1/4, top-5 3/4
    base = np.array([7, 6, 5, 4, 3, 2, 1], dtype=np.float32)
    results = {"a": base, "b": np.roll(base, 1), "c": np.roll(base, 4), "d": np.roll(base, 5)}
    write_results(tmp_path / "result_Files", results)
    (tmp_path / "result_Files" / ".snakemake_timestamp").write_text("")  # Snakemake's marker is ignored
    labels = {"a.JPEG": 0, "b.JPEG": 0, "c.JPEG": 0, "d.JPEG": 0}
    (tmp_path / "labels.json").write_text(json.dumps(labels))
    acc = accuracy(tmp_path / "result_Files", tmp_path / "labels.json")
    assert acc == {"top1": 0.25, "top5": 0.75, "num_images": 4, "correct_top1": 1, "correct_top5": 3,
                   "num_classes": 7}
    print_seed_form(acc)
    assert capsys.readouterr().out == "Top1 acc:  0.25\nTop5 acc:  0.75\n"


def test_postprocess_cli_and_unmatched_files(tmp_path, capsys):
    write_results(tmp_path / "r", {"x": [0.0, 1.0], "y": [1.0, 0.0], "extra": [1.0, 0.0]})
    (tmp_path / "labels.json").write_text(json.dumps({"x.JPEG": 1, "y.JPEG": 1, "lost.JPEG": 0}))
    cli = load_script("postprocess")
    args = ["--result_dir", str(tmp_path / "r"), "--labels", str(tmp_path / "labels.json"),
            "--output", str(tmp_path / "acc.json")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "result without a label: extra_0.bin" in err and "label without a result: lost" in err
    assert not (tmp_path / "acc.json").exists()
    (tmp_path / "r" / "extra_0.bin").unlink()
    (tmp_path / "labels.json").write_text(json.dumps({"x.JPEG": 1, "y.JPEG": 1}))
    cli.main(args)
    assert "Top1 acc:  0.5\nTop5 acc:  1.0\n" in capsys.readouterr().out
    assert json.loads((tmp_path / "acc.json").read_text())["correct_top1"] == 1


# ---------------------------------------------------------------------------------------------
# summary (parity gate) and report pictures
# ---------------------------------------------------------------------------------------------
def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


# 8 val images of 3 classes, as the confusion matrix below: (label, predicted class) per image
IMAGES = {"a0": (0, 0), "a1": (0, 0), "a2": (0, 0), "b0": (1, 0), "b1": (1, 1), "c0": (2, 1), "c1": (2, 2),
          "c2": (2, 2)}


def logits_of(predicted, num_classes, seed):
    """Distinct logits whose largest is `predicted`, the others in a random order below it."""
    values = (np.random.default_rng(seed).standard_normal(num_classes) * 3).astype(np.float32)
    order = np.argsort(-values)
    values[[order[0], predicted]] = values[[predicted, order[0]]]
    return values


def prediction_records(images, num_classes):
    """What evaluate.py/postprocess.py --predictions write for {stem: (label, predicted)}."""
    logits = np.stack([logits_of(pred, num_classes, i) for i, (_, pred) in enumerate(images.values())])
    return records(list(images), [label for label, _ in images.values()], *top_k(logits))


@pytest.fixture
def run_files(tmp_path):
    names = [str(d) for d in range(3)]
    per_image = prediction_records(IMAGES, 3)
    files = {
        "eval": write_json(tmp_path / "eval" / "metrics.json", {
            "top1": 0.75, "top5": 1.0, "loss": 0.6, "num_images": 8, "class_names": names,
            "per_class_accuracy": [1.0, 0.5, 0.75], "confusion_matrix": [[3, 0, 0], [1, 1, 0], [0, 1, 2]]}),
        "eval_predictions": write_json(tmp_path / "eval" / "predictions.json",
                                       {"source": "test", "k": 3, "images": per_image}),
        "infer": write_json(tmp_path / "infer" / "accuracy.json", {
            "top1": 0.75, "top5": 1.0, "num_images": 8, "correct_top1": 6, "correct_top5": 8}),
        "infer_predictions": write_json(tmp_path / "infer" / "predictions.json",
                                        {"source": "test", "k": 3, "images": per_image}),
        "latency": write_json(tmp_path / "infer" / "latency.json", {
            "mean_ms": 2.0, "p50_ms": 1.9, "p90_ms": 2.5, "images": 8, "batch_size": 4,
            "throughput_images_per_s": 500.0}),
        "metrics": tmp_path / "metrics.jsonl",
    }
    final = {"final_weights": "best", "final_epoch": 2}  # the trainer adds it to the last record
    files["metrics"].write_text("".join(json.dumps({"epoch": e, "train_loss": 2.0 / e, "lr": 1e-3 / e,
                                                    "val_top1": 0.2 * e, "val_top5": 0.3 * e, "val_loss": 1.5 / e,
                                                    **(final if e == 3 else {})})
                                        + "\n" for e in (1, 2, 3)))
    return files


def summary_args(files, output):
    return ["--eval", str(files["eval"]), "--eval_predictions", str(files["eval_predictions"]),
            "--deployed", "MINDIR", str(files["infer"]), str(files["infer_predictions"]), str(files["latency"]),
            "--train_metrics", str(files["metrics"]), "--output", str(output)]


def mindir(files):
    return [DeployedTarget("MINDIR", files["infer"], files["infer_predictions"], files["latency"])]


def onnx_target(files, tmp_path, images=None):
    """A second deployed target beside MINDIR: the same accuracy, its own predictions and latency."""
    predictions = json.loads(files["infer_predictions"].read_text())
    return ["--deployed", "ONNX", str(files["infer"]),
            str(write_json(tmp_path / "onnx" / "predictions.json", dict(predictions, images=images or
                                                                        predictions["images"]))),
            str(write_json(tmp_path / "onnx" / "latency.json", {
                "mean_ms": 0.5, "p50_ms": 0.4, "p90_ms": 0.7, "images": 8, "batch_size": 4,
                "throughput_images_per_s": 2000.0, "runtime": "onnxruntime 1.32.0 CPU, 2 threads"}))]


def test_summary_parity_gate_passes_for_every_target(run_files, tmp_path, capsys):
    load_script("summary").main(summary_args(run_files, tmp_path / "summary.json") + onnx_target(run_files, tmp_path))
    out = capsys.readouterr().out
    assert "eval (in framework)" in out and "deployed (MINDIR)" in out and "parity gate: passed (MINDIR, ONNX" in out
    for name in ("MINDIR", "ONNX"):
        assert f"{name}: all 8 images have the evaluation's label, top-1 class and top-5 classes" in out
    assert "ONNX latency: 0.50 ms/image mean, p50 0.40, p90 0.70 (batch 4, 8 images; onnxruntime 1.32.0" in out
    onnx_row = next(line for line in out.splitlines() if line.startswith("deployed (ONNX)"))
    assert onnx_row.split()[2:] == ["0.7500", "1.0000", "8", "0.50", "onnxruntime", "1.32.0", "CPU,", "2", "threads"]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["parity"] == "passed" and summary["images_compared"] == {"MINDIR": 8, "ONNX": 8}
    assert [r["correct_top1"] for r in summary["accuracy"]] == [6, 6, 6]
    assert [r.get("ms_per_image") for r in summary["accuracy"]] == [None, 2.0, 0.5]
    assert summary["latency"]["ONNX"]["runtime"] == "onnxruntime 1.32.0 CPU, 2 threads"
    assert summary["latency"]["MINDIR"]["p90_ms"] == 2.5 and summary["latency"]["MINDIR"]["runtime"] is None
    assert summary["training"] == {"epochs": 3, "final": json.loads(run_files["metrics"].read_text().splitlines()[-1]),
                                   "final_weights": "best", "final_epoch": 2}


def test_summary_parity_gate_names_the_one_target_that_fails(run_files, tmp_path, capsys):
    """MINDIR reproduces the evaluation, ONNX has two images' predictions swapped: the gate names ONNX."""
    deployed = json.loads(run_files["infer_predictions"].read_text())["images"]
    swapped = swap(deployed, "top", "b0", "b1")
    argv = summary_args(run_files, tmp_path / "summary.json") + onnx_target(run_files, tmp_path, swapped)
    assert load_script("summary").main(argv) == 1
    err = capsys.readouterr().err
    assert "parity gate FAILED for deployed target ONNX: 2 of 8 images differ" in err and "MINDIR" not in err
    assert not (tmp_path / "summary.json").exists()


def test_summary_parity_gate_fails_and_writes_nothing(run_files, tmp_path, capsys):
    write_json(run_files["infer"], {"top1": 0.625, "top5": 1.0, "num_images": 8, "correct_top1": 5,
                                    "correct_top5": 8})
    assert load_script("summary").main(summary_args(run_files, tmp_path / "summary.json")) == 1  # a failed gate
    assert not (tmp_path / "summary.json").exists()
    err = capsys.readouterr().err
    assert "parity gate FAILED for deployed (MINDIR)" in err and "correct_top1: eval 6 vs deployed 5" in err
    write_json(run_files["infer"], {"top1": 0.75, "top5": 1.0, "num_images": 9, "correct_top1": 6,
                                    "correct_top5": 8})
    with pytest.raises(ParityError, match="num_images: eval 8 vs deployed 9"):
        build_summary(run_files["eval"], run_files["eval_predictions"], mindir(run_files))


def swap(image_records, field, first, second):
    by_image = {r["image"]: r for r in image_records}
    by_image[first][field], by_image[second][field] = by_image[second][field], by_image[first][field]
    if field == "top":  # the logits go with their classes
        by_image[first]["logits"], by_image[second]["logits"] = by_image[second]["logits"], by_image[first]["logits"]
    return image_records


def test_parity_gate_catches_two_swapped_predictions_with_equal_counts(run_files, tmp_path, capsys):
    # b0 (label 1, predicted 0) and b1 (label 1, predicted 1) swap predictions: still 6 of 8 correct
    deployed = json.loads(run_files["infer_predictions"].read_text())
    write_json(run_files["infer_predictions"], dict(deployed, images=swap(deployed["images"], "top", "b0", "b1")))
    assert load_script("summary").main(summary_args(run_files, tmp_path / "summary.json")) == 1  # a failed gate
    err = capsys.readouterr().err
    assert "parity gate FAILED for deployed target MINDIR: 2 of 8 images differ from the evaluation (top-1: 2)" in err
    evaluated = {r["image"]: r for r in json.loads(run_files["eval_predictions"].read_text())["images"]}
    margins = [f"({evaluated[i]['logits'][0] - evaluated[i]['logits'][1]:.4g})" for i in ("b0", "b1")]
    rows = [line.split() for line in err.splitlines() if line.strip().startswith(("b0", "b1"))]
    assert [row[0] for row in rows] == ["b0", "b1"] and all(row[1] == "1/1" and row[-1] == "top-1" for row in rows)
    # each row: the image's label eval/deployed, the eval's top-3 and margin, the deployed's, the near-tie
    # tolerance that would pass it, what differs
    assert (rows[0][-7], rows[0][-3]) == (margins[0], margins[1]) and (rows[1][-7], rows[1][-3]) == tuple(margins[::-1])
    deployed_b0 = {r["image"]: r for r in json.loads(run_files["infer_predictions"].read_text())["images"]}["b0"]
    needs = needed_tolerance(evaluated["b0"], deployed_b0)
    assert float(rows[0][-2]) == pytest.approx(needs, rel=1e-3) and needs > 1  # far from a near-tie
    assert not (tmp_path / "summary.json").exists()


def with_sensitivity(path, sensitivity):
    """The evaluation's predictions file as evaluate.py writes it: with the model's rounding sensitivity."""
    return write_json(path, dict(json.loads(path.read_text()), rounding_sensitivity=sensitivity))


def near_tie(record, tolerance):
    """The record with its top two classes swapped, their logits `tolerance` apart the other way round."""
    (first, second), (high, _) = record["top"][:2], record["logits"][:2]
    return dict(record, top=[second, first] + record["top"][2:], logits=[high, high - tolerance] + record["logits"][2:])


def test_parity_gate_lets_a_near_tie_within_twice_the_rounding_sensitivity_pass_and_names_it(run_files, tmp_path,
                                                                                            capsys):
    """The top-1 of b1 (label 1, predicted 1) flips to class 0 in the deployed model, its two logits within
    the tolerance on both sides: it passes as a near-tie, is listed, and the deployed top-1 count is one
    lower - exactly what the near-tie changes."""
    with_sensitivity(run_files["eval_predictions"], 0.05)  # tolerance 0.1 (the logits are ~3, 1e-4 of them less)
    evaluated = {r["image"]: r for r in json.loads(run_files["eval_predictions"].read_text())["images"]}
    tied = dict(evaluated["b1"], logits=[evaluated["b1"]["logits"][0], evaluated["b1"]["logits"][0] - 0.08]
                + evaluated["b1"]["logits"][2:])
    write_json(run_files["eval_predictions"], dict(json.loads(run_files["eval_predictions"].read_text()),
                                                   images=[tied if r["image"] == "b1" else r for r in evaluated.values()]))
    deployed = [near_tie(tied, 0.07) if r["image"] == "b1" else r for r in evaluated.values()]
    write_json(run_files["infer_predictions"], {"source": "test", "k": 3, "images": deployed})
    write_json(run_files["infer"], {"top1": 0.625, "top5": 1.0, "num_images": 8, "correct_top1": 5, "correct_top5": 8})
    load_script("summary").main(summary_args(run_files, tmp_path / "summary.json"))
    out = capsys.readouterr().out
    assert "MINDIR: 7 of 8 images have the evaluation's label, top-1 class and top-5 classes; 1 differ only by a " \
           "near-tie within 0.1 (twice the model's rounding sensitivity): b1" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["near_ties"] == {"MINDIR": ["b1"]} and summary["near_tie_tolerance"] == pytest.approx(0.1)
    assert [r["correct_top1"] for r in summary["accuracy"]] == [6, 5]
    # the same flip with the evaluation's margin beyond the tolerance is a real difference
    (tmp_path / "summary.json").unlink()
    write_json(run_files["infer_predictions"], {"source": "test", "k": 3, "images": [
        near_tie(evaluated["b1"], 0.07) if r["image"] == "b1" else r for r in evaluated.values()]})
    write_json(run_files["eval_predictions"], dict(json.loads(run_files["eval_predictions"].read_text()),
                                                   images=list(evaluated.values())))
    assert evaluated["b1"]["logits"][0] - evaluated["b1"]["logits"][1] > 0.2  # far from a tie
    assert load_script("summary").main(summary_args(run_files, tmp_path / "summary.json")) == 1
    err = capsys.readouterr().err
    assert "1 of 8 images differ" in err and "these need more than the near-tie tolerance 0.1" in err
    assert not (tmp_path / "summary.json").exists()
    # deploy.parity_tolerance (summary.py --near_tie_tolerance) set above what the image needs passes it
    needs = needed_tolerance(evaluated["b1"], near_tie(evaluated["b1"], 0.07))
    argv = summary_args(run_files, tmp_path / "summary.json")
    assert load_script("summary").main(argv + ["--near_tie_tolerance", str(needs * 0.99)]) == 1
    load_script("summary").main(argv + ["--near_tie_tolerance", str(needs * 1.01)])
    assert json.loads((tmp_path / "summary.json").read_text())["near_ties"] == {"MINDIR": ["b1"]}
    with pytest.raises(SystemExit) as refused:
        load_script("summary").main(argv + ["--near_tie_tolerance", "-1"])
    assert refused.value.code == 2
    assert "--near_tie_tolerance -1.0: expected a number >= 0" in capsys.readouterr().err


def test_parity_gate_near_ties_must_account_for_the_whole_count_difference(run_files, tmp_path, capsys):
    """No image differs, so a deployed top-1 count one lower cannot come from a near-tie: the gate fails."""
    with_sensitivity(run_files["eval_predictions"], 0.05)
    write_json(run_files["infer"], {"top1": 0.625, "top5": 1.0, "num_images": 8, "correct_top1": 5, "correct_top5": 8})
    assert load_script("summary").main(summary_args(run_files, tmp_path / "summary.json")) == 1
    assert "correct_top1: eval 6 vs deployed 5" in capsys.readouterr().err


def test_within_tolerance_judges_classes_one_side_lists_against_the_others_kth_logit():
    ours = {"top": [3, 1, 4], "logits": [5.0, 4.0, 3.0]}
    assert within_tolerance(ours, ours, 0.0)
    # class 2 replaces 4 at the bottom of the deployed top-3, 0.01 above where 4 was: a tie at the boundary
    assert within_tolerance(ours, {"top": [3, 1, 2], "logits": [5.0, 4.0, 3.01]}, 0.02)
    assert not within_tolerance(ours, {"top": [3, 1, 2], "logits": [5.0, 4.0, 3.01]}, 0.005)
    # class 2 enters the deployed top-3 at 3.5: the evaluation scored it below its 3.0, 0.5 away at least
    assert not within_tolerance(ours, {"top": [3, 1, 2], "logits": [5.0, 4.0, 3.5]}, 0.1)
    # a class both list, moved by more than the tolerance, with the same decisions
    assert not within_tolerance(ours, {"top": [3, 1, 4], "logits": [5.0, 4.0, 2.7]}, 0.1)


def test_evaluation_measures_how_far_rounding_moves_its_logits():
    """rounding_sensitivity runs the forward on one-rounding-step nudges of the batch: a forward that scales
    its input by 1e6 moves by ~1e6 * 2^-23 * |x|; one that ignores its input does not move at all."""
    from mindspore import Tensor

    from vig.train.evaluate import rounding_sensitivity

    x = np.full((2, 3), 4.0, np.float32)
    labels = np.zeros(2, np.int32)

    def scaled(images, _labels):
        values = images.asnumpy().astype(np.float64) * 1e6  # float64: the move is below a float32 ulp of 4e6
        return None, Tensor(values), None

    def constant(images, _labels):
        return None, Tensor(np.ones((2, 3), np.float32)), None

    moved = rounding_sensitivity(scaled, x, labels, x * 1e6, 2)
    assert moved == pytest.approx(4.0 * 1e6 * 2.0 ** -23, rel=0.01)
    assert rounding_sensitivity(constant, x, labels, np.ones((2, 3), np.float32), 2) == 0.0


def test_parity_gate_catches_two_swapped_labels(run_files):
    deployed = json.loads(run_files["infer_predictions"].read_text())
    write_json(run_files["infer_predictions"], dict(deployed, images=swap(deployed["images"], "label", "a0", "c2")))
    with pytest.raises(ParityError, match=r"2 of 8 images differ from the evaluation \(label: 2\)") as info:
        build_summary(run_files["eval"], run_files["eval_predictions"], mindir(run_files))
    assert "a0                      0/2" in str(info.value) and "c2                      2/0" in str(info.value)


def test_parity_gate_catches_a_top5_only_difference_and_missing_images():
    images = {f"i{n}": (n % 7, n % 7) for n in range(9)}
    reference = {r["image"]: r for r in prediction_records(images, 7)}
    deployed = json.loads(json.dumps(reference))
    sixth = next(c for c in range(7) if c not in deployed["i3"]["top"])
    deployed["i3"]["top"][4], deployed["i3"]["logits"][4] = sixth, deployed["i3"]["logits"][4] - 1e-6
    with pytest.raises(ParityError, match=r"1 of 9 images differ from the evaluation \(top-5 set: 1\)"):
        check_images(reference, deployed, "ONNX")
    del deployed["i3"], deployed["i5"]
    deployed["extra"] = reference["i0"]
    with pytest.raises(ParityError, match=r"for deployed target ONNX: not the evaluation's images \(9 evaluated, "
                                          r"8 deployed\)\n  only in the evaluation: i3, i5\n  only in ONNX: extra"):
        check_images(reference, deployed, "ONNX")


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """Runs report_plots' CLI for one kind; returns the matplotlib Figure it saved, so a test can check what
    the picture shows (titles, plotted values, table cells), and checks the PNG was written alone."""
    import vig.report

    figures = []
    save = vig.report._save
    monkeypatch.setattr(vig.report, "_save", lambda fig, output: (figures.append(fig), save(fig, output))[1])

    def draw(kind, inputs):
        output = tmp_path / "report" / f"{kind}.png"
        load_script("report_plots").main(["--kind", kind, "--inputs", *map(str, inputs), "--output", str(output)])
        assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and sorted(os.listdir(output.parent)) == [f"{kind}.png"]
        output.unlink()
        assert len(figures) == 1
        return figures.pop()
    return draw


def lines_of(ax) -> dict:
    return {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}


def test_report_curves_plot_every_epoch_record(run_files, drawn):
    fig = drawn("curves", [run_files["metrics"]])
    loss, lr, acc = fig.axes
    assert [ax.get_title() for ax in fig.axes] == ["loss", "learning rate", "val accuracy\nfinal weights: best, epoch 2"]
    epochs = [1, 2, 3]
    assert lines_of(loss).keys() == {"train", "val"}
    assert lines_of(acc).keys() == {"top-1", "top-5", "final (best)"}
    assert lines_of(acc)["final (best)"][0] == [2, 2]  # the dashed line at the final weights' epoch
    for ax, label, values in ((loss, "train", [2.0 / e for e in epochs]), (loss, "val", [1.5 / e for e in epochs]),
                              (acc, "top-1", [0.2 * e for e in epochs]), (acc, "top-5", [0.3 * e for e in epochs])):
        x, y = lines_of(ax)[label]
        assert x == epochs and np.allclose(y, values), (ax.get_title(), label, y)
    ((x, y),) = lines_of(lr).values()
    assert x == epochs and np.allclose(y, [1e-3 / e for e in epochs])
    assert [t.get_text() for t in loss.get_legend().get_texts()] == ["train", "val"]


def test_report_confusion_shows_row_shares_and_counts(run_files, drawn):
    fig = drawn("confusion", [run_files["eval"]])
    ax = fig.axes[0]
    (image,) = ax.get_images()
    counts = np.array([[3, 0, 0], [1, 1, 0], [0, 1, 2]])
    np.testing.assert_allclose(image.get_array(), counts / counts.sum(1, keepdims=True))
    shown = {(int(t.get_position()[1]), int(t.get_position()[0])): int(t.get_text()) for t in ax.texts}
    assert shown == {(i, j): int(c) for (i, j), c in np.ndenumerate(counts) if c}  # (row, col) -> count
    assert ax.get_title() == "confusion matrix (8 images, top-1 0.7500)"
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2"]


@pytest.mark.parametrize("deployed_top1, title, colour", [(6, "identical counts", "green"),
                                                            (5, "DIFFERENT counts", "red")])
def test_report_accuracy_table(tmp_path, drawn, deployed_top1, title, colour):
    rows = [{"model": "eval (in framework)", "top1": 0.75, "top5": 1.0, "num_images": 8, "correct_top1": 6,
             "correct_top5": 8},
            {"model": "deployed (MINDIR)", "top1": deployed_top1 / 8, "top5": 1.0, "num_images": 8,
             "correct_top1": deployed_top1, "correct_top5": 8}]
    fig = drawn("accuracy", [write_json(tmp_path / "summary.json", {"accuracy": rows})])
    ax = fig.axes[0]
    cells = ax.tables[0].get_celld()
    text = [[cells[r, c].get_text().get_text() for c in range(5)] for r in range(3)]
    assert text == [["model", "top-1", "top-5", "top-1 correct", "top-5 correct"],
                    ["eval (in framework)", "0.7500", "1.0000", "6 / 8", "8 / 8"],
                    ["deployed (MINDIR)", f"{deployed_top1 / 8:.4f}", "1.0000", f"{deployed_top1} / 8", "8 / 8"]]
    assert ax.get_title() == f"eval vs deployed model: {title}" and ax.title.get_color() == colour


def test_report_accuracy_table_has_a_row_and_latency_per_target(run_files, tmp_path, drawn, capsys):
    load_script("summary").main(summary_args(run_files, tmp_path / "summary.json") + onnx_target(run_files, tmp_path))
    fig = drawn("accuracy", [tmp_path / "summary.json"])
    cells = fig.axes[0].tables[0].get_celld()
    text = [[cells[r, c].get_text().get_text() for c in range(6)] for r in range(4)]
    assert [row[0] for row in text] == ["model", "eval (in framework)", "deployed (MINDIR)", "deployed (ONNX)"]
    assert [row[5] for row in text] == ["ms/image", "-", "2.00 (batch 4)",
                                        "0.50 (batch 4)\nonnxruntime 1.32.0 CPU, 2 threads"]
    assert fig.axes[0].get_title() == "eval vs deployed model: identical counts"


def test_report_benchmarks_bar_per_step(tmp_path, drawn):
    benches = []
    for step, seconds, rss in (("train", "12.5", "812.5"), ("export", "3.1", "-")):
        benches.append(tmp_path / f"{step}.tsv")
        benches[-1].write_text(f"s\th:m:s\tmax_rss\tmax_vms\n{seconds}\t0:00:12\t{rss}\t2000.0\n")
    fig = drawn("benchmarks", benches)
    time_ax, memory_ax = fig.axes
    assert (time_ax.get_title(), memory_ax.get_title()) == ("time per step", "memory per step")
    assert [t.get_text() for t in time_ax.get_yticklabels()] == ["train", "export"]
    assert [bar.get_width() for bar in time_ax.patches] == [12.5, 3.1]
    widths = [bar.get_width() for bar in memory_ax.patches]
    assert widths[0] == 812.5 and np.isnan(widths[1])  # '-' (not measured) draws no bar and no label
    assert [t.get_text() for t in time_ax.texts] == [" 12.5", " 3.1"]
    assert [t.get_text() for t in memory_ax.texts] == [" 812"]


def test_report_rejects_bad_inputs(run_files, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        plot("curves", [tmp_path / "nope.jsonl"], tmp_path / "x.png")
    write_json(run_files["eval"], {"confusion_matrix": [[1, 2]], "class_names": ["a", "b"]})
    with pytest.raises(ValueError, match="confusion_matrix is \\(1, 2\\), expected \\(2, 2\\)"):
        plot("confusion", [run_files["eval"]], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# ---------------------------------------------------------------------------------------------
# atomic outputs and input checks of the deployment steps
# ---------------------------------------------------------------------------------------------
def test_atomic_dir_replaces_only_on_success(tmp_path):
    from vig.io import atomic_dir

    target = tmp_path / "out"
    target.mkdir()
    (target / "old.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.bin").write_bytes(b"x")
            raise RuntimeError("interrupted")
    assert sorted(os.listdir(tmp_path)) == ["out"] and sorted(os.listdir(target)) == ["old.bin"]
    with atomic_dir(target) as tmp:
        (tmp / "new.bin").write_bytes(b"new")
    assert sorted(os.listdir(tmp_path)) == ["out"] and sorted(os.listdir(target)) == ["new.bin"]


def test_infer_inputs_are_checked_before_loading_a_model(tmp_path):
    from vig.deploy.infer import list_inputs

    np.zeros((1, 3, 8, 8), np.float32).tofile(tmp_path / "a.bin")
    np.zeros((1, 3, 8, 8), np.float32).tofile(tmp_path / "b.bin")
    assert list_inputs(tmp_path, None) == ([tmp_path / "a.bin", tmp_path / "b.bin"], 8)
    np.zeros((1, 3, 9, 8), np.float32).tofile(tmp_path / "c.bin")
    with pytest.raises(ValueError, match=r"float32 1x3x8x8 \(768 bytes\); these do not:\n  c.bin: 864 bytes"):
        list_inputs(tmp_path, None)
    with pytest.raises(ValueError, match="a.bin: 768 bytes"):
        list_inputs(tmp_path, 9)
