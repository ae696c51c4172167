"""What every metric is, declared once: its name, which way is better, the input kinds it scores, and the words
reports use for it. Every place that needs a direction (the reports' sign of a score, the ranking of methods,
the archives' ``directions`` attributes, the results' ``higher_is_better``) reads :data:`METRICS`.

Directions follow the survey: AOPC MoRF and faithfulness higher (§4.5.1–4.5.2), AOPC LeRF lower; a sanity
similarity lower (a heatmap that stays alike when the model or labels are randomized fails the check, Adebayo
et al. 2018, §4.4); ROAR accuracy lower, KAR accuracy higher (Hooker et al. 2019, §4.5.3); the conservation
error lower and the positive fraction higher (the axioms, §4.3).
"""

from __future__ import annotations

import dataclasses
import json

from xaicore.errors import XaiCoreError

IMAGE, TABULAR, TEXT = "image", "tabular", "text"
ANY_KIND = (IMAGE, TABULAR, TEXT)


@dataclasses.dataclass(frozen=True)
class Metric:
    """One metric: ``higher_is_better``; ``kinds``: the inputs it scores; ``verdict``: the short words for its
    direction ("lower is better"); ``note``: the report's sentence on it (the verdict with its reason)."""

    name: str
    higher_is_better: bool
    kinds: tuple[str, ...] = (IMAGE,)
    verdict: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        if not self.verdict:
            object.__setattr__(self, "verdict", "higher is better" if self.higher_is_better else "lower is better")
        if not self.note:
            object.__setattr__(self, "note", self.verdict)

    @property
    def sign(self) -> int:
        """+1 when higher is better, −1 when lower is: a score times its sign is higher for a better heatmap."""
        return 1 if self.higher_is_better else -1


_SIMILARITY = "lower is better (the method depends on what was randomized)"

METRICS: dict[str, Metric] = {m.name: m for m in (
    Metric("aopc_morf", True, ANY_KIND,
           note="higher is better (the most relevant regions first destroy the score fastest)"),
    Metric("aopc_lerf", False, ANY_KIND,
           note="lower is better (the least relevant regions first leave the score intact)"),
    Metric("faithfulness", True, ANY_KIND,
           note="higher is better (relevance correlates with the drop of disabling a region)"),
    Metric("conservation_error", False, ANY_KIND, note="lower is better (0: conservative, survey eq. 1)"),
    Metric("positive_fraction", True, ANY_KIND, note="1 means positive (survey §4.3)"),
    Metric("sanity_similarity", False, note=f"for controls: {_SIMILARITY}"),
    Metric("spearman", False, note=f"for controls: {_SIMILARITY}"),
    Metric("spearman_abs", False, note=f"for controls: {_SIMILARITY}"),
    Metric("ssim", False, note=f"for controls: {_SIMILARITY}"),
    Metric("hog", False, note=f"for controls: {_SIMILARITY}"),
    Metric("invariance", False, note="lower is better (0: input invariant, Kindermans et al.)"),
    Metric("localization", True),
    Metric("truth_agreement", True, verdict="higher is closer to the causal truth (0: exact)",
           note="higher is better (-|relevance mass on the watermark - its causal share of the logit|)"),
    Metric("metric_truth_tau", True, verdict="higher ranks the methods as the causal truth does",
           note="higher is better (Kendall tau of a metric's ranking of the methods against the truth's)"),
    Metric("roar_accuracy", False, note="lower is better (removing the most relevant pixels hurts retraining)"),
    Metric("kar_accuracy", True, note="higher is better (keeping the most relevant pixels suffices)"),
    Metric("inter_rater_reliability", True, ANY_KIND,
           note="higher is better (1: every sample ranks the methods alike; 0: chance)"),
    Metric("inter_method_reliability", True, ANY_KIND),
    Metric("internal_consistency", True, ANY_KIND),
    Metric("tcav_pvalue", False, verdict="lower is significant"),
    Metric("dissection_iou", True, verdict="higher is a better detector"),
    Metric("own_class", True),
    Metric("reconstruction_error", False, verdict="lower looks more like the data"),
)}


def metric(name: str) -> Metric:
    """The declaration of ``name``; an unknown name is one error listing the declared ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise XaiCoreError(f"unknown metric {name!r}; declared: {', '.join(METRICS)}") from None


def directions_json(*names: str) -> str:
    """The ``directions`` attribute of an archive: ``{"name": "its verdict", ...}`` as JSON."""
    return json.dumps({n: metric(n).verdict for n in names})


#: +1 higher is better, −1 lower is better, per declared metric (for signing scores before comparing them)
DIRECTIONS: dict[str, int] = {name: m.sign for name, m in METRICS.items()}
