"""DVC stage `data`: `python -m flows.data`."""

from flows._cli import main
from flows.stages import data_flow

if __name__ == "__main__":
    main(data_flow, __doc__)
