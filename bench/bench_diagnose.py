"""Diagnose-page latency on 2 CPU threads: an uploaded 600x450 JPEG -> probabilities, and + one Grad-CAM.

    python bench/bench_diagnose.py [--bundle weights/fusion-lite0] [--runs 30]

Times the page's own pipeline (core.clinic.diagnose: decode once, preprocess once, one forward pass
giving the checks' features and the calibrated prediction, with flip averaging when the card
says so; then Grad-CAM and the three panels), the model loaded once per process as the app's
cached loader does. In the same run: the pipeline as it was before the one-pass change (the
OOD check's own forward, then a second preprocessing and forward for the prediction), and the
same pipeline with a ResNet-50 backbone (random weights: only its speed matters here).
Targets: median under 100 ms to probabilities, under 300 ms with one Grad-CAM.
"""
from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core import config  # noqa: E402
from core.clinic.diagnose import analyse, cam_map, decode  # noqa: E402
from core.clinic.ood import OODModel, image_features  # noqa: E402
from core.data.metadata import MetadataEncoder  # noqa: E402
from core.explain import heatmap  # noqa: E402
from core.inference import Predictor  # noqa: E402
from core.model.bundle import read_card, save_bundle  # noqa: E402
from core.model.networks import build_model  # noqa: E402

META = {"age": 55, "sex": "male", "site": "back"}


def upload_jpeg() -> bytes:
    """A 600x450 JPEG like a camera's export: a real HAM10000 image upscaled, or a synthetic one."""
    real = config.DEFAULT_DATA_DIR / "ham10000" / "images" / "ISIC_0024306.jpg"
    if real.is_file():
        img = Image.open(real).convert("RGB").resize((600, 450), Image.BICUBIC)
    else:
        rng = np.random.default_rng(0)
        img = Image.fromarray(np.clip(rng.normal((200, 150, 130), 25, (450, 600, 3)), 0, 255).astype(np.uint8))
    out = io.BytesIO()
    img.save(out, "JPEG", quality=92)
    return out.getvalue()


def median_ms(fn: Callable[[], object], runs: int, warmup: int = 3) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), float(np.percentile(times, 90))


def resnet_bundle(reference: Path, out: Path) -> Path:
    """The reference card with a ResNet-50 backbone (random weights), OOD statistics fitted for it, no gate."""
    card = read_card(reference)
    encoder = MetadataEncoder.from_dict(card["metadata"])
    torch.manual_seed(0)
    model, _ = build_model("resnet50", encoder.dim, len(card["classes"]), pretrained=False, head_hidden=256)
    model.eval()
    spec = {**card["model"], "backbone": "resnet50", "head_hidden": 256, "pretrained": "none (benchmark only)"}
    card = {**card, "name": "resnet50-benchmark", "model": spec}
    card.pop("ood", None)
    card.pop("gate", None)  # fitted for Lite0's features; the ResNet row runs without the input gate
    predictor = Predictor(model, card)
    rng = np.random.default_rng(0)
    images = torch.stack([predictor.image_tensor(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)) for _ in range(12)])
    ood = OODModel.fit(image_features(model, images), k=8)
    ood.calibrate(image_features(model, images))
    card["ood"] = ood.to_dict("benchmark only: random images")
    return save_bundle(model, card, out)


def bench(bundle: Path, data: bytes, runs: int) -> dict[str, float]:
    start = time.perf_counter()
    predictor = Predictor.load(bundle)  # once per process, as ui.loaders.get_predictor caches it
    load_ms = (time.perf_counter() - start) * 1000

    def probabilities() -> object:
        upload = decode(data, "upload.jpg", predictor.encoder.accepted_sites)
        return analyse(predictor, upload, **META).prediction.probs

    def with_gradcam() -> object:
        upload = decode(data, "upload.jpg", predictor.encoder.accepted_sites)
        case = analyse(predictor, upload, **META)
        cam = cam_map(predictor, case, case.prediction.top, "Grad-CAM")
        return heatmap.panels(case.array, cam, 0.4)

    def two_passes() -> object:  # before: the checks' forward, then decode, preprocess and forward again
        upload = decode(data, "upload.jpg", predictor.encoder.accepted_sites)
        image_features(predictor.model, predictor.image_tensor(upload.image)[None])
        return predictor.predict(upload.image, **META).probs

    b50, _ = median_ms(two_passes, runs)
    p50, p90 = median_ms(probabilities, runs)
    c50, c90 = median_ms(with_gradcam, runs)
    return {"load": load_ms, "before": b50, "p50": p50, "p90": p90, "c50": c50, "c90": c90,
            "ood": float("ood" in predictor.card), "backbone": predictor.card["model"]["backbone"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = os.environ.get("DERMO_MODEL_DIR", str(config.WEIGHTS_DIR / config.DEFAULT_MODEL))
    parser.add_argument("--bundle", type=Path, default=Path(default))
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = upload_jpeg()
    print(f"upload: 600x450 JPEG, {len(data) / 1024:.0f} KB; torch threads: {torch.get_num_threads()}; "
          f"{args.runs} timed runs after 3 warm-up runs")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [(args.bundle.name, bench(args.bundle, data, args.runs)),
                ("ResNet-50 (same pipeline)", bench(resnet_bundle(args.bundle, Path(tmp) / "r50"), data, args.runs))]
    print(f"{'model':28s} {'backbone':9s} {'load ms':>8s} {'two-pass p50':>13s} {'probs p50':>10s} {'p90':>7s} "
          f"{'+Grad-CAM p50':>14s} {'p90':>7s}  OOD")
    for name, r in rows:
        print(f"{name:28s} {r['backbone']:9s} {r['load']:8.0f} {r['before']:13.1f} {r['p50']:10.1f} {r['p90']:7.1f} "
              f"{r['c50']:14.1f} {r['c90']:7.1f}  {'yes' if r['ood'] else 'no'}")
    print("two-pass: the pipeline before the one-pass change (the checks' own forward, then a second one); "
          "probs: one pass (both with the card's flip averaging)")
    main_row = rows[0][1]
    verdict = main_row["p50"] < 100 and main_row["c50"] < 300
    print(f"targets (p50 < 100 ms to probabilities, < 300 ms with Grad-CAM) for {rows[0][0]}: "
          f"{'met' if verdict else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
