"""DVC stage `patterns`: `python -m flows.patterns`."""

from flows._cli import main
from flows.stages import patterns_flow

if __name__ == "__main__":
    main(patterns_flow, __doc__)
