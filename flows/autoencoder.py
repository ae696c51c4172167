"""DVC stage `autoencoder`: `python -m flows autoencoder` (`python -m flows.autoencoder` works too, see
flows/__main__.py)."""

from flows._cli import main
from flows.stages import autoencoder_flow

if __name__ == "__main__":
    main(autoencoder_flow, __doc__)
