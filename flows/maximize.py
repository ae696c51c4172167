"""DVC stage `maximize`: `python -m flows maximize` (`python -m flows.maximize` works too, see flows/__main__.py)."""

from flows._cli import main
from flows.stages import maximize_flow

if __name__ == "__main__":
    main(maximize_flow, __doc__)
