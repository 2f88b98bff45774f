"""End-to-end training on a few real images: smoke run, resume, fail-fast checks, torchrun."""
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
import torch

from core import config
from core.inference import Predictor
from core.model import train
from core.model.bundle import read_card

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
    assert {"all_inputs", "metadata_withheld", "centre_crop", "calibration"} <= set(card["metrics"])
    assert 0.05 <= card["calibration"]["temperature"] <= 20 and card["input"]["flip_average"] is True
    assert card["data"]["split_sha256"] and 0.0 <= card["calibration"]["alpha"] <= 1.0
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    assert list(history.columns[:6]) == ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                                         "val_balanced_accuracy"]
    result = Predictor.load(tmp_path / "bundle").predict(real_image, age=50, sex="male", site="back")
    assert sum(result.probs.values()) == pytest.approx(1.0, abs=1e-5)



def _final_weights(run_dir):
    return torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)["model"]


def test_stop_and_resume_gives_bit_identical_weights(tmp_path, ham_dir):
    """An interrupted run, resumed, must equal an uninterrupted one: every RNG stream is restored."""
    straight = args_for(tmp_path / "a", ham_dir, "--max-steps", "2", "--epochs", "2", "--bootstrap", "5")
    assert train.main(straight) == 0
    split = args_for(tmp_path / "b", ham_dir, "--max-steps", "2", "--epochs", "2", "--bootstrap", "5")
    assert train.main([*split, "--stop-after", "1"]) == 0
    assert not (tmp_path / "b" / "bundle").exists()
    assert train.main([*split, "--resume"]) == 0
    a, b = _final_weights(tmp_path / "a" / "run"), _final_weights(tmp_path / "b" / "run")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = read_card(tmp_path / "b" / "bundle")["history"]
    assert [row["epoch"] for row in history] == [1, 2] and history[0]["resumed_after"] is True


def test_resume_with_other_arguments_is_refused(tmp_path, ham_dir, caplog):
    assert train.main([*args_for(tmp_path, ham_dir, "--max-steps", "1", "--epochs", "2"), "--stop-after", "1"]) == 0
    assert train.main([*args_for(tmp_path, ham_dir, "--max-steps", "1", "--epochs", "3"), "--resume"]) == 2
    assert "--epochs was 2, now 3" in caplog.text


def test_training_with_worker_processes(tmp_path, ham_dir):
    assert train.main(args_for(tmp_path, ham_dir, "--max-steps", "2", "--workers", "2", "--bootstrap", "5")) == 0
    assert read_card(tmp_path / "bundle")["history"][0]["images_per_second"] > 0


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
           "-m", "core.model.train", *args_for(tmp_path, ham_dir, "--max-steps", "2")]
    done = subprocess.run(cmd, cwd=config.REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    card = read_card(tmp_path / "bundle")
    assert card["training"]["epochs_run"] == 1
