"""``report.html``: the report's sections (:mod:`xaicore.report.document`) with their figures, as one static page.

The page is self-contained: the figures are embedded as PNG data URIs and it has no script, so it opens from disk,
can be mailed, and is logged to MLflow as one artifact. Every figure carries one line saying what it shows and
which direction is better; a figure the sections do not name (a stage that landed later) still appears, under
"Other figures"."""

from __future__ import annotations

import base64
import html
import json
import re
from pathlib import Path
from typing import Any

from xaicore.atomic import write_text
from xaicore.errors import XaiCoreError
from xaicore.outputs import Paths
from xaicore.report.blocks import Section, Table, cell
from xaicore.report.document import sections
from xaicore.report.findings import VERDICTS

#: one line per figure: what it shows, and which direction is better
CAPTIONS = {
    "heatmaps_trained.png": "Each method's heatmap for the target class on a test sample of each class, the input "
                            "on the left; red = positive, blue = negative relevance, white = 0, each scaled to its own "
                            "max |R|. Better: relevance on what the class depends on, unlike the "
                            "`random` column.",
    "cascading_grid.png": "The same heatmaps as the layers are randomized from the output down (Adebayo et al.). "
                          "Better: a heatmap that changes once the weights it explains are random.",
    "cascading_randomization.png": "Mean similarity to the trained model's heatmaps along the cascade. Lower is "
                                   "better: the method depends on the weights.",
    "aopc_curves.png": "Mean score drop as regions are perturbed, most relevant first (MoRF: a faster, higher rise "
                       "is better) or least relevant first (LeRF: a flatter curve is better), per perturbation.",
    "roar_kar.png": "Retrained accuracy with the most relevant pixels removed (ROAR: lower is better) or only "
                    "them kept (KAR: higher is better), against the random baseline.",
    "roar_fills.png": "ROAR accuracy per fill of the removed pixels (lower is better); a fill the model reads "
                      "as a shape leaks the label.",
    "input_invariance.png": "Change of a method's heatmap under a constant input shift the model cancels "
                            "(Kindermans et al.). Lower is better (0: input invariant).",
    "cem.png": "CEM's pertinent positives (what must stay) and negatives (what must stay absent, added in red). "
               "Better: few pixels that keep (PP) or change (PN) the class.",
    "spray.png": "SpRAy of the watermarked class: the eigenvalue spectrum (the eigengap sets the number of "
                 "clusters), a t-SNE of the spectral embedding (rings: watermarked images) and each cluster's mean "
                 "image and heatmap. Better: one cluster that is exactly the Clever-Hans images.",
    "tcav.png": "TCAV score per class for each planted concept and layer, against the random-vs-random baseline. "
                "Expected: the watermark significant for its class, the stripes for theirs.",
    "metrics_vs_truth.png": "Left: each metric's Kendall τ against the ranking of the methods by agreement with the "
                            "causal truth, with its 95 % bootstrap CI (higher is better; a CI across 0: undecided). "
                            "Right: each method's relevance on the watermark per training regime; a correct method "
                            "puts it there only where the model uses the watermark (confound).",
    "explainvis.png": "explainVis (the survey's Fig. 9) of the first tabular rows: each attribute's explanation of "
                      "the predicted class (dark) beside the mean over every explained row with the same value "
                      "(light), p(class|x) on top. Positive: the value speaks for the class; a long dark bar where "
                      "the light one agrees is the model's general trend, one where it differs is this row's own.",
    "words.png": "Relevance of each word for the predicted class, sentences (rows) × methods (columns), red = for, "
                 "blue = against, scaled per sentence and method. Better: the words the prediction hinges on "
                 "(e.g. negations and sentiment words) coloured, unlike the `random` column.",
    "maximize.png": "Inputs that maximise each class logit, per model and parameterization. Better for the "
                    "trained model: class-like images; for the controls: nothing the trained model recognises.",
}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1400px;
padding:0 1.5em 3em;color:#222;line-height:1.45}
h1{margin:.8em 0 .2em}h2{margin-top:2em;border-bottom:1px solid #ccc;padding-bottom:.2em}
nav ol{columns:2;font-size:.9em}figure{margin:1em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444;margin-top:.3em}table{border-collapse:collapse;font-size:.8em;margin:.8em 0;
display:block;overflow-x:auto}th,td{border:1px solid #ddd;padding:.2em .5em;text-align:right;white-space:nowrap}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}.meta{color:#555;font-size:.9em}
.finding{border-left:4px solid #999;padding:.3em .8em;margin:.8em 0;background:#fafafa}
.holds{border-color:#2a8a2a}.does-not-hold{border-color:#c0392b}.undetermined{border-color:#b7950b}
.verdict{font-weight:bold}.evidence{font-family:ui-monospace,monospace;font-size:.75em;color:#555;
overflow-wrap:anywhere}
"""


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _figure(path: Path) -> str:
    caption = CAPTIONS.get(path.name, path.stem.replace("_", " "))
    return (f'<figure id="fig-{html.escape(path.stem)}"><img src="{_img(path)}" alt="{html.escape(path.stem)}">'
            f"<figcaption><b>{html.escape(path.name)}</b>: {_inline(caption)}</figcaption></figure>")


def _inline(text: str) -> str:
    """Escape, then the Markdown the sections use: `code` and *emphasis*."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


def _table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(k)}</th>" for k in t.keys)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell(r.get(k)))}</td>" for k in t.keys) + "</tr>"
                   for r in t.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _finding(f: dict[str, Any]) -> str:
    verdict = VERDICTS[f["holds"]]
    parts = [f'<p><b>{_inline(f["claim"])}</b> ({_inline(f["source"])}): '
             f'<span class="verdict">{verdict}</span>.</p>', f"<p>Rule: {_inline(str(f.get('rule', '-')))}.</p>"]
    if f.get("reason") and f["reason"] != f.get("rule"):
        parts.append(f"<p>Why: {_inline(str(f['reason']))}.</p>")
    if f.get("divergence"):
        parts.append(f"<p>What could explain it: {_inline(str(f['divergence']))}</p>")
    parts.append(f'<p class="evidence">Evidence: {html.escape(json.dumps(f["evidence"], ensure_ascii=False))}</p>')
    return f'<div class="finding {verdict.replace(" ", "-")}">{"".join(parts)}</div>'


def _section(s: Section, figures: dict[str, Path]) -> str:
    out = [f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>']
    for b in s.blocks:
        out.append(_table(b) if isinstance(b, Table) else _finding(b) if isinstance(b, dict)
                   else f"<p>{_inline(b)}</p>")
    out += [_figure(figures[name]) for name in s.figures if name in figures]
    return "".join(out) + "</section>"


def write_html(doc: dict[str, Any], figures: list[Path], path: Path, *, meta: dict[str, str] | None = None) -> Path:
    """Write ``report.html`` from ``metrics.json``'s ``doc`` and the figure files; ``meta`` (e.g. the git revision)
    is shown under the title. Written to a temporary name and renamed, so a failed run leaves no page."""
    by_name = {f.name: f for f in figures}
    secs = sections(doc)
    named = {n for s in secs for n in s.figures}
    others = [n for n in by_name if n not in named]
    if others:
        secs.append(Section("Other figures", figures=others))
    title = f"xaicore survey report — {doc['dataset']}, {doc['n_samples']} test samples"
    info = " · ".join(f"{html.escape(k)}: {html.escape(v)}" for k, v in (meta or {}).items())
    toc = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in secs)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
            f'<body><h1>{html.escape(title)}</h1><p class="meta">{info}</p><nav><ol>{toc}</ol></nav>'
            + "".join(_section(s, by_name) for s in secs) + "</body></html>\n")
    return write_text(path, page)


def write_html_report(paths: Paths, figures: list[Path] | None = None, *, progress: bool = False) -> Path:
    """``<out>/report.html`` from the survey's archives: ``figures`` (default: drawn now by
    :func:`~xaicore.report.figures.make_figures`) and ``metrics.json``, with the run's dataset, git revision and
    params under the title."""
    from xaicore.report.aggregate import read_metrics
    from xaicore.report.figures import make_figures
    from xaicore.store import open_archive

    if not paths.metrics.is_file():
        raise XaiCoreError(f"{paths.metrics} is missing; run the aggregate stage first (dvc repro aggregate)")
    figures = make_figures(paths, progress=progress) if figures is None else figures
    attrs = open_archive(paths.heatmaps).attrs
    meta = {"git revision": str(attrs.get("git_revision", "unknown"))[:12],
            "xaicore": str(attrs.get("xaicore_version", "")), "target": str(attrs.get("target", ""))}
    trained = paths.models / "trained.json"
    if trained.is_file():  # what the survey explains: a zoo architecture, or the researcher's network and weights
        spec = json.loads(trained.read_text())
        meta["model"] = " ".join(str(v) for v in (spec.get("source", "zoo"), spec["arch"]) if v) + (
            f" (weights {spec['weights']})" if spec.get("weights") else "") + (
            ", normalized input" if spec.get("normalize") else "")
    return write_html(read_metrics(paths.metrics), figures, paths.root / "report.html", meta=meta)


__all__ = ["CAPTIONS", "write_html", "write_html_report"]
