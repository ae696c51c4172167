"""DVC stage `report`: `python -m flows report` (`python -m flows.report` works too, see flows/__main__.py)."""

from flows._cli import main
from flows.stages import report_flow

if __name__ == "__main__":
    main(report_flow, __doc__)
