"""``xaicore compare`` on the tiny survey (tests/flows/conftest.py): against itself; against an explain+score rerun
of other batches under XAICORE_LAST_BIT_NOISE's hook (a stand-in for another CPU: within tolerance, the same
verdicts); against one of another seed (differences reported, not reproduced); against a copy whose metrics.json
has a verdict flipped (exit status 1). The library's logic on hand-made archives: tests/test_compare.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from xaicore.cli import main
from xaicore.compare import RELEVANCE_RTOL, compare_runs

pytestmark = pytest.mark.slow


#: enough methods for every finding (Adebayo: guided_backprop + gradient; Kindermans: gradient, gradient_x_input,
#: integrated_gradients; Samek: an LRP composite, deconvnet, gradient), a seeded one, a perturbation one, the
#: baseline. Not occlusion or PDA: near-zero heatmap entries on the randomized controls make their HOG/rank
#: similarities depend on last bits (measured: occlusion's HOG similarity on cascade:fc1, 1 sample of 16).
METHODS = ["gradient", "gradient_x_input", "integrated_gradients", "smoothgrad", "deconvnet", "guided_backprop",
           "gradcam", "lrp.epsilon_plus", "lime", "random"]
INPUTS = ("data", "models", "controls", "fitted", "autoencoder.pt", "roar.zarr", "analysis.zarr")  # analysis: Clark


def rerun(tiny_survey, root: Path, last_bit_noise: bool = False, **changes) -> Path:
    """explain, score and aggregate of the tiny survey with METHODS (and ``changes``) on a copy of its inputs."""
    from tests.flows.conftest import tiny_params
    from xaicore import last_bits
    from xaicore.config import config_from_dict
    from xaicore.pipeline import Paths, generate_heatmaps, score_heatmaps
    from xaicore.report import aggregate_metrics

    for name in INPUTS:
        src = tiny_survey.root / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, root / name)
    raw = tiny_params()
    raw["explain"]["methods"] = METHODS
    raw["seed"] = changes.pop("seed", raw["seed"])
    raw["explain"].update(changes)
    cfg = config_from_dict(raw)
    paths = Paths(root)
    was_on = last_bits.enabled()
    last_bits.install(last_bit_noise or was_on)
    try:
        generate_heatmaps(cfg, paths, progress=False)
        score_heatmaps(cfg, paths, progress=False)
    finally:
        last_bits.install(was_on)
    aggregate_metrics(paths)
    return root


@pytest.fixture(scope="module")
def reference(tiny_survey, tmp_path_factory) -> Path:
    return rerun(tiny_survey, tmp_path_factory.mktemp("compare-ref") / "outputs")


def test_the_tiny_survey_reproduces_itself(tiny_survey, capsys: pytest.CaptureFixture) -> None:
    result = compare_runs(tiny_survey.root, tiny_survey.root)
    assert result.reproduced and not result.failures
    assert {r.archive for r in result.variables} >= {"heatmaps.zarr", "scores.zarr", "roar.zarr", "analysis.zarr",
                                                     "tabular/features.zarr", "text/features.zarr",
                                                     "models/trained.pt", "models/index.json"}
    assert all(r.max_abs == 0 and r.max_rel == 0 and r.nan_mismatch == 0 for r in result.variables)
    assert len(result.metrics) > 10 and all(m.tau == pytest.approx(1.0) and not m.swaps for m in result.metrics)
    assert len(result.findings) == 6 and all(f.verdict_a == f.verdict_b for f in result.findings)
    assert main(["compare", str(tiny_survey.root), str(tiny_survey.root)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("REPRODUCED: every variable within tolerance, every verdict "
                                                     "the same.")


def test_other_batches_on_a_noisy_host_reproduce(tiny_survey, reference, tmp_path: Path) -> None:
    """Another explain.chunk and explain.batch_size, with every conv/linear output off in its last bits by batch
    position: the heatmaps differ, within the stated tolerance; the verdicts are the same."""
    other = rerun(tiny_survey, tmp_path / "outputs", last_bit_noise=True, chunk=4, batch_size=3)
    result = compare_runs(reference, other)
    assert result.reproduced, result.failures
    rel = next(r for r in result.variables if (r.archive, r.variable) == ("heatmaps.zarr", "relevance"))
    assert 0 < rel.max_rel <= RELEVANCE_RTOL and rel.max_abs > 0
    curve = next(r for r in result.variables if (r.archive, r.variable) == ("scores.zarr", "aopc_curve"))
    assert 0 < curve.max_rel < 1e-5  # logit drops: a few eps of the logits
    assert [f.verdict_a for f in result.findings] == [f.verdict_b for f in result.findings]
    assert all(f.verdict_a != "undetermined" for f in result.findings)  # every finding judged, on both sides


def test_another_seed_is_reported(tiny_survey, reference, tmp_path: Path) -> None:
    """Another seed draws other perturbations (uniform noise, Dirichlet) for AOPC and faithfulness: the report shows
    differences far beyond tolerance and rank changes, and says not reproduced."""
    other = rerun(tiny_survey, tmp_path / "outputs", seed=1)
    result = compare_runs(reference, other)
    assert not result.reproduced
    by_name = {(r.archive, r.variable): r for r in result.variables}
    for key in [("scores.zarr", "aopc"), ("scores.zarr", "aopc_curve"), ("scores.zarr", "faithfulness")]:
        assert not by_name[key].ok and by_name[key].max_rel > 1e-2 and by_name[key].beyond > 0, key
    # the heatmaps stay: the explainers' seeds are method parameters (explain.method_params), not the survey's
    assert by_name[("heatmaps.zarr", "relevance")].ok and by_name[("heatmaps.zarr", "relevance")].max_abs == 0
    assert by_name[("models/trained.pt", "weights")].max_abs == 0  # the same models
    aopc_rows = [m for m in result.metrics if m.variable == "aopc"]
    assert aopc_rows and min(m.tau for m in aopc_rows) < 1
    assert "NOT REPRODUCED" in result.format()


def test_a_flipped_verdict_fails(reference, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    other = tmp_path / "outputs"
    shutil.copytree(reference, other)
    doc = json.loads((other / "metrics.json").read_text())
    first = doc["findings"][0]
    flipped = {"holds": "does not hold", "does not hold": "holds"}[first["verdict"]]
    doc["findings"][0] = {**first, "verdict": flipped, "holds": flipped == "holds"}
    (other / "metrics.json").write_text(json.dumps(doc))
    result = compare_runs(reference, other)
    assert not result.reproduced and all(r.ok for r in result.variables)
    assert [f.ok for f in result.findings] == [False] + [True] * (len(result.findings) - 1)
    assert main(["compare", str(reference), str(other)]) == 1
    assert f"{first['verdict']} -> {flipped}" in capsys.readouterr().out
