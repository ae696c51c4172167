"""Tables and figures from the archives: ``metrics.json``/``metrics.csv`` and the survey's plots."""

from xaicore.report.figures import aopc_curves_figure, cascading_figure, make_figures
from xaicore.report.tables import aggregate_metrics

__all__ = ["aggregate_metrics", "aopc_curves_figure", "cascading_figure", "make_figures"]
