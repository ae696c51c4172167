"""DVC stage `explain`: `python -m flows explain` (`python -m flows.explain` works too, see flows/__main__.py)."""

from flows._cli import main
from flows.stages import explain_flow

if __name__ == "__main__":
    main(explain_flow, __doc__)
