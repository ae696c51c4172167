"""Tables, figures and the report pages from the archives: ``metrics.json``/``metrics.csv``, the survey's plots,
``report.md`` and ``report.html``."""

from xaicore.report.aggregate import aggregate_metrics
from xaicore.report.figures import aopc_curves_figure, cascading_figure, make_figures
from xaicore.report.html import write_html_report

__all__ = ["aggregate_metrics", "aopc_curves_figure", "cascading_figure", "make_figures", "write_html_report"]
