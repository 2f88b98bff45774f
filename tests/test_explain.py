"""Permutation importance, metadata SHAP, image SHAP and CAM faithfulness (core.explain.importance)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core import config
from core.data.metadata import MetadataEncoder
from core.errors import InputError
from core.explain.importance import (
    EXPLANATIONS_FILE,
    FIELDS,
    IMAGE_GROUP,
    MetadataGame,
    blurred_baselines,
    budgeted_mean,
    cam_faithfulness,
    case_metadata_shap,
    compute_global,
    exact_shapley,
    explain_split,
    feature_groups,
    image_shap,
    permutation_importance,
    read_explanations,
)
from core.model.bundle import load_bundle


@pytest.fixture(autouse=True)
def one_thread():
    """Timing-bound tests must not depend on how busy the machine's other cores are."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(tiny_bundle: Path):
    return load_bundle(tiny_bundle)


def toy_problem(rng: np.random.Generator, n: int = 400):
    """Label = whether metadata column 0 exceeds 0.5; nothing else matters."""
    meta = rng.random((n, 4)).astype(np.float32)
    image = rng.normal(size=(n, 3)).astype(np.float32)
    labels = (meta[:, 0] > 0.5).astype(int)

    def predict(img: np.ndarray, m: np.ndarray) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-20.0 * (m[:, 0] - 0.5)))
        return np.stack([1 - p, p], axis=1)

    return predict, image, meta, labels


def test_permutation_importance_finds_the_one_important_feature(rng: np.random.Generator) -> None:
    predict, image, meta, labels = toy_problem(rng)
    groups = {"important": [0], "noise": [1], "pair": [2, 3]}
    table = permutation_importance(predict, image, meta, labels, groups, positive=1, n_repeats=4, seed=0, n_boot=50)
    bacc = table[table["metric"] == "balanced_accuracy"].set_index("feature")
    assert bacc.loc["important", "baseline"] == pytest.approx(1.0)
    assert bacc.loc["important", "drop_mean"] > 0.3 and bacc.loc["important", "ci95_low"] > 0.2
    assert bool(bacc.loc["important", "measurable"])
    for other in ("noise", "pair", IMAGE_GROUP):
        assert bacc.loc[other, "drop_mean"] == pytest.approx(0.0)
        assert not bacc.loc[other, "measurable"]
    auc = table[table["metric"] == "melanoma_auroc"].set_index("feature")
    assert auc.loc["important", "drop_mean"] > 0.3
    assert set(table["kind"]) == {"image", "field"}


def test_permutation_importance_is_deterministic(rng: np.random.Generator) -> None:
    predict, image, meta, labels = toy_problem(rng)
    a = permutation_importance(predict, image, meta, labels, {"x": [0]}, 1, n_repeats=3, seed=7, n_boot=20)
    b = permutation_importance(predict, image, meta, labels, {"x": [0]}, 1, n_repeats=3, seed=7, n_boot=20)
    pd.testing.assert_frame_equal(a, b)


def test_feature_groups_are_whole_fields() -> None:
    names = MetadataEncoder().feature_names
    groups = feature_groups(names)
    assert set(groups) == {"age", "sex", "site"}
    assert [names[i] for i in groups["age"]] == ["age", "age_missing"]
    assert [names[i] for i in groups["sex"]] == ["sex_female", "sex_male", "sex_unknown"]
    assert all(names[i].startswith(("site_", "region_")) for i in groups["site"])


def test_exact_shapley_by_hand() -> None:
    # v(S) = 1*z0 + 2*z1 + 3*z2 + 4*z0*z1: the interaction is split evenly between players 0 and 1.
    def game(z: np.ndarray) -> np.ndarray:
        return (z @ np.array([1.0, 2.0, 3.0]) + 4.0 * z[:, 0] * z[:, 1])[:, None]

    values, base = exact_shapley(game, np.array([1.0, 1.0, 1.0]))
    np.testing.assert_allclose(values[:, 0], [3.0, 4.0, 3.0])
    assert base[0] == 0.0
    # A field that was not given is never in a coalition: its value is 0.
    values, _ = exact_shapley(game, np.array([1.0, 1.0, 0.0]))
    np.testing.assert_allclose(values[:, 0], [3.0, 4.0, 0.0])


def test_case_shap_is_efficient_and_matches_shap(tiny) -> None:
    model, card = tiny
    encoder = MetadataEncoder.from_dict(card["metadata"])
    game = MetadataGame(model, encoder)
    feats = torch.randn(1, model.head[-1].in_features - model.meta[0].out_features).numpy()
    case = case_metadata_shap(game, feats, 70, "male", "back", card["classes"])
    assert case.values.shape == (len(FIELDS), len(config.CLASSES))
    full = game(np.ones((1, 3)))[0]
    np.testing.assert_allclose(case.base + case.values.sum(axis=0), full, atol=1e-5)
    withheld = case_metadata_shap(game, feats, None, None, "back", card["classes"])
    np.testing.assert_allclose(withheld.values[:2], 0.0)
    import shap

    explainer = shap.explainers.Exact(game, shap.maskers.Independent(np.zeros((1, 3))))
    via_shap = case_metadata_shap(game, feats, 70, "male", "back", card["classes"], explainer=explainer)
    np.testing.assert_allclose(via_shap.values, case.values, atol=1e-6)


def test_image_shap_on_a_tiny_model(tiny) -> None:
    model, card = tiny
    torch.manual_seed(0)
    image = torch.randn(3, 128, 128)
    meta = torch.from_numpy(MetadataEncoder.from_dict(card["metadata"]).encode(50, "female", "face"))
    seen: list[float] = []
    result = image_shap(model, image, meta, [4, 5], max_samples=16, time_budget=1e9, chunk=8, progress=seen.append)
    assert result.maps.shape == (2, 128, 128)
    assert np.isfinite(result.maps).all() and np.abs(result.maps).sum() > 0
    assert result.samples == 16 and not result.stopped_by_budget
    assert seen[-1] == pytest.approx(1.0)


class FakeWork:
    """A clock and a step whose n samples "take" setup-free `cost * n * slowdown()` fake seconds."""

    def __init__(self, cost: float, slowdown=lambda: 1.0) -> None:
        self.now, self.cost, self.slowdown, self.steps = 0.0, cost, slowdown, []

    def clock(self) -> float:
        return self.now

    def step(self, n: int, index: int) -> np.ndarray:
        self.now += self.cost * n * self.slowdown()
        self.steps.append(n)
        return np.full(3, float(index))


def test_budgeted_mean_stops_inside_the_budget() -> None:
    work = FakeWork(cost=0.5)  # 0.5 s a sample, 10 s budget, 1 s already gone on setup
    mean, done = budgeted_mean(work.step, 10_000, 10.0, start=-1.0, chunk=8, first=2, clock=work.clock)
    assert work.now - (-1.0) <= 10.0
    assert work.steps[0] == 2 and max(work.steps) <= 8
    assert done == sum(work.steps) and done >= 10  # at least 2/3 of the 18 samples that could fit
    weights = np.array(work.steps, dtype=float)
    assert mean == pytest.approx(np.full(3, (weights * np.arange(len(weights))).sum() / weights.sum()))


def test_budgeted_mean_keeps_the_budget_when_steps_vary() -> None:
    """Steps up to 1.4x slower per sample than the first, at random: the budget still holds."""
    rng = np.random.default_rng(0)
    for _ in range(50):
        work = FakeWork(cost=0.3, slowdown=lambda: rng.uniform(1.0, 1.4))
        budgeted_mean(work.step, 10_000, 15.0, start=0.0, chunk=8, clock=work.clock)
        assert work.now <= 15.0


def test_budgeted_mean_always_runs_the_first_step_and_stops_at_max_samples() -> None:
    late = FakeWork(cost=1.0)
    _, done = budgeted_mean(late.step, 100, 5.0, start=-10.0, chunk=8, first=2, clock=late.clock)
    assert done == 2 and late.steps == [2]  # the budget was gone before it began: one step, no more
    ample = FakeWork(cost=0.001)
    seen: list[float] = []
    _, done = budgeted_mean(ample.step, 20, 1000.0, start=0.0, chunk=8, first=2, clock=ample.clock, progress=seen.append)
    assert done == 20 and ample.steps == [2, 8, 8, 2] and seen[-1] == pytest.approx(1.0)


def test_image_shap_counts_the_whole_wait(tiny) -> None:
    """The budget runs from `start` (the click): setup and steps count, and the result says so."""
    model, _ = tiny
    image, meta = torch.randn(3, 128, 128), torch.zeros(model.meta_dim)
    ticks = iter(range(1000))

    def clock() -> float:  # one fake second per reading
        return float(next(ticks))

    late = image_shap(model, image, meta, [0], max_samples=100, time_budget=5.0, chunk=2, clock=clock, start=-10.0)
    assert late.samples == 2 and late.stopped_by_budget and late.seconds > 5.0
    assert "over the budget" in late.summary(5.0)
    ample = image_shap(model, image, meta, [0], max_samples=4, time_budget=1000.0, chunk=2, clock=clock)
    assert ample.samples == 4 and not ample.stopped_by_budget and ample.setup_seconds >= 1.0
    assert ample.summary(1000.0).startswith("4 samples per class in")


def test_blurred_baselines_match_one_2d_blur() -> None:
    """The two 1-D passes give what one 2-D Gaussian kernel gives (the slow way it used to be done)."""
    from torchvision.transforms.v2.functional import gaussian_blur

    image = torch.randn(3, 32, 40, generator=torch.Generator().manual_seed(0))
    fast = blurred_baselines(image, (3.0, 24.0))
    for out, sigma, k in zip(fast, (3.0, 24.0), (19, 31)):  # 24 * 6 + 1 capped to the image's 31 rows
        torch.testing.assert_close(out, gaussian_blur(image, [k, k], [sigma, sigma]), atol=1e-5, rtol=0)


def test_image_shap_refuses_no_classes(tiny) -> None:
    model, _ = tiny
    with pytest.raises(InputError):
        image_shap(model, torch.randn(3, 128, 128), torch.zeros(model.meta_dim), [])


def test_cam_faithfulness_scores(tiny) -> None:
    model, card = tiny
    meta = torch.zeros(model.meta_dim)
    cams, table = cam_faithfulness(model, torch.randn(3, 128, 128), meta, 4, ["Grad-CAM", "EigenCAM"], percentiles=(50,))
    assert set(cams) == {"Grad-CAM", "EigenCAM"}
    assert cams["Grad-CAM"].shape == (128, 128)
    assert list(table["method"]) == ["Grad-CAM", "EigenCAM"]
    assert np.isfinite(table[["road_combined", "confidence_change"]].to_numpy()).all()


def synthetic_split(rng: np.random.Generator, n: int = 40) -> tuple[pd.DataFrame, list[np.ndarray]]:
    labels = np.arange(n) % len(config.CLASSES)
    frame = pd.DataFrame({
        "image_id": [f"img{i}" for i in range(n)], "group_id": [f"les{i // 2}" for i in range(n)],
        "dx": [config.CLASSES[i] for i in labels], "label": labels,
        "age": rng.choice([35.0, 50.0, 70.0, np.nan], n), "sex": rng.choice(["male", "female", "unknown"], n),
        "site": rng.choice(["back", "face", "unknown"], n),
    })
    frame["age_missing"] = frame["age"].isna()
    images = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(n)]
    return frame, images


def test_compute_global_and_read_back(tiny, tiny_bundle: Path, rng: np.random.Generator, tmp_path: Path) -> None:
    model, card = tiny
    frame, images = synthetic_split(rng)
    result = compute_global(model, card, frame, images, n_repeats=2, shap_rows=10, use_shap=False)
    rows = pd.DataFrame(result["permutation"]["rows"])
    assert {IMAGE_GROUP, "age", "sex", "site"} == set(rows["feature"])
    shap_mel = result["shap"]["outputs"]["melanoma"]
    assert set(shap_mel["mean_abs"]) == set(FIELDS)
    assert len(shap_mel["beeswarm"]["age"]["shap"]) == 10
    assert result["shap"]["n"] == 10
    # Stored next to a copy of the bundle, it reads back; for other weights it is refused.
    bundle = tmp_path / "b"
    bundle.mkdir()
    for name in ("model.safetensors", "model_card.json"):
        (bundle / name).write_bytes((tiny_bundle / name).read_bytes())
    assert read_explanations(bundle) is None
    (bundle / EXPLANATIONS_FILE).write_text(json.dumps(result))
    assert read_explanations(bundle)["n_images"] == 40
    (bundle / EXPLANATIONS_FILE).write_text(json.dumps({**result, "sha256": "0" * 64}))
    with pytest.raises(InputError):
        read_explanations(bundle)


def test_explain_split_names_each_stage(tiny, tmp_path: Path) -> None:
    """What the command and the page's Recompute run: one split of a HAM10000 folder, each stage reported."""
    from PIL import Image

    model, card = tiny
    (tmp_path / "images").mkdir()
    rows, splits = ["lesion_id,image_id,dx,dx_type,age,sex,localization"], ["image_id,split"]
    for i in range(28):
        dx = config.CLASSES[i % len(config.CLASSES)]
        rows.append(f"L{i},I{i},{dx},histo,{30 + i},{'male' if i % 2 else 'female'},back")
        splits.append(f"I{i},{'val' if i < 14 else 'train'}")
        Image.fromarray(np.full((30, 40, 3), 8 * i, dtype=np.uint8)).save(tmp_path / "images" / f"I{i}.jpg")
    (tmp_path / "HAM10000_metadata.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "split.csv").write_text("\n".join(splits) + "\n")
    stages: list[str] = []
    result = explain_split(model, card, tmp_path, tmp_path / "split.csv", "val",
                           progress=lambda f, what: stages.append(what), n_repeats=1, shap_rows=5, use_shap=False)
    assert result["split"] == "val" and result["n_images"] == 14
    assert list(dict.fromkeys(stages)) == ["reading the dataset", "extracting image features", "permutation importance",
                                           "metadata SHAP"]
