"""The published findings' verdicts on synthetic metrics where each holds and where it fails (Samek et al.'s
AOPC ranking, Tomsett et al.'s reliability per method set, Adebayo et al.'s cascading randomization, Kindermans et
al.'s input invariance; each is also checked on the tiny survey in tests/flows), and the detection of
numerically identical methods."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from xaicore.report.aggregate import duplicate_methods
from xaicore.report.document import write_report
from xaicore.report.findings import (
    LRP_COMPOSITES,
    adebayo,
    clark,
    findings,
    hooker,
    kindermans,
    samek,
    tomsett,
)

PERTS = ("uniform", "blur")


def scores() -> xr.Dataset:
    return xr.Dataset(coords={"perturbation": np.asarray(PERTS, dtype=object),
                              "model": np.asarray(["trained"], dtype=object),
                              "explainer": np.asarray(["gradient"], dtype=object)})


def doc(aopc: dict[str, dict[str, float]]) -> dict:
    """metrics.json rows of the trained model: ``aopc[method][perturbation]`` as aopc_morf_<perturbation>."""
    return {"rows": [{"model": "trained", "explainer": m, **{f"aopc_morf_{p}": v for p, v in per.items()}}
                     for m, per in aopc.items()], "reliability": []}


def test_samek_holds_when_lrp_beats_deconvnet_beats_gradient_everywhere():
    aopc = {"lrp.epsilon_plus": {"uniform": 9.0, "blur": 10.0},
            "lrp.epsilon_plus_flat": {"uniform": 11.0, "blur": 12.0}, "deconvnet": {"uniform": 8.0, "blur": 8.3},
            "gradient": {"uniform": 7.0, "blur": 8.2},
            "random": {"uniform": 5.0, "blur": 5.6}}
    f = samek(doc(aopc), scores())
    assert f["holds"] is True
    per = f["evidence"]["per_perturbation"]
    assert per["uniform"]["aopc_morf"]["LRP"] == 10.0 and per["blur"]["aopc_morf"]["LRP"] == 11.0
    assert per["blur"]["ranking"] == ["LRP", "deconvnet", "gradient"]
    assert per["uniform"]["beats_random"] == {"LRP": True, "deconvnet": True, "gradient": True}
    assert f["evidence"]["lrp_composites"] == ["lrp.epsilon_plus", "lrp.epsilon_plus_flat"]
    assert "divergence" not in f


def test_samek_fails_per_perturbation_and_says_where():
    """The default run's uniform MoRF: the gradient (4.2) below random (8.4) and above DeConvNet: fails there."""
    aopc = {"lrp.epsilon_gamma_box": {"uniform": 9.0, "blur": 10.5}, "deconvnet": {"uniform": 3.0, "blur": 8.33},
            "gradient": {"uniform": 4.2, "blur": 8.32}, "random": {"uniform": 8.4, "blur": 5.6}}
    f = samek(doc(aopc), scores())
    assert f["holds"] is False
    assert f["reason"] == "the order fails for uniform (holds for blur)"
    per = f["evidence"]["per_perturbation"]
    assert per["uniform"]["holds"] is False and per["blur"]["holds"] is True
    assert per["uniform"]["ranking"] == ["LRP", "gradient", "deconvnet"]
    assert per["uniform"]["beats_random"] == {"LRP": True, "deconvnet": False, "gradient": False}
    assert "noise" in f["divergence"]


def test_samek_ties_do_not_hold():
    aopc = {c: {"uniform": 5.0, "blur": 5.0} for c in LRP_COMPOSITES}
    aopc.update(deconvnet={"uniform": 5.0, "blur": 4.0}, gradient={"uniform": 1.0, "blur": 1.0})
    f = samek(doc(aopc), scores())
    assert f["holds"] is False and f["evidence"]["per_perturbation"]["blur"]["holds"] is True
    assert f["evidence"]["per_perturbation"]["blur"]["beats_random"] is None  # no random baseline in the run


def test_samek_undetermined_without_its_methods_or_scores():
    f = samek(doc({"gradient": {"uniform": 1.0}, "deconvnet": {"uniform": 2.0}}), scores())
    assert f["holds"] is None and f["reason"] == "explain.methods lacks an LRP composite"
    f = samek(doc({"lrp.epsilon_plus": {}, "deconvnet": {}, "gradient": {}}), scores())
    assert f["holds"] is None and "no perturbation was scored" in f["reason"]


def test_every_finding_has_a_verdict_and_the_report_shows_it(tmp_path):
    aopc = {"lrp.epsilon_plus": {"uniform": 3.0, "blur": 3.0}, "deconvnet": {"uniform": 2.0, "blur": 2.0},
            "gradient": {"uniform": 1.0, "blur": 4.0}}
    d = {**doc(aopc), "dataset": "digits", "n_samples": 4, "internal_consistency": {"mean": 0.1}}
    d["findings"] = findings(d, scores())
    by_source = {f["source"].split(" ")[0]: f for f in d["findings"]}
    assert set(by_source) == {"Adebayo", "Kindermans", "Tomsett", "Samek", "Hooker", "Clark,"}
    assert by_source["Clark,"]["verdict"] == "undetermined"  # no analysis in this document
    assert by_source["Samek"]["verdict"] == "does not hold"
    assert by_source["Hooker"]["verdict"] == "undetermined"  # no ROAR archive given
    assert by_source["Adebayo"]["verdict"] == "undetermined"  # no cascading controls in these scores
    text = write_report(d, tmp_path / "report.md").read_text()
    assert "**does not hold**" in text and "Why: the order fails for blur (holds for uniform)." in text
    assert "What could explain it:" in text


def reliability_rows(alphas: dict[str, dict[str, float]]) -> list[dict]:
    return [{"metric": m, "set": s, "inter_rater_alpha": a} for s, per in alphas.items() for m, a in per.items()]


def test_tomsett_is_judged_per_method_set():
    """Low alpha on the Tomsett-like set holds even where duplicated raters inflate the full set's alpha."""
    d = {"rows": [], "reliability": reliability_rows({
        "full": {"aopc_morf_uniform": 0.7, "faithfulness_uniform": 0.6},
        "deduplicated": {"aopc_morf_uniform": 0.55, "faithfulness_uniform": 0.45},
        "tomsett_like": {"aopc_morf_uniform": 0.2, "faithfulness_uniform": 0.3}}),
        "reliability_sets": {"full": ["a", "b", "c"], "deduplicated": ["a", "b"], "tomsett_like": ["a", "b"],
                             "duplicates_dropped": {"c": "a"}}}
    f = tomsett(d)
    assert f["holds"] is True
    assert f["evidence"]["verdict per set"] == {"full": "does not hold", "deduplicated": "does not hold",
                                                "tomsett_like": "holds"}
    assert f["reason"].startswith("judged on the tomsett_like set")
    assert f["evidence"]["duplicates dropped"] == {"c": "a"}
    d["reliability"] = reliability_rows({"full": {"aopc_morf_uniform": 0.1},
                                         "tomsett_like": {"aopc_morf_uniform": 0.1, "faithfulness_blur": 0.8}})
    f = tomsett(d)
    assert f["holds"] is False and "faithfulness_blur" in f["divergence"]
    assert tomsett({"rows": [], "reliability": []})["holds"] is None
    old = {"rows": [], "reliability": [{"metric": "aopc_morf_uniform", "inter_rater_alpha": 0.2}]}  # no set column
    assert tomsett(old)["holds"] is True


def test_duplicate_methods_are_found_to_the_tolerance():
    g = np.random.default_rng(0)
    a = g.normal(size=(5, 1, 4, 4)).astype(np.float32)
    rel = np.stack([a, a * (1 + 1e-8), g.normal(size=a.shape), a + 1e-3, np.full_like(a, np.nan), a])
    names = ["gradient_x_input", "lrp.z", "gradient", "close", "gradcam", "copy"]
    assert duplicate_methods(rel.astype(np.float32), names) == {"lrp.z": "gradient_x_input", "copy": "gradient_x_input"}
    assert duplicate_methods(rel, names, tol=1e-2) == {"lrp.z": "gradient_x_input", "close": "gradient_x_input",
                                                        "copy": "gradient_x_input"}


def cascade_scores(similarity: dict[str, dict[str, tuple[float, float]]]) -> xr.Dataset:
    """Sanity similarities (model, explainer, measure, sample): ``similarity[model][method]`` = (ssim,
    spearman_abs) for every sample of that model."""
    models, methods = list(similarity), ["guided_backprop", "gradient"]
    values = np.array([[[[similarity[m][e][q]] * 3 for q in range(2)] for e in methods] for m in models])
    return xr.Dataset({"sanity_similarity": (("model", "explainer", "measure", "sample"), values)},
                      coords={"model": np.asarray(models, dtype=object),
                              "explainer": np.asarray(methods, dtype=object),
                              "measure": np.asarray(["ssim", "spearman_abs"], dtype=object)})


def test_adebayo_is_judged_at_the_fully_randomized_model():
    """Guided BP must stay more similar than the gradient, by more than 0.1 SSIM, where every layer is randomized
    (the last cascade model); what happens at the first cascade step does not count."""
    holds = cascade_scores({"cascade:fc2": {"guided_backprop": (0.1, 0.1), "gradient": (0.9, 0.9)},
                            "cascade:conv1": {"guided_backprop": (0.7, 0.8), "gradient": (0.2, 0.3)}})
    result = adebayo({}, holds)
    assert result["holds"] is True and result["evidence"]["model"] == "cascade:conv1"
    assert result["evidence"]["mean similarity"]["guided_backprop"]["ssim"] == 0.7
    fails = cascade_scores({"cascade:fc2": {"guided_backprop": (0.9, 0.9), "gradient": (0.1, 0.1)},
                            "cascade:conv1": {"guided_backprop": (0.35, 0.8), "gradient": (0.3, 0.3)}})
    assert adebayo({}, fails)["holds"] is False  # 0.05 above the gradient: within the 0.1 margin
    no_cascade = cascade_scores({"trained": {"guided_backprop": (1.0, 1.0), "gradient": (1.0, 1.0)}})
    assert adebayo({}, no_cascade)["holds"] is None


def invariance_scores(errors: dict[str, float]) -> xr.Dataset:
    return xr.Dataset({"invariance": (("explainer", "sample"), np.array([[v, v] for v in errors.values()]))},
                      coords={"explainer": np.asarray(list(errors), dtype=object)})


def test_kindermans_holds_only_when_the_gradient_alone_is_invariant():
    base = {"gradient": 0.0, "gradient_x_input": 0.6, "integrated_gradients": 0.4, "random": 1.3}
    assert kindermans({}, invariance_scores(base))["holds"] is True
    assert kindermans({}, invariance_scores({**base, "integrated_gradients": 0.05}))["holds"] is False
    assert kindermans({}, invariance_scores({**base, "gradient": 0.01}))["holds"] is False
    assert kindermans({}, invariance_scores({"gradient": 0.0, "gradient_x_input": 0.6}))["holds"] is None
    assert kindermans({}, xr.Dataset())["holds"] is None  # invariance.enabled false: nothing to judge


def roar_archive(acc: dict[str, dict[str, list[list[float]]]], squared: bool = True) -> xr.Dataset:
    """roar.zarr with ``roar_accuracy_by_fill``: ``acc[fill][method]`` = (fraction, repeat) accuracies."""
    fills, methods = list(acc), list(next(iter(acc.values())))
    values = np.array([[acc[f][m] for m in methods] for f in fills], dtype=np.float32)
    params = {"roar": {"method_params": {"smoothgrad": {"squared": squared}}}}
    return xr.Dataset({"roar_accuracy_by_fill": (("fill", "explainer", "fraction", "repeat"), values)},
                      coords={"fill": np.asarray(fills, dtype=object), "explainer": np.asarray(methods, dtype=object)},
                      attrs={"params": json.dumps(params)})


# (fraction, repeat) curves: random stays high; "near" random within the spread; "below" it by far more
RANDOM = [[0.90, 0.92, 0.88], [0.80, 0.82, 0.78]]
NEAR = [[0.89, 0.91, 0.90], [0.80, 0.79, 0.81]]
BELOW = [[0.50, 0.52, 0.48], [0.30, 0.33, 0.31]]


def test_hooker_holds_per_fill_when_base_methods_track_random_and_ensembles_beat_it():
    good = {"random": RANDOM, "gradient": NEAR, "integrated_gradients": NEAR, "smoothgrad": BELOW, "vargrad": BELOW}
    bad = {**good, "gradient": BELOW}  # a base method beating random breaks the claim
    result = hooker(roar_archive({"mean": good, "background": bad, "noise": good}))
    assert result["holds"] is True  # judged on the mean fill, Hooker et al.'s
    per = result["evidence"]["per_fill"]
    assert [per[f]["verdict"] for f in ("mean", "background", "noise")] == ["holds", "does not hold", "holds"]
    assert per["background"]["methods"]["gradient"]["beats_random"] is True
    gap = ((0.90 - 0.50) + (0.80 - 0.94 / 3)) / 2  # random's and vargrad's means per fraction
    assert per["mean"]["methods"]["vargrad"]["mean gap to random"] == pytest.approx(gap, abs=1e-4)
    assert "background does not hold" in result["reason"]
    failing = hooker(roar_archive({"mean": {**good, "vargrad": NEAR}}))
    assert failing["holds"] is False and failing["divergence"]


def test_hooker_is_undetermined_with_one_repeat_or_without_its_methods():
    one = {m: [[c[0]] for c in curve] for m, curve in
           {"random": RANDOM, "gradient": NEAR, "vargrad": BELOW}.items()}
    result = hooker(roar_archive({"mean": one}))
    assert result["holds"] is None and "1 repeat" in result["reason"]
    assert result["evidence"]["per_fill"]["mean"]["methods"]["vargrad"]["beats_random"] is None
    # plain SmoothGrad (not squared) is a base method: with no ensemble left there is nothing to judge
    plain = hooker(roar_archive({"mean": {"random": RANDOM, "gradient": NEAR, "smoothgrad": BELOW}}, squared=False))
    assert plain["holds"] is None and "smoothgrad with squared: true, or vargrad" in plain["reason"]
    assert hooker(None)["holds"] is None


def test_one_scored_metric_has_no_internal_consistency_but_a_reason():
    """One perturbation, one order, no faithfulness (the own-model survey's scoring): the reliability rows are
    there and internal consistency says why it is missing, instead of failing the aggregate stage."""
    from xaicore.report.aggregate import reliability

    rng = np.random.default_rng(0)
    explainers = ["gradient", "lrp.epsilon", "random"]
    sc = xr.Dataset(
        {"aopc_per_sample": (("model", "explainer", "perturbation", "order", "sample"),
                             rng.normal(size=(1, 3, 1, 1, 5)))},
        coords={"model": ["trained"], "explainer": explainers, "perturbation": ["uniform"], "order": ["morf"]})
    rows, consistency = reliability(sc, None)
    assert [r["metric"] for r in rows] == ["aopc_morf_uniform"] and rows[0]["n_methods"] == 3
    assert consistency["mean"] is None and "needs two metrics" in consistency["note"]


def truth_doc(riw: dict[str, tuple[float, float, float]], shares: dict[str, tuple[float, float]]) -> dict:
    """metrics.json's analysis.truth: mean RIW per regime (absent, confound, noise) and (eta2, r2) per method."""
    regimes = ("absent", "confound", "noise")
    return {"analysis": {"truth": {"regimes": {r: {} for r in regimes}, "methods": [
        {"method": m, **{f"riw_{r}": v for r, v in zip(regimes, riw[m], strict=True)},
         "eta2_regime": shares[m][0], "r2_salience": shares[m][1]} for m in riw]}}}


def test_clark_holds_when_relevance_follows_salience_in_every_regime():
    riw = {"gradient": (0.10, 0.12, 0.11), "lrp.epsilon_plus": (0.2, 0.25, 0.22), "occlusion": (0.01, 0.3, 0.02),
           "random": (0.02, 0.02, 0.02)}
    shares = {"gradient": (0.01, 0.5), "lrp.epsilon_plus": (0.03, 0.45), "occlusion": (0.9, 0.01),
              "random": (0.0, 0.0)}
    f = clark(truth_doc(riw, shares))
    assert f["holds"] is True and "2 of 3 methods" in f["reason"]
    assert f["evidence"]["methods"]["occlusion"] == {"elevated_in_every_regime": False,
                                                     "salience_over_regime": False, "eta2_regime": 0.9,
                                                     "r2_salience": 0.01, "holds": False}


def test_clark_does_not_hold_when_the_regime_drives_relevance():
    riw = {"gradient": (0.01, 0.12, 0.01), "lrp.epsilon_plus": (0.05, 0.25, 0.03), "occlusion": (0.03, 0.3, 0.04),
           "random": (0.02, 0.02, 0.02)}
    shares = {"gradient": (0.6, 0.1), "lrp.epsilon_plus": (0.5, 0.4), "occlusion": (0.1, 0.5),
              "random": (0.0, 0.0)}
    f = clark(truth_doc(riw, shares))
    assert f["holds"] is False and "divergence" in f
    assert [m for m, v in f["evidence"]["methods"].items() if v["holds"]] == ["occlusion"]


def test_clark_is_undetermined_without_regimes_random_or_truth():
    assert clark({})["holds"] is None
    riw = {"gradient": (0.1, 0.1, 0.1), "occlusion": (0.1, 0.2, 0.1)}
    shares = {"gradient": (0.1, 0.5), "occlusion": (0.1, 0.5)}
    assert "random method" in clark(truth_doc(riw, shares))["reason"]
    one = truth_doc({**riw, "random": (0.0, 0.0, 0.0)}, {**shares, "random": (0.0, 0.0)})
    one["analysis"]["truth"]["regimes"] = {"confound": {}}
    assert clark(one)["holds"] is None
    nan = truth_doc({"gradient": (0.1, 0.1, 0.1), "random": (0.0, 0.0, 0.0)},
                    {"gradient": (None, None), "random": (0.0, 0.0)})
    assert clark(nan)["holds"] is None and "fewer than two methods" in clark(nan)["reason"]


def test_explanations_speak_of_the_data_the_survey_ran_on():
    """Issue 29, point 8: on digits the failing findings speak of strokes and the empty background; on a
    researcher's 32x32 RGB images they describe those images instead."""
    aopc = {"lrp.epsilon_gamma_box": {"uniform": 9.0, "blur": 10.5}, "deconvnet": {"uniform": 3.0, "blur": 8.33},
            "gradient": {"uniform": 4.2, "blur": 8.32}, "random": {"uniform": 8.4, "blur": 5.6}}
    good = {"random": RANDOM, "gradient": NEAR, "integrated_gradients": NEAR, "smoothgrad": BELOW, "vargrad": NEAR}
    for dataset, shape, says, never in [("digits", [1, 28, 28], "28x28 digits on an empty background", "RGB"),
                                        ("imagefolder", [3, 32, 32], "32x32 RGB images of this run (imagefolder)",
                                         "digit")]:
        d = {**doc(aopc), "dataset": dataset, "image_shape": shape, "region": 4}
        texts = [samek(d, scores())["divergence"], hooker(roar_archive({"mean": good}), d)["divergence"]]
        for text in texts:
            assert says in text and never not in text and (dataset == "digits") == ("stroke" in text), text
