"""The one-case PDF report (fpdf2), and the decision-support wording shared with the page.

The wording of risks is defined once here so the page and the PDF say the same thing: a risk
against the model's referral threshold, phrased as decision support ("consider referral /
biopsy"), never as a diagnosis.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
from fpdf import FPDF
from PIL import Image

from core.inference import Prediction

DISCLAIMER = (
    "Decision support only, not a diagnosis. This research prototype estimates probabilities from one "
    "dermoscopic image and optional metadata; it was trained on HAM10000 (mostly fair-skinned patients from "
    "Austria and Australia) and its performance on other populations and cameras is unknown. The decision to "
    "reassure, follow up, refer or biopsy stays with the clinician, who should consider the whole clinical "
    "picture and the patient's history."
)

RISK_LABELS = {"malignant": "Malignant risk (akiec, bcc or mel)", "melanoma": "Melanoma risk"}
#: A risk within this factor of its threshold (either side) is marked borderline.
BORDERLINE_FACTOR = 1.5
#: The top two classes closer than this (in probability) are a close call.
CLOSE_CALL = 0.10


@dataclass
class RiskStatement:
    task: str
    label: str
    value: float
    threshold: float
    refer: bool
    flagged: bool = False  # the image failed a check: a low risk must not read as reassurance

    @property
    def borderline(self) -> bool:
        return self.threshold / BORDERLINE_FACTOR <= self.value < self.threshold * BORDERLINE_FACTOR

    @property
    def advice(self) -> str:
        if self.refer:
            return (f"at or above the referral threshold ({self.threshold:.1%}): consider referral / biopsy."
                    + (" Borderline: close to the threshold." if self.borderline else ""))
        if self.flagged:
            return (f"below the referral threshold ({self.threshold:.1%}), but the image was flagged by the "
                    "checks above, so this estimate cannot rule anything out.")
        if self.borderline:
            return (f"just below the referral threshold ({self.threshold:.1%}): borderline; the model's estimate "
                    "does not settle this, clinical judgement decides.")
        return (f"below the referral threshold ({self.threshold:.1%}): the model does not suggest referral; "
                "clinical judgement prevails.")

    @property
    def sentence(self) -> str:
        return f"{self.label}: {self.value:.1%}, {self.advice}"


def risk_statements(prediction: Prediction, card: dict[str, Any]) -> list[RiskStatement]:
    """Malignant and melanoma risk against the card's referral thresholds."""
    thresholds = card.get("referral_thresholds", {})
    flagged = bool(prediction.flags)
    return [
        RiskStatement(task, RISK_LABELS[task], value, float(thresholds.get(task, {}).get("threshold", 0.5)), refer,
                      flagged)
        for task, value, refer in (
            ("malignant", prediction.malignant, prediction.refer_malignant),
            ("melanoma", prediction.melanoma, prediction.refer_melanoma),
        )
    ]


def top_classes(prediction: Prediction, k: int = 3) -> list[tuple[str, float]]:
    """The k most probable classes, most probable first."""
    return sorted(prediction.probs.items(), key=lambda kv: -kv[1])[:k]


def headline_notes(prediction: Prediction, card: dict[str, Any]) -> list[str]:
    """What a clinician must read with the suggested class: a close call, why the suggestion is not
    the largest bar, and a referral that the suggested class seems to contradict."""
    notes = []
    (first, p1), (second, p2) = top_classes(prediction, 2)
    if p1 - p2 < CLOSE_CALL:
        notes.append(f"Close call: {class_label(card, first)} ({p1:.1%}) and {class_label(card, second)} ({p2:.1%}) "
                     f"are within {CLOSE_CALL:.0%} of each other.")
    if prediction.top != prediction.most_probable:
        notes.append(f"{class_label(card, prediction.top)} is suggested although {class_label(card, first)} has the "
                     f"larger probability: {class_label(card, prediction.top)} is much rarer, and its probability "
                     "is high for a lesion of that kind (the rule that gives every diagnosis equal weight).")
    if prediction.refer_melanoma and prediction.top != card["melanoma"]:
        notes.append(f"Melanoma is not the suggested class, but its risk ({prediction.melanoma:.1%}) is at or above "
                     "the referral threshold: melanoma cannot be ruled out.")
    elif prediction.refer_malignant and prediction.top not in card["malignant"]:
        notes.append(f"The suggested class is benign, but the malignant risk ({prediction.malignant:.1%}) is at or "
                     "above the referral threshold: malignancy cannot be ruled out.")
    return notes


def calibration_text(card: dict[str, Any]) -> str:
    """How the shown risks and the suggested class are derived (one sentence part)."""
    cal = card.get("calibration")
    if not cal:
        return f"probabilities scaled by a temperature (T = {card.get('temperature', 1.0):.2f}); suggested class = argmax"
    return (f"risks calibrated on the validation split (the class weighting of training undone, then temperature "
            f"T = {cal['temperature']:.2f}); suggested class = the largest probability relative to the class's "
            f"training frequency (power {cal['alpha']:.2f}), chosen for balanced accuracy on validation")


def threshold_cost_lines(card: dict[str, Any]) -> list[str]:
    """What each referral threshold costs, from the card's test metrics (one line per task)."""
    test = card.get("metrics", {}).get("all_inputs", {})
    lines = []
    for task, entry in card.get("referral_thresholds", {}).items():
        line = f"{task.capitalize()}: refer at risk >= {entry['threshold']:.1%}, {entry.get('how', 'from the card')}."
        m = test.get(task)
        if m and "ppv" in m:
            line += (f" On the test split it catches {m['sensitivity']:.0%} of {task} lesions and flags "
                     f"{m['nevi_referred_fraction']:.0%} of nevi ({m['referred_fraction']:.0%} of all lesions); "
                     f"{m['ppv']:.0%} of flagged lesions are {task}.")
        lines.append(line)
    return lines


def class_label(card: dict[str, Any], code: str) -> str:
    """Plain-language class name from the card (falls back to the code)."""
    return str(card.get("class_names", {}).get(code, code))


def metrics_lines(card: dict[str, Any]) -> list[str]:
    """The card's test metrics, one short line each (empty when the card has none)."""
    m = card.get("metrics", {}).get("all_inputs")
    if not m:
        return []
    lines = [
        f"Lesion-grouped test split: {m['n_images']} images of {m['n_lesions']} lesions; "
        f"balanced accuracy {m['balanced_accuracy']:.3f}, macro AUROC {m['macro_auroc']:.3f}."
    ]
    for task in ("malignant", "melanoma"):
        t = m[task]
        lines.append(
            f"{task.capitalize()}: AUROC {t['auroc']:.3f} (95% CI {t['auroc_ci95'][0]:.3f}-{t['auroc_ci95'][1]:.3f}); "
            f"sensitivity {t['sensitivity']:.1%}, specificity {t['specificity']:.1%} at threshold {t['threshold']:.3f}."
        )
    return lines


def _latin1(text: str) -> str:
    """fpdf2's core fonts are Latin-1 only."""
    for src, dst in (("\u2013", "-"), ("\u2014", "-"), ("\u2265", ">="), ("\u2264", "<="), ("\u00d7", "x"), ("\u2019", "'")):
        text = text.replace(src, dst)
    return text.encode("latin-1", "replace").decode("latin-1")


class _Report(FPDF):
    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", "I", 7)
        self.cell(0, 5, _latin1(f"Decision support only - not a diagnosis. Page {self.page_no()}"), align="C")


def _heading(pdf: FPDF, text: str) -> None:
    pdf.ln(2)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(0, 6, _latin1(text), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)


def _para(pdf: FPDF, text: str) -> None:
    pdf.multi_cell(0, 4.5, _latin1(text), new_x="LMARGIN", new_y="NEXT", align="L")


def build_report(
    prediction: Prediction,
    card: dict[str, Any],
    original: np.ndarray,
    overlay: np.ndarray,
    heatmap_caption: str,
    quality: list[str] | None = None,
    when: dt.datetime | None = None,
    case_id: str = "",
    filename: str = "",
) -> bytes:
    """A one-case A4 PDF: identification, warnings, image and heatmap overlay, metadata, referral
    decision, suggested class, probabilities, model, disclaimer. `case_id` matches the audit row."""
    when = when or dt.datetime.now(dt.timezone.utc)
    pdf = _Report(format="A4")
    pdf.set_title("Dermoscopy decision-support report")
    pdf.set_author(str(card.get("name", "model")))
    pdf.set_creation_date(when)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    pdf.cell(0, 9, "Dermoscopy decision-support report", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    _para(pdf, f"Case ID: {case_id or '-'}    File: {filename or '-'}    Date: {when.strftime('%Y-%m-%d %H:%M UTC')}")
    _para(pdf, f"Model: {card.get('name', '?')}, version {card.get('version', '?')}")
    if quality:
        _heading(pdf, "Warnings (read before the estimate)")
        for message in quality:
            _para(pdf, f"- {message}")

    y = pdf.get_y() + 2
    width = (pdf.epw - 6) / 2
    for i, (array, title) in enumerate(((original, "Image as uploaded"), (overlay, heatmap_caption))):
        x = pdf.l_margin + i * (width + 6)
        pdf.set_xy(x, y)
        pdf.set_font("Helvetica", "", 8)
        pdf.cell(width, 4, _latin1(title))
        img = Image.fromarray(array)
        height = width * img.height / img.width
        pdf.image(img, x=x, y=y + 5, w=width, h=height)
    pdf.set_y(y + 6 + width * original.shape[0] / original.shape[1] + 2)

    _heading(pdf, "Patient metadata (as entered)")
    meta = prediction.metadata_used
    age = meta.get("age")
    _para(pdf, f"Age: {'unknown' if age is None else f'{age:g} years'}    Sex: {meta.get('sex', 'unknown')}    "
               f"Body site: {meta.get('site', 'unknown')}")

    _heading(pdf, "Referral decision")
    for statement in risk_statements(prediction, card):
        _para(pdf, statement.sentence)
    _heading(pdf, "Suggested class")
    _para(pdf, f"{class_label(card, prediction.top)} ({prediction.probs[prediction.top]:.1%}).")
    for note in headline_notes(prediction, card):
        _para(pdf, note)
    pdf.ln(1)
    with pdf.table(col_widths=(95, 25), text_align=("LEFT", "RIGHT"), width=120, align="LEFT") as table:
        table.row(["Class", "Probability"])
        for code, p in sorted(prediction.probs.items(), key=lambda kv: -kv[1]):
            table.row([_latin1(f"{class_label(card, code)} ({code})"), f"{p:.1%}"])

    _heading(pdf, "Model")
    _para(pdf, f"{card.get('name', '?')} version {card.get('version', '?')}; {calibration_text(card)}.")
    for line in [*metrics_lines(card), *threshold_cost_lines(card)] or ["The model card holds no test metrics."]:
        _para(pdf, line)

    _heading(pdf, "Disclaimer")
    _para(pdf, DISCLAIMER)
    return bytes(pdf.output())
