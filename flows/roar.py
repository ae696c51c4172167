"""DVC stage `roar`: `python -m flows.roar`."""

from flows._cli import main
from flows.stages import roar_flow

if __name__ == "__main__":
    main(roar_flow, __doc__)
