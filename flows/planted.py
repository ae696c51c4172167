"""DVC stage `planted`: `python -m flows planted` (`python -m flows.planted` works too, see flows/__main__.py)."""

from flows._cli import main
from flows.stages import planted_flow

if __name__ == "__main__":
    main(planted_flow, __doc__)
