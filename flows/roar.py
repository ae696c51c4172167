"""DVC stage `roar`: `python -m flows roar` (`python -m flows.roar` works too, see flows/__main__.py)."""

from flows._cli import main
from flows.stages import roar_flow

if __name__ == "__main__":
    main(roar_flow, __doc__)
