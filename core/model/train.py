"""Train a fusion (or image-only) model and write its bundle.

    python -m core.model.train --name fusion-lite0
    python -m core.model.train --name image-lite0 --no-metadata
    torchrun --nproc_per_node 2 -m core.model.train ...      (DistributedDataParallel)

A checkpoint is written to --work-dir every epoch; `--resume` continues from it. After the
last epoch the best epoch (lowest validation loss) is restored, the calibration, decision rule
and referral thresholds are fitted on the validation split (core.model.calibrate), the test split is
evaluated, and the bundle (model.safetensors + model_card.json) is written.
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import random
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from core import config
from core.data.datasets import LesionDataset, prepare, split_sha256, subset
from core.data.metadata import MetadataEncoder
from core.data.transforms import eval_transform, train_transform
from core.errors import InputError
from core.model.bundle import save_bundle
from core.model.calibrate import fit_on_validation
from core.model.evaluate import eval_dataset, evaluate_model, summary_lines
from core.model.networks import BACKBONES, build_model

log = logging.getLogger("core.model.train")
CHECKPOINT = "checkpoint.pt"
HISTORY = "history.csv"
#: Arguments that may change between a run and its resume: they change speed, or only when the run
#: stops (patience), never the path the weights take up to there.
RESUMABLE_CHANGES = frozenset({"resume", "threads", "workers", "bootstrap", "stop_after", "patience"})


def seed_everything(seed: int) -> torch.Generator:
    """One seed for python, numpy and torch; returns the DataLoader's generator."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default=config.DEFAULT_MODEL, help="bundle name: weights/<name>")
    p.add_argument("--data", type=Path, default=config.DEFAULT_DATA_DIR / "ham10000", help="HAM10000 folder")
    p.add_argument("--split-file", type=Path, default=config.SPLITS_DIR / "ham10000.csv")
    p.add_argument("--backbone", default="lite0", choices=list(BACKBONES))
    p.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="default: the backbone's")
    p.add_argument("--no-metadata", action="store_true", help="image-only (metadata branch off)")
    p.add_argument("--meta-dropout", type=float, default=0.25, help="chance of withholding each metadata field")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--optimizer", default="adam", choices=["adam", "adamw"])
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="cosine", choices=["cosine", "constant"])
    p.add_argument("--warmup-epochs", type=float, default=0.5)
    p.add_argument("--class-weights", default="inverse", choices=["inverse", "sqrt-inverse", "none"],
                   help="loss weights: w_i = 1/n_i (normalised), its square root, or none")
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--patience", type=int, default=4, help="early stopping on validation loss")
    p.add_argument("--freeze-stages", type=int, default=0, help="freeze the stem and the first n-1 blocks")
    p.add_argument("--target-sensitivity", type=float, default=0.90, help="for the referral thresholds")
    p.add_argument("--seed", type=int, default=config.SEED)
    p.add_argument("--out", type=Path, help="bundle folder (default weights/<name>)")
    p.add_argument("--work-dir", type=Path, help="checkpoints and history (default runs/<name>)")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="leave once N epochs are done, without writing the bundle (continue later with --resume)")
    p.add_argument("--limit", type=int, help="use only this many images (stratified; for smoke tests)")
    p.add_argument("--max-steps", type=int, help="stop each epoch after this many batches (smoke tests)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--workers", type=int, default=0,
                   help="DataLoader worker processes (0, the fastest on a 2-core CPU; 4-8 on a GPU machine)")
    p.add_argument("--bootstrap", type=int, default=1000)
    args = p.parse_args(argv)
    args.out = args.out or config.WEIGHTS_DIR / args.name
    args.work_dir = args.work_dir or config.REPO_ROOT / "runs" / args.name
    return args


def check_args(args: argparse.Namespace) -> None:
    """Fail in a second, not an hour in."""
    if not args.data.exists():
        raise InputError(f"The data folder {args.data} does not exist.")
    for name in ("epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name.replace('_', '-')} must be at least 1.")
    if args.workers < 0:
        raise InputError("--workers must be 0 or more.")
    if not 0 <= args.meta_dropout <= 1:
        raise InputError("--meta-dropout must be between 0 and 1.")
    if args.lr <= 0:
        raise InputError("--lr must be positive.")


def check_data(frame: pd.DataFrame) -> None:
    """Every class must have training images, and val must not be empty."""
    train = frame[frame["split"] == "train"]
    counts = train["dx"].value_counts()
    missing = [c for c in config.CLASSES if counts.get(c, 0) == 0]
    if missing:
        raise InputError(f"No training images for class(es) {', '.join(missing)}.")
    if not (frame["split"] == "val").any():
        raise InputError("The validation split is empty.")


def class_weights(labels: np.ndarray, mode: str) -> torch.Tensor:
    counts = np.bincount(labels, minlength=len(config.CLASSES)).astype(float)
    if mode == "none":
        w = np.ones_like(counts)
    else:
        w = 1.0 / np.maximum(counts, 1.0)
        w = np.sqrt(w) if mode == "sqrt-inverse" else w
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def lr_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    if step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def args_record(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments as plain JSON-able values (for the checkpoint and the card)."""
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


def check_resume(saved: dict[str, Any], args: argparse.Namespace) -> None:
    """Refuse to resume a run with different arguments: the schedule and the data depend on them."""
    now = args_record(args)
    changed = sorted(k for k in set(saved) | set(now) if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
    if changed:
        diffs = "; ".join(f"--{k.replace('_', '-')} was {saved.get(k)!r}, now {now.get(k)!r}" for k in changed)
        raise InputError(f"The checkpoint in {args.work_dir} was written with other arguments ({diffs}). "
                         "Resume with the same arguments, or choose another --work-dir.")


def rng_state(generator: torch.Generator, dataset: LesionDataset) -> dict[str, Any]:
    """Every random stream the training loop draws from, so a resume continues them exactly."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(), "loader": generator.get_state(),
            "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss),
            "python": random.getstate(), "meta_dropout": dataset.rng.bit_generator.state,
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def restore_rng(state: dict[str, Any], generator: torch.Generator, dataset: LesionDataset) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])
    dataset.rng.bit_generator.state = state["meta_dropout"]
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def setup_distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        rank = dist.get_rank()
        device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}") if backend == "nccl" else torch.device("cpu")
        return rank, world, device
    return 0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, criterion: nn.Module, device: torch.device) -> tuple[float, float, float]:
    model.eval()
    total, loss_sum = 0, 0.0
    preds, labels = [], []
    for image, meta, label in loader:
        image, meta, label = image.to(device), meta.to(device), label.to(device)
        logits = model(image, meta)
        loss_sum += criterion(logits, label).item() * len(label)
        total += len(label)
        preds.append(logits.argmax(1).cpu())
        labels.append(label.cpu())
    p, y = torch.cat(preds).numpy(), torch.cat(labels).numpy()
    return loss_sum / total, float((p == y).mean()), float(balanced_accuracy_score(y, p))


def build_card(args: argparse.Namespace, encoder: MetadataEncoder, size: tuple[int, int], frame: pd.DataFrame,
               report: Any, history: list[dict], best_epoch: int) -> dict[str, Any]:
    counts = {s: frame.loc[frame["split"] == s, "dx"].value_counts().reindex(config.CLASSES, fill_value=0).to_dict()
              for s in ("train", "val", "test")}
    train_cfg = args_record(args)
    return {
        "name": args.name,
        "version": datetime.now(timezone.utc).strftime("%Y.%m.%d"),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": "7-class dermoscopic lesion classification (HAM10000 diagnoses)",
        "intended_use": (
            "Decision support for trained clinicians examining dermoscopic images of pigmented skin lesions. "
            "Not a screening tool and not a stand-alone diagnosis."
        ),
        "classes": list(config.CLASSES),
        "class_names": config.CLASS_NAMES,
        "malignant": list(config.MALIGNANT),
        "melanoma": config.MELANOMA,
        "input": {
            "size": list(size), "mean": list(config.IMAGENET_MEAN), "std": list(config.IMAGENET_STD),
            "fit": "pad",
            "preprocessing": "whole image (no crop), portrait turned landscape, padded (black) to the aspect ratio "
                             "of size if it differs, resized to size (H, W), scaled to [0,1], normalised by mean/std",
        },
        "metadata": encoder.to_dict(),
        "model": {
            "backbone": args.backbone, "use_metadata": not args.no_metadata,
            "head_hidden": 0 if args.backbone == "papercnn" else 256,
            "freeze_stages": args.freeze_stages, "pretrained": "ImageNet" if args.backbone != "papercnn" else None,
        },
        "training": {**train_cfg, "best_epoch": best_epoch, "epochs_run": len(history)},
        "data": {
            "source": config.HAM10000_SOURCE,
            "licence": config.DATA_LICENCE,
            "split_method": "lesion-grouped, class-stratified (StratifiedGroupKFold); no lesion_id in two splits",
            "split_file": str(Path(args.split_file).name),
            "split_sha256": split_sha256(args.split_file),
            "counts": counts,
            "cleaning": report.as_dict(),
        },
        "history": history,
    }


def train(args: argparse.Namespace) -> Path | None:
    rank, world, device = setup_distributed()
    main_proc = rank == 0
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = seed_everything(args.seed + rank)
    check_args(args)
    frame, images, report = prepare(args.data, args.split_file, args.seed, args.limit, create_split=True)
    check_data(frame)

    encoder = MetadataEncoder.fit(frame.loc[(frame["split"] == "train") & ~frame["age_missing"], "age"])
    model, backbone = build_model(args.backbone, encoder.dim, len(config.CLASSES),
                                  use_metadata=not args.no_metadata, freeze_stages=args.freeze_stages)
    size = tuple(args.image_size) if args.image_size else backbone.input_size
    mean, std = config.IMAGENET_MEAN, config.IMAGENET_STD
    train_f, train_i = subset(frame, images, frame["split"] == "train")
    val_f, val_i = subset(frame, images, frame["split"] == "val")
    train_ds = LesionDataset(train_f, train_i, encoder, train_transform(size, mean, std),
                             meta_dropout=0.0 if args.no_metadata else args.meta_dropout, seed=args.seed + rank)
    val_ds = LesionDataset(val_f, val_i, encoder, eval_transform(size, mean, std))
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, seed=args.seed) if world > 1 else None
    cuda = device.type == "cuda"
    loader_opts: dict[str, Any] = {"num_workers": args.workers, "pin_memory": cuda,
                                   "persistent_workers": args.workers > 0}
    train_dl = DataLoader(train_ds, batch_size=args.batch_size, shuffle=sampler is None, sampler=sampler,
                          generator=generator, drop_last=len(train_ds) > args.batch_size, **loader_opts)
    val_dl = DataLoader(val_ds, batch_size=64, **loader_opts)

    model.to(device, memory_format=torch.channels_last)  # measured here: twice the CPU training speed
    net = DistributedDataParallel(model) if world > 1 else model
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = torch.optim.AdamW if args.optimizer == "adamw" else torch.optim.Adam
    optimizer = opt_cls(params, lr=args.lr, weight_decay=args.weight_decay)
    criterion = nn.CrossEntropyLoss(weight=class_weights(train_f["label"].to_numpy(), args.class_weights).to(device),
                                    label_smoothing=args.label_smoothing)
    steps_per_epoch = min(len(train_dl), args.max_steps or len(train_dl))
    total_steps = steps_per_epoch * args.epochs
    warmup = int(args.warmup_epochs * steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, warmup, args.schedule))

    args.work_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.work_dir / CHECKPOINT
    history: list[dict] = []
    best = {"val_loss": float("inf"), "epoch": -1, "state": None}
    start_epoch, stale = 0, 0
    if args.resume and ckpt_path.is_file():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        check_resume(ckpt["args"], args)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        history, start_epoch, stale = ckpt["history"], ckpt["epoch"] + 1, ckpt["stale"]
        best = {"val_loss": ckpt["best_val_loss"], "epoch": ckpt["best_epoch"], "state": ckpt["best_state"]}
        restore_rng(ckpt["rng"], generator, train_ds)
        if history:
            history[-1]["resumed_after"] = True
        if main_proc:
            log.info("Resumed from %s at epoch %d", ckpt_path, start_epoch + 1)

    for epoch in range(start_epoch, args.epochs):
        if stale >= args.patience:
            break
        if args.stop_after is not None and epoch >= args.stop_after:
            log.info("Stopped after epoch %d as asked; resume with --resume.", epoch)
            if world > 1:
                dist.destroy_process_group()
            return None
        if sampler is not None:
            sampler.set_epoch(epoch)
        net.train()
        t0, seen, loss_sum, correct = time.time(), 0, 0.0, 0
        bar = tqdm(train_dl, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{args.epochs}", disable=not main_proc)
        for step, (image, meta, label) in enumerate(bar):
            if step >= steps_per_epoch:
                break
            image, meta, label = image.to(device, non_blocking=cuda), meta.to(device), label.to(device)
            image = image.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                logits = net(image, meta)
                loss = criterion(logits.float(), label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            seen += len(label)
            loss_sum += loss.item() * len(label)
            correct += (logits.argmax(1) == label).sum().item()
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        val_loss, val_acc, val_bacc = validate(model, val_dl, criterion, device)
        seconds = time.time() - t0
        row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
               "val_loss": val_loss, "val_accuracy": val_acc, "val_balanced_accuracy": val_bacc,
               "lr": optimizer.param_groups[0]["lr"], "seconds": round(seconds, 1),
               "images_per_second": round(seen * world / seconds, 1), "resumed_after": False}
        history.append(row)
        if val_loss < best["val_loss"]:
            best = {"val_loss": val_loss, "epoch": epoch + 1,
                    "state": {k: v.detach().clone() for k, v in model.state_dict().items()}}
            stale = 0
        else:
            stale += 1
        if main_proc:
            log.info("epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
            with open(args.work_dir / HISTORY, "w", newline="") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(row))
                writer.writeheader()
                writer.writerows(history)
            tmp = ckpt_path.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "history": history, "epoch": epoch, "stale": stale,
                        "best_val_loss": best["val_loss"], "best_epoch": best["epoch"], "best_state": best["state"],
                        "rng": rng_state(generator, train_ds), "args": args_record(args)}, tmp)
            tmp.replace(ckpt_path)

    if world > 1:
        dist.barrier()
    if not main_proc:
        dist.destroy_process_group()
        return args.out
    model.load_state_dict(best["state"])
    model.eval()
    card = build_card(args, encoder, size, frame, report, history, best["epoch"])
    card = finalise(model, card, frame, images, args)
    out = save_bundle(model, card, args.out)
    log.info("Wrote %s", out)
    if world > 1:
        dist.destroy_process_group()
    return out


def finalise(model: nn.Module, card: dict[str, Any], frame: pd.DataFrame, images: list[np.ndarray],
             args: argparse.Namespace) -> dict[str, Any]:
    """Calibration, decision rule and referral thresholds from validation, then test metrics."""
    model.cpu()
    val_f, val_i = subset(frame, images, frame["split"] == "val")
    card = fit_on_validation(model, card, val_f, val_i, args.target_sensitivity)
    test_f, test_i = subset(frame, images, frame["split"] == "test")
    metrics = evaluate_model(model, card, eval_dataset(card, test_f, test_i), test_f, args.bootstrap)
    metrics["split"] = "test"
    card["metrics"] = metrics
    log.info("Test metrics:\n%s", "\n".join(summary_lines(metrics)))
    return card


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(argv)
    try:
        train(args)
    except InputError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
