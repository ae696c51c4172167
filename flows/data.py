"""DVC stage `data`: `python -m flows data` (`python -m flows.data` works too, see flows/__main__.py)."""

from flows._cli import main
from flows.stages import data_flow

if __name__ == "__main__":
    main(data_flow, __doc__)
