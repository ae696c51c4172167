"""DVC stage `controls`: `python -m flows controls` (`python -m flows.controls` works too, see flows/__main__.py)."""

from flows._cli import main
from flows.stages import controls_flow

if __name__ == "__main__":
    main(controls_flow, __doc__)
