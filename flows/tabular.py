"""DVC stage `tabular`: `python -m flows tabular` (`python -m flows.tabular` works too, see flows/__main__.py)."""

from flows._cli import main
from flows.stages import tabular_flow

if __name__ == "__main__":
    main(tabular_flow, __doc__)
