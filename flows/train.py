"""DVC stage `train`: `python -m flows train` (`python -m flows.train` works too, see flows/__main__.py)."""

from flows._cli import main
from flows.stages import train_flow

if __name__ == "__main__":
    main(train_flow, __doc__)
