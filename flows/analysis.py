"""DVC stage `analysis`: `python -m flows analysis` (`python -m flows.analysis` works too, see flows/__main__.py)."""

from flows._cli import main
from flows.stages import analysis_flow

if __name__ == "__main__":
    main(analysis_flow, __doc__)
