"""DVC stage `report`: `python -m flows.report`."""

from flows._cli import main
from flows.stages import report_flow

if __name__ == "__main__":
    main(report_flow, __doc__)
