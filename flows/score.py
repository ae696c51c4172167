"""DVC stage `score`: `python -m flows score` (`python -m flows.score` works too, see flows/__main__.py)."""

from flows._cli import main
from flows.stages import score_flow

if __name__ == "__main__":
    main(score_flow, __doc__)
