"""The whole survey in one flow: ``python -m flows survey`` (``xaicore survey --params FILE``).

Scheduled runs: ``xaicore schedule`` (flows/schedule.py), whose runs are ``dvc repro`` or this flow.
"""

from __future__ import annotations

import tasks
from flows._cli import main
from flows.stages import stage_flow


@stage_flow("survey")
def survey_flow(params: str = "params.yaml", out: str = "outputs") -> None:
    cfg, paths = tasks.load_params(params, out)
    tasks.prepare_data(cfg, paths)
    tasks.train_models(cfg, paths)
    tasks.build_controls(cfg, paths)
    tasks.fit_autoencoder(cfg, paths)
    tasks.fit_states(cfg, paths)
    tasks.generate_heatmaps(cfg, paths)
    tasks.score_heatmaps(cfg, paths)
    tasks.run_roar(cfg, paths)
    tasks.run_maximize(cfg, paths)
    tasks.run_planted(cfg, paths)
    tasks.run_analysis(cfg, paths)
    tasks.train_branch(cfg, paths, "tabular")
    tasks.explain_branch(cfg, paths, "tabular")
    tasks.train_branch(cfg, paths, "text")
    tasks.explain_branch(cfg, paths, "text")
    tasks.aggregate_metrics(paths)
    figures = tasks.make_figures(paths)
    page = tasks.write_html_report(paths, figures)
    tasks.log_mlflow_run(cfg, paths, figures, page)
    print(f"survey done: {paths.heatmaps}, {paths.scores}, {paths.roar}, {paths.analysis}, {paths.root}/tabular/, "
          f"{paths.root}/text/, {paths.metrics}, {paths.figures}/, {page}")


if __name__ == "__main__":
    main(survey_flow, __doc__)
