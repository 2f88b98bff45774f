"""Heatmap-guided input (core.explain.guided) and the comparison study's pure helpers (bench/compare_models.py)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from core.errors import InputError
from core.explain.guided import guide_image, write_guided_dataset
from core.figures.performance import comparison_figure, comparison_table

BENCH = Path(__file__).resolve().parent.parent / "bench" / "compare_models.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("compare_models", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_weight_guidance_keeps_hot_pixels_and_dims_cold_ones() -> None:
    image = np.full((150, 200, 3), 200, dtype=np.uint8)
    cam = np.zeros((75, 100), dtype=np.uint8)
    cam[:, 50:] = 255  # the right half is "hot"
    guided = guide_image(image, cam, "weight", floor=0.25)
    assert guided.shape == image.shape and guided.dtype == np.uint8
    assert guided[75, 190].tolist() == [200, 200, 200]
    assert guided[75, 10].tolist() == [50, 50, 50]


def test_replace_guidance_is_the_coloured_heatmap() -> None:
    image = np.zeros((150, 200, 3), dtype=np.uint8)
    cam = np.tile(np.linspace(0, 1, 100, dtype=np.float32), (75, 1))
    guided = guide_image(image, cam, "replace")
    assert guided.shape == (150, 200, 3)
    assert guided[:, -1, 0].mean() > guided[:, -1, 2].mean()  # hot end is red (Jet)
    with pytest.raises(InputError):
        guide_image(image, cam, "paint")


def test_write_guided_dataset_mirrors_the_layout(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx,dx_type,age,sex,localization\n")
    frame = pd.DataFrame({"image_id": ["a", "b"]})
    images = [np.full((150, 200, 3), 100, dtype=np.uint8)] * 2
    cams = np.full((2, 75, 100), 255, dtype=np.uint8)
    out = write_guided_dataset(source, tmp_path / "out", frame, images, cams)
    assert (out / "HAM10000_metadata.csv").is_file()
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a.png", "b.png"]


def test_fold_splits_are_lesion_grouped(bench, tmp_path: Path, rng: np.random.Generator) -> None:
    n = 300
    frame = pd.DataFrame({"image_id": [f"i{k}" for k in range(n)], "group_id": [f"l{k // 3}" for k in range(n)],
                          "dx": rng.choice(["nv", "mel", "bkl"], n)})
    paths = bench.fold_splits(frame, 3, 0, tmp_path)
    tests = []
    for path in paths:
        split = pd.read_csv(path).merge(frame, on="image_id")
        assert split.groupby("group_id")["split"].nunique().max() == 1
        assert set(split["split"]) == {"train", "val", "test"}
        tests.append(set(split.loc[split["split"] == "test", "image_id"]))
    assert set.union(*tests) == set(frame["image_id"]) and sum(map(len, tests)) == n


def test_promise_rule_and_table(bench) -> None:
    def done(bacc: float, auc: float) -> dict:
        return {"status": "done", "metrics": {
            "accuracy": 0.7, "accuracy_ci95": [0.6, 0.8], "balanced_accuracy": bacc, "balanced_accuracy_ci95": [0, 1],
            "melanoma_auroc": auc, "melanoma_auroc_ci95": [0, 1], "malignant_sens_at_80_spec": 0.5,
            "malignant_sens_at_80_spec_ci95": [0.4, 0.6]}, "train_seconds": 600, "infer_seconds_per_image": 0.01,
            "infer_threads": 2, "val_metrics": {"balanced_accuracy": bacc, "melanoma_auroc": auc}}
    results = {"rows": [{"id": "papercnn-fusion", "label": "plain", **done(0.5, 0.8)},
                        {"id": "papercnn-heatmap-fusion", "label": "heat", **done(0.4, 0.7)},
                        {"id": "resnet50-fusion", "label": "resnet", "status": "not trained", "note": "budget"}]}
    ok, why = bench.promising(results)
    assert not ok and "0.400 vs 0.500" in why
    results["rows"][1]["metrics"]["melanoma_auroc"] = 0.81  # the test split decides nothing
    assert not bench.promising(results)[0]
    results["rows"][1]["val_metrics"]["melanoma_auroc"] = 0.81
    assert bench.promising(results)[0]
    table = comparison_table(json.loads(json.dumps(results)))
    assert list(table["model"]) == ["plain", "heat", "resnet"]
    assert table.loc[2, "status"] == "not trained" and table.loc[0, "training time"] == "10.0 min"
    assert table.loc[0, "inference per image (ms)"] == "10.0 on 2 threads"
    results["rows"][0].update(epochs_run=15, train_threads=1)
    assert comparison_table(results).loc[0, "training time"] == "10.0 min (15 epochs, 1 thread)"
    figure = comparison_figure(results)
    assert len(figure.data) == 3 and list(figure.data[1].y) == ["papercnn-fusion", "papercnn-heatmap-fusion"]
    assert list(figure.data[1].customdata) == ["plain", "heat"]
    assert list(figure.data[1].x) == [0.8, 0.81]
    assert np.allclose(figure.data[2].error_x.array, [0.1, 0.1]) and np.allclose(figure.data[2].error_x.arrayminus, [0.1, 0.1])
    assert comparison_figure({"rows": results["rows"][2:]}) is None


def test_cross_validation_note_prices_the_rows_not_cross_validated(bench) -> None:
    results = {"rows": [
        {"id": "a", "label": "A", "status": "done", "train_seconds": 3600, "metrics": {
            "accuracy": 0.7, "balanced_accuracy": 0.6, "melanoma_auroc": 0.8, "malignant_sens_at_80_spec": 0.5}},
        {"id": "b", "label": "B", "status": "done", "train_seconds": 1800,
         "cv": {"status": "done", "per_fold": {"0": {}}, "folds": 5}},
        {"id": "c", "label": "C", "status": "not trained"},
    ]}
    note = bench.cross_validation_note(results, 5)
    assert note.startswith("5-fold cross-validation ran for: B.") and "budget of one session): A." in note
    assert results["rows"][0]["cv"]["note"] == "not run: 5 more trainings, about 5.0 h on this CPU"
    assert comparison_table({"rows": results["rows"][:1]}).loc[0, "5-fold CV balanced accuracy"] == \
        results["rows"][0]["cv"]["note"]
    assert "cv" not in results["rows"][2]


def test_row_5_repeats_the_default_recipe(bench) -> None:
    card = {"training": {"backbone": "lite0", "freeze_stages": 0, "epochs": 12, "batch_size": 32, "optimizer": "adamw",
                         "lr": 0.0005, "weight_decay": 0.01, "schedule": "cosine", "warmup_epochs": 0.5,
                         "class_weights": "sqrt-inverse", "label_smoothing": 0.1, "patience": 12, "meta_dropout": 0.25,
                         "seed": 42, "out": "/elsewhere"}}
    args = bench.recipe_args(card)
    assert args[:4] == ["--backbone", "lite0", "--freeze-stages", "0"]
    assert "--label-smoothing" in args and args[args.index("--lr") + 1] == "0.0005"
    assert "--out" not in args and "--seed" not in args  # where and how it is run stays the study's
    from core.model.train import parse_args
    parsed = parse_args(["--name", "x", *args])
    assert (parsed.class_weights, parsed.epochs, parsed.patience) == ("sqrt-inverse", 12, 12)
    assert "--no-metadata" not in args
    assert bench.recipe_args({"training": {**card["training"], "no_metadata": True}})[-1] == "--no-metadata"
    del card["training"]["label_smoothing"]
    with pytest.raises(ValueError, match="label_smoothing"):
        bench.recipe_args(card)


def test_further_trainings_get_their_own_seeds_and_folders(bench, tmp_path) -> None:
    args = bench.parse_args(["--trainings", "3", "--seed", "42", "--work-dir", str(tmp_path / "w"),
                             "--weights-dir", str(tmp_path / "weights")])
    rows = {r.id: r for r in bench.ROWS}
    assert bench.row_seeds(args, rows["papercnn-fusion"]) == [42, 43, 44]
    assert bench.row_seeds(args, rows["resnet50-fusion"]) == [42]
    assert bench.bundle_dir(args, rows["lite0-fusion"], 42) == tmp_path / "weights" / "fusion-lite0"  # the committed one
    assert bench.bundle_dir(args, rows["lite0-fusion"], 43) == tmp_path / "w" / "bundles" / "lite0-fusion-seed43"
    assert bench.bundle_dir(args, rows["papercnn-fusion"], 42) == tmp_path / "w" / "bundles" / "papercnn-fusion"
    assert comparison_table({"rows": [{"label": "x", "status": "done", "metrics": {
        "accuracy": 0.7, "balanced_accuracy": 0.6, "melanoma_auroc": 0.8, "malignant_sens_at_80_spec": 0.5},
        "trainings": [{"seed": s, "balanced_accuracy": b} for s, b in ((42, 0.55), (43, 0.57), (44, 0.59))]}]}
    ).loc[0, "trainings (seeds)"] == "3: balanced accuracy 0.570 ± 0.020"


def test_rows_are_paired_with_the_default_image_by_image(bench) -> None:
    """A row that is the default model with its test rows in another order differs by exactly 0; a row
    that calls one more melanoma right is better by that much, paired, on the same lesions."""
    from core import config

    rng = np.random.default_rng(0)
    n = 60
    labels = np.repeat([4, 5], n // 2)  # mel, nv
    probs = rng.dirichlet(np.ones(7), n)
    probs[np.arange(n), labels] += rng.uniform(0, 1, n)  # mostly right
    probs /= probs.sum(1, keepdims=True)
    card = {"classes": list(config.CLASSES), "malignant": list(config.MALIGNANT), "melanoma": config.MELANOMA,
            "temperature": 1.0}
    ids = np.array([f"ISIC_{i:07d}" for i in range(n)])
    groups = np.arange(n) // 2
    reference = [bench.Scored(card, probs, labels, groups, ids)]
    perm = rng.permutation(n)
    same = [bench.Scored(card, probs[perm], labels[perm], groups[perm], ids[perm])]
    for d in bench.paired_with_reference("same", same, reference, 200):
        assert d["difference"] == 0 and d["ci95"] == [0.0, 0.0] and d["verdict"] == "tie"
    wrong = np.flatnonzero((probs.argmax(1) != labels) & (labels == 4))[0]
    better = probs.copy()
    better[wrong] = 0.0
    better[wrong, 4] = 1.0
    improved = bench.Scored(card, better, labels, groups, ids)
    result = {d["metric"]: d for d in bench.paired_with_reference("better", [improved], reference, 200)}
    assert result["balanced_accuracy"]["difference"] == pytest.approx(1 / (n // 2) / 2)  # one mel of 30, 2 classes
    assert result["balanced_accuracy"]["comparison"] == "better - lite0-fusion"
    assert result["balanced_accuracy"]["trainings"] == 1
    assert result["melanoma_auroc"]["difference"] >= 0
    # three trainings a side: each side is averaged over its trainings, and the training count is the fewer
    three = {d["metric"]: d for d in bench.paired_with_reference("better", [improved, reference[0], reference[0]],
                                                                  reference * 3, 200)}
    assert three["balanced_accuracy"]["difference"] == pytest.approx(result["balanced_accuracy"]["difference"] / 3)
    assert three["balanced_accuracy"]["trainings"] == 3
    with pytest.raises(ValueError, match="different test images"):
        bench.paired_with_reference("other", [bench.Scored(card, probs, labels, groups, np.roll(ids, 1) + "x")],
                                    reference, 10)


def test_the_difference_plot_words_ties_and_unconfirmed_differences() -> None:
    from core.figures.performance import difference_figure, verdict_of

    differences = [
        {"comparison": "a - ref", "metric": "balanced_accuracy", "difference": -0.1, "ci95": [-0.15, -0.05],
         "trainings": 1, "verdict": "unconfirmed"},
        {"comparison": "b - ref", "metric": "balanced_accuracy", "difference": 0.01, "ci95": [-0.02, 0.04],
         "trainings": 1, "verdict": "tie"},
        {"comparison": "given - withheld", "metric": "balanced_accuracy", "difference": 0.02, "ci95": [0.01, 0.03]},
    ]
    assert [verdict_of(d) for d in differences] == ["unconfirmed", "tie", "better"]
    trace = difference_figure(differences).data[0]
    assert list(trace.y) == ["a - ref", "b - ref", "given - withheld"]
    assert list(trace.text) == ["1 training each", "tie", ""]
    assert len(set(trace.marker.color)) == 3


def test_a_row_without_figures_keeps_none_from_an_earlier_run(bench) -> None:
    entry = {"id": "lite0-heatmap-fusion", "label": "row 5", "status": "done", "metrics": {"accuracy": 0.7},
             "bundle": "gone", "note": "old"}
    bench.without_figures(entry, "skipped", "Not trained: no promise.")
    assert entry == {"id": "lite0-heatmap-fusion", "label": "row 5", "status": "skipped", "note": "Not trained: no promise."}
