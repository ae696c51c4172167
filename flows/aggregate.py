"""DVC stage `aggregate`: `python -m flows aggregate` (`python -m flows.aggregate` works too, see flows/__main__.py)."""

from flows._cli import main
from flows.stages import aggregate_flow

if __name__ == "__main__":
    main(aggregate_flow, __doc__)
