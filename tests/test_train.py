"""End-to-end training on a few real images: smoke run, resume, fail-fast checks, torchrun."""
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from core import config, train
from core.bundle import read_card
from core.inference import Predictor

COMMON = ["--limit", "32", "--epochs", "1", "--batch-size", "8", "--freeze-stages", "3",
          "--bootstrap", "20", "--threads", "1"]


def args_for(tmp_path, ham_dir, *extra):
    return ["--name", "smoke", "--data", str(ham_dir), "--split-file", str(config.SPLITS_DIR / "ham10000.csv"),
            "--out", str(tmp_path / "bundle"), "--work-dir", str(tmp_path / "run"), *COMMON, *extra]


def test_one_epoch_smoke_training_writes_a_working_bundle(tmp_path, ham_dir, real_image):
    assert train.main(args_for(tmp_path, ham_dir, "--max-steps", "3")) == 0
    card = read_card(tmp_path / "bundle")
    assert card["data"]["licence"] == "CC BY-NC 4.0" and "lesion-grouped" in card["data"]["split_method"]
    assert card["training"]["epochs_run"] == 1 and len(card["history"]) == 1
    assert {"all_inputs", "metadata_withheld", "calibration"} <= set(card["metrics"])
    assert 0.05 <= card["temperature"] <= 20
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(history.columns[:6]) == ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                                         "val_balanced_accuracy"]
    result = Predictor.load(tmp_path / "bundle").predict(real_image, age=50, sex="male", site="back")
    assert sum(result.probs.values()) == pytest.approx(1.0, abs=1e-5)

    # resume: a second run with more epochs continues from the checkpoint instead of starting over
    assert train.main(args_for(tmp_path, ham_dir, "--max-steps", "3", "--epochs", "2", "--resume")) == 0
    assert [row["epoch"] for row in read_card(tmp_path / "bundle")["history"]] == [1, 2]


def test_image_only_switch(tmp_path, ham_dir):
    assert train.main(args_for(tmp_path, ham_dir, "--max-steps", "1", "--no-metadata")) == 0
    card = read_card(tmp_path / "bundle")
    assert card["model"]["use_metadata"] is False and "metadata_withheld" not in card["metrics"]


def test_fails_fast_on_a_wrong_path(tmp_path, caplog):
    assert train.main(["--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")]) == 2
    assert "does not exist" in caplog.text


def test_fails_fast_on_a_missing_column(tmp_path, caplog):
    (tmp_path / "HAM10000_metadata.csv").write_text("lesion_id,image_id,dx\nA,B,nv\n")
    assert train.main(["--data", str(tmp_path), "--split-file", str(tmp_path / "s.csv"), "--out", str(tmp_path / "b")]) == 2
    assert "missing the column" in caplog.text


def test_fails_fast_when_a_class_has_no_images(tmp_path, ham_dir, caplog):
    data = tmp_path / "ham"
    data.mkdir()
    meta = pd.read_csv(ham_dir / "HAM10000_metadata.csv")
    meta = meta[meta["dx"] != "df"].groupby("dx").head(12)
    meta.to_csv(data / "HAM10000_metadata.csv", index=False)
    (data / "images").mkdir()
    for image_id in meta["image_id"]:
        shutil.copy(ham_dir / "images" / f"{image_id}.jpg", data / "images")
    code = train.main(["--data", str(data), "--split-file", str(tmp_path / "s.csv"), "--out", str(tmp_path / "b"),
                       "--work-dir", str(tmp_path / "run")])
    assert code == 2 and "No training images for class(es) df" in caplog.text


def test_torchrun_two_processes_on_cpu(tmp_path, ham_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "core.train", *args_for(tmp_path, ham_dir, "--max-steps", "2")]
    done = subprocess.run(cmd, cwd=config.REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    card = read_card(tmp_path / "bundle")
    assert card["training"]["epochs_run"] == 1
