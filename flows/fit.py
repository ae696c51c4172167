"""DVC stage `fit`: `python -m flows fit` (`python -m flows.fit` works too, see flows/__main__.py)."""

from flows._cli import main
from flows.stages import fit_flow

if __name__ == "__main__":
    main(fit_flow, __doc__)
