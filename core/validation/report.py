"""A validation report as people read it: the side-by-side table, plotly charts and a PDF summary.

Pure functions of the report dict that core.validation.validate builds (no model, no streamlit), so the
command, the page and the PDF show the same figures in the same words.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from fpdf import FPDF

from core.clinic.report import _heading, _latin1, _para
from core.figures import performance as pf

NOT_DEFINED = "not defined"


# -- formatting ----------------------------------------------------------------------------------
def value_text(metric: dict[str, Any] | None, digits: int = 3) -> str:
    if not metric or metric.get("value") is None:
        return NOT_DEFINED
    return f"{metric['value']:.{digits}f}"


def ci_text(metric: dict[str, Any] | None) -> str:
    ci = (metric or {}).get("ci95")
    if not ci or any(v is None or not np.isfinite(v) for v in ci):
        return ""
    return f"{ci[0]:.3f}-{ci[1]:.3f}"


def _num(value: Any, digits: int = 3) -> str:
    return "" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.{digits}f}"


def quality_text(q: dict[str, Any]) -> str:
    """'blurry 3, too dark 1; withheld 2' (the flags, then the outputs the app would withhold)."""
    text = ", ".join(f"{k} {v}" for k, v in q["by_flag"].items())
    if q.get("withheld"):
        text += f"; output withheld for {q['withheld']} (not dermoscopy)"
    return text


def _card_ci(entry: dict[str, Any] | None) -> str:
    ci = (entry or {}).get("auroc_ci95")
    return f" ({ci[0]:.3f}-{ci[1]:.3f})" if ci and all(v is not None for v in ci) else ""


def card_balanced_accuracy(card_metrics: dict[str, Any] | None, present: list[str]) -> float | None:
    """The card's balanced accuracy restricted to the classes this set has (mean of their recalls)."""
    per_class = (card_metrics or {}).get("per_class") or {}
    recalls = [per_class[c]["recall"] for c in present if c in per_class]
    return float(np.mean(recalls)) if recalls and len(recalls) == len(present) else None


# -- the side-by-side table ------------------------------------------------------------------------
def comparison_rows(report: dict[str, Any], block: str = "all") -> list[dict[str, str]]:
    """Metric | this set | 95% CI | card (HAM10000 test) | note; one row per headline figure."""
    m = report["metrics"][block]
    ref = report["reference"]
    cm = ref.get("metrics") or {}
    present = m["classes_present"]
    rows: list[dict[str, str]] = []

    def add(metric: str, ours: dict[str, Any] | None, card: str, note: str = "") -> None:
        reason = (ours or {}).get("reason")
        rows.append({"metric": metric, "this set": value_text(ours), "95% CI": ci_text(ours), "card": card,
                     "note": reason or note})

    card_n = f"{cm['n_images']} ({cm['n_lesions']} lesions)" if cm else ""
    grouped = report["set"]["columns"].get("group")
    rows.append({"metric": "images scored", "this set": f"{m['n_images']}" + (f" ({m['n_groups']} lesions/patients)"
                                                                              if grouped else ""),
                 "95% CI": "", "card": card_n, "note": ""})
    card_ba = card_balanced_accuracy(cm, present)
    add(f"balanced accuracy ({', '.join(present)})", m["balanced_accuracy"], _num(card_ba),
        f"card over all {len(report['classes'])} classes: {_num(cm.get('balanced_accuracy'))}" if cm else "")
    add("accuracy", m["accuracy"], _num(cm.get("accuracy")), "depends on the class mix")
    for task in ("malignant", "melanoma"):
        t, c = m[task], cm.get(task) or {}
        add(f"{task} AUROC", t["auroc"], f"{_num(c.get('auroc'))}{_card_ci(c)}" if c else "")
        if t["threshold"] is not None:
            add(f"{task} sensitivity at the card's threshold {t['threshold']:.3f}", t["sensitivity"],
                _num(c.get("sensitivity")))
            add(f"{task} specificity at the card's threshold {t['threshold']:.3f}", t["specificity"],
                _num(c.get("specificity")))
        target = t["threshold_for_target"]
        add(f"threshold reaching {target['target']:.0%} {task} sensitivity here", target,
            _num(t["threshold"]) if t["threshold"] is not None else "", "card: the threshold chosen on HAM10000 validation")
        if target.get("value") is not None:
            spec = target.get("specificity")
            rows[-1]["this set"] += f" (specificity {spec:.3f})" if spec is not None else ""
    ece_card = ref.get("ece_top")
    rows.append({"metric": "expected calibration error (top class)", "this set": _num(m["ece_top"]), "95% CI": "",
                 "card": _num(ece_card), "note": "lower is better"})
    q = report["quality"]
    if block == "all":
        rows.append({"metric": "flagged by the quality / out-of-distribution checks",
                     "this set": f"{q['flagged']} ({q['flagged_share']:.1%})", "95% CI": "", "card": "",
                     "note": quality_text(q)})
    return rows


def comparison_table(report: dict[str, Any], block: str = "all") -> pd.DataFrame:
    frame = pd.DataFrame(comparison_rows(report, block))
    return frame.rename(columns={"card": report["reference"]["label"]})


def per_class_table(report: dict[str, Any], block: str = "all") -> pd.DataFrame:
    """Recall and precision per class, here and on the card; 'not defined' where this set cannot say."""
    m = report["metrics"][block]
    card = (report["reference"].get("metrics") or {}).get("per_class", {})
    names = report.get("class_names", {})
    rows = []
    for code, c in m["per_class"].items():
        rows.append({"class": pf.CLASS_LABEL.format(name=names.get(code, code), code=code),
                     "images": c["support"], "suggested": c["suggested"],
                     "recall": value_text(c["recall"]), "precision": value_text(c["precision"]),
                     "card recall": _num(card.get(code, {}).get("recall")),
                     "card precision": _num(card.get(code, {}).get("precision")),
                     "note": c["recall"]["reason"] or c["precision"]["reason"] or ""})
    return pd.DataFrame(rows)


def with_without_table(report: dict[str, Any]) -> pd.DataFrame | None:
    """Headline figures on all images and on the images that passed every check."""
    views = [("all images", "all"), ("images whose output is shown (not withheld)", "not_withheld"),
             ("images that passed every check", "passed_checks")]
    views = [(label, key) for label, key in views if (report["metrics"].get(key) or {}).get("n_images")]
    if len(views) < 2:
        return None
    rows = []
    for label, key in views:
        m = report["metrics"][key]
        rows.append({"images": label, "n": m["n_images"], "balanced accuracy": value_text(m["balanced_accuracy"]),
                     "malignant AUROC": value_text(m["malignant"]["auroc"]),
                     "melanoma AUROC": value_text(m["melanoma"]["auroc"]),
                     "malignant sensitivity": value_text(m["malignant"]["sensitivity"]),
                     "malignant specificity": value_text(m["malignant"]["specificity"])})
    return pd.DataFrame(rows)


def problems_lines(problems: dict[str, Any]) -> list[str]:
    """One line per kind of thing left out or changed (with counts and the first few items)."""
    p = problems
    lines = []

    def items(entry: dict[str, Any], key: str = "items", n: int = 5) -> str:
        values = entry.get(key) or []
        values = [v["file"] + f" ({v['reason']})" if isinstance(v, dict) else str(v) for v in values[:n]]
        more = entry["count"] - len(values)
        return ", ".join(values) + (f", ... ({more} more)" if more > 0 else "")

    labels = p.get("unmapped_labels", {})
    if labels.get("count"):
        shown = ", ".join(f"{k!r} x{v}" for k, v in list(labels["labels"].items())[:8])
        lines.append(f"{labels['count']} row(s) left out: labels that map to no class: {shown}")
    for key, text in (("ids_without_image", "id(s) with no image"), ("ambiguous_ids", "id(s) naming several images"),
                      ("images_without_row", "image(s) with no row"), ("duplicate_rows", "duplicate row(s) kept once"),
                      ("unreadable_images", "image(s) that could not be decoded, skipped"),
                      ("outside_data_folder", "file(s) outside the data folder, skipped"),
                      ("ages_unreadable", "age(s) unreadable or outside 0-120, used as unknown")):
        entry = p.get(key) or {}
        if entry.get("count"):
            lines.append(f"{entry['count']} {text}: {items(entry)}")
    for key, text in (("sexs_unknown", "sex value(s) not understood, used as unknown"),
                      ("sites_unknown", "body site value(s) not understood, used as unknown")):
        entry = p.get(key) or {}
        if entry.get("count"):
            shown = ", ".join(f"{k!r} x{v}" for k, v in list(entry["values"].items())[:8])
            lines.append(f"{entry['count']} {text}: {shown}" + (" (give a site map)" if key == "sites_unknown" else ""))
    if p.get("empty_ids"):
        lines.append(f"{p['empty_ids']} row(s) with an empty id")
    if p.get("sampled"):
        s = p["sampled"]
        lines.append(f"a random sample of {s['kept']} of {s['of']} images was scored (seed {s['seed']})")
    return lines


def text_table(report: dict[str, Any]) -> str:
    """The command's printed summary: the side-by-side table, then what was left out."""
    b = report["bundle"]
    m = report["metrics"]["all"]
    present = report["set"]["classes_present"]
    head = [f"{b['name']} (version {b['version']}) on {m['n_images']} images: "
            + ", ".join(f"{c} {n}" for c, n in present.items())
            + f"; metadata: {', '.join(report['set']['metadata_given']) or 'none'}."]
    rows = comparison_rows(report)
    widths = [max(len(r[k]) for r in rows + [{k: k for k in rows[0]}]) for k in ("metric", "this set", "95% CI", "card")]
    header = ["metric", "this set", "95% CI", report["reference"]["label"]]
    widths[3] = max(widths[3], len(header[3]))
    fmt = "  ".join(f"{{:{w}s}}" for w in widths)
    lines = head + ["", fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    notes = []
    for r in rows:
        mark = ""
        if r["note"] and r["this set"] == NOT_DEFINED:
            notes.append(r["note"])
            mark = f" [{len(notes)}]"
        lines.append(fmt.format(r["metric"], r["this set"] + mark, r["95% CI"], r["card"]).rstrip())
    for i, note in enumerate(notes, 1):
        lines.append(f"  [{i}] not defined: {note}")
    absent = [c for c, e in m["per_class"].items() if not e["support"]]
    if absent:
        lines.append(f"Per-class recall not defined for {', '.join(absent)}: no images of these classes in this set.")
    lines.append(f"95% intervals: {report['bootstrap']['resamples']} bootstrap resamples by {report['bootstrap']['unit']}.")
    problems = problems_lines(report["set"]["problems"])
    if problems:
        lines += ["", "Left out or changed:"] + [f"  - {line}" for line in problems]
    return "\n".join(lines)


# -- figures -------------------------------------------------------------------------------------
def confusion_figure(report: dict[str, Any], normalise: bool, block: str = "all") -> go.Figure:
    """Rows: the classes this set has; columns: every class the model can suggest."""
    m = report["metrics"][block]
    classes = report["classes"]
    rows = [classes.index(c) for c in m["classes_present"]]
    counts = np.asarray(m["confusion_matrix"], dtype=float)[rows]
    if normalise:
        z = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        text = [[f"{v:.2f}" for v in row] for row in z]
    else:
        z, text = counts, [[f"{int(v)}" for v in row] for row in counts]
    fig = go.Figure(go.Heatmap(z=z, x=classes, y=m["classes_present"], text=text, texttemplate="%{text}",
                               colorscale="Blues", showscale=False,
                               hovertemplate="true %{y}, suggested %{x}: %{text}<extra></extra>"))
    fig.update_layout(xaxis_title="suggested", yaxis_title="true", yaxis_autorange="reversed",
                      height=160 + 45 * len(rows), margin=dict(l=10, r=10, t=30, b=10),
                      title="Row-normalised (each row sums to 1)" if normalise else "Counts")
    return fig


def curves_figure(report: dict[str, Any], task: str, block: str = "all") -> go.Figure | None:
    """ROC and precision-recall for malignant or melanoma (None where not defined)."""
    curves = report["metrics"][block][task].get("curves")
    return pf.roc_pr_figure(curves, task) if curves else None


def reliability_figure(report: dict[str, Any], block: str = "all") -> go.Figure:
    """Reliability of the top class, the malignant risk and the melanoma risk on this set."""
    m = report["metrics"][block]
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], name="perfect calibration", line=dict(dash="dot", color="grey")))
    series = [("top class (confidence vs accuracy)", m["reliability_top"], m["ece_top"])]
    series += [(f"{task} risk (risk vs observed rate)", m[task]["reliability"], m[task]["ece"])
               for task in ("malignant", "melanoma") if m[task]["positives"]]
    for label, bins, ece in series:
        fig.add_trace(go.Scatter(x=bins["confidence"], y=bins["accuracy"], mode="lines+markers",
                                 name=f"{label}: ECE {ece:.3f}", customdata=bins["count"],
                                 hovertemplate="predicted %{x:.2f}<br>observed %{y:.2f}<br>%{customdata} images"))
    fig.update_layout(xaxis_title="predicted", yaxis_title="observed", xaxis_range=[0, 1], yaxis_range=[0, 1.02],
                      height=400, margin=dict(l=10, r=10, t=30, b=10), legend=dict(orientation="h", y=-0.2))
    return fig


HEADLINE = (("balanced_accuracy", "balanced accuracy"), ("malignant", "malignant AUROC"), ("melanoma", "melanoma AUROC"))


def headline_figure(report: dict[str, Any]) -> go.Figure:
    """This set beside the card: balanced accuracy and the two AUROCs, with intervals where defined."""
    m = report["metrics"]["all"]
    ref = report["reference"].get("metrics") or {}
    labels, ours, lo, hi, card = [], [], [], [], []
    for key, label in HEADLINE:
        metric = m[key] if key == "balanced_accuracy" else m[key]["auroc"]
        if metric.get("value") is None:
            continue
        labels.append(label)
        ours.append(metric["value"])
        ci = metric.get("ci95") or [np.nan, np.nan]
        lo.append(metric["value"] - (ci[0] if ci[0] is not None else np.nan))
        hi.append((ci[1] if ci[1] is not None else np.nan) - metric["value"])
        if key == "balanced_accuracy":
            card.append(card_balanced_accuracy(ref, m["classes_present"]))
        else:
            card.append((ref.get(key) or {}).get("auroc"))
    fig = go.Figure()
    fig.add_trace(go.Bar(x=labels, y=ours, name="this set",
                         error_y=dict(type="data", symmetric=False, array=hi, arrayminus=lo)))
    fig.add_trace(go.Bar(x=labels, y=[c if c is not None else np.nan for c in card], name=report["reference"]["label"]))
    fig.update_layout(barmode="group", yaxis_range=[0, 1.05], height=340, margin=dict(l=10, r=10, t=30, b=10),
                      title="This set beside the model card (bars: 95% intervals)")
    return fig


def subgroup_table(report: dict[str, Any], variable: str) -> pd.DataFrame:
    return pf.subgroup_table(report["subgroups"]["rows"], variable)


def subgroup_variables(report: dict[str, Any]) -> list[str]:
    return list(dict.fromkeys(r["variable"] for r in report["subgroups"]["rows"]))


# -- PDF -------------------------------------------------------------------------------------------
class _Summary(FPDF):
    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", "I", 7)
        self.cell(0, 5, _latin1(f"Local validation summary - decision-support model. Page {self.page_no()}"), align="C")


def _table(pdf: FPDF, frame: pd.DataFrame, widths: tuple[float, ...]) -> None:
    pdf.set_font("Helvetica", "", 7.5)
    with pdf.table(col_widths=widths, text_align="LEFT", width=sum(widths), align="LEFT") as table:
        table.row([_latin1(str(c)) for c in frame.columns])
        for _, row in frame.iterrows():
            table.row([_latin1(str(v)) for v in row])
    pdf.set_font("Helvetica", "", 9)


def pdf_summary(report: dict[str, Any]) -> bytes:
    """A few A4 pages: the set, the side-by-side table, per-class figures, the confusion matrix,
    the checks, subgroups and what was left out."""
    pdf = _Summary(format="A4")
    pdf.set_title("Local validation summary")
    b = report["bundle"]
    pdf.set_author(str(b.get("name", "model")))
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 15)
    pdf.cell(0, 9, "Local validation summary", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    s = report["set"]
    _para(pdf, f"Created {report['created']}. Model {b['name']} version {b['version']} (sha256 {str(b['sha256'])[:16]}...).")
    _para(pdf, f"Set: {s['folder']}; {s['csv_rows']} CSV rows, {s['scored_images']} images scored. Classes: "
               + ", ".join(f"{c} {n}" for c, n in s["classes_present"].items())
               + f". Metadata used: {', '.join(s['metadata_given']) or 'none'}. "
               f"95% intervals: {report['bootstrap']['resamples']} bootstrap resamples by {report['bootstrap']['unit']}.")
    _heading(pdf, f"This set beside the card ({report['reference']['label']})")
    _table(pdf, comparison_table(report), (58, 22, 22, 26, 62))
    _heading(pdf, "Per class")
    _table(pdf, per_class_table(report).drop(columns=["note"]), (62, 14, 16, 16, 18, 20, 22))
    _heading(pdf, "Confusion matrix (rows: true class, columns: suggested class)")
    m = report["metrics"]["all"]
    classes = report["classes"]
    matrix = pd.DataFrame([m["confusion_matrix"][classes.index(c)] for c in m["classes_present"]],
                          columns=classes, index=m["classes_present"]).reset_index(names="true")
    _table(pdf, matrix, (20,) + (16,) * len(classes))
    q = report["quality"]
    _heading(pdf, "Quality and out-of-distribution checks")
    _para(pdf, f"{q['flagged']} of {q['n_images']} images flagged ({q['flagged_share']:.1%})"
               + (": " + quality_text(q) if q["by_flag"] else "") + ".")
    both = with_without_table(report)
    if both is not None:
        _table(pdf, both, (44, 10, 22, 22, 22, 26, 26))
    sub = report["subgroups"]
    _heading(pdf, "Subgroups")
    if sub["rows"]:
        for variable in subgroup_variables(report):
            table = subgroup_table(report, variable)[["group", "images", "balanced accuracy", "malignant AUROC",
                                                      "melanoma AUROC", "malignant sensitivity", "malignant specificity"]]
            table = table.map(lambda v: f"{v:.3f}" if isinstance(v, float) and np.isfinite(v) else
                              (NOT_DEFINED if isinstance(v, float) else v))
            _para(pdf, variable)
            _table(pdf, table, (34, 14, 24, 24, 24, 26, 26))
    else:
        _para(pdf, f"None: {sub['reason']}.")
    problems = problems_lines(report["set"]["problems"])
    if problems:
        _heading(pdf, "Left out or changed")
        for line in problems:
            _para(pdf, f"- {line}")
    _heading(pdf, "Reading these figures")
    _para(pdf, "A metric marked 'not defined' needs a class this set does not contain; the note says which. Balanced "
               "accuracy is over the classes present, and the card's figure beside it is restricted to the same "
               "classes. Small sets give wide intervals: two runs of the same training recipe differ by about 0.03 "
               "balanced accuracy on HAM10000 alone. The model remains decision support, not a diagnosis.")
    if report.get("refit"):
        r = report["refit"]
        _heading(pdf, "Refitted copy of the bundle")
        _para(pdf, f"Written to {r['out']}: temperature {r['temperature']['before']:.3f} -> {r['temperature']['after']:.3f}, "
                   "referral thresholds refitted on this set. " + r["warning"])
    pdf.set_creation_date(dt.datetime.now(dt.timezone.utc))
    return bytes(pdf.output())
