"""DVC stage `text`: `python -m flows text` (`python -m flows.text` works too, see flows/__main__.py)."""

from flows._cli import main
from flows.stages import text_flow

if __name__ == "__main__":
    main(text_flow, __doc__)
