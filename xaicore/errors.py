"""The one exception type xaicore raises for bad input, so a caller (or a CLI) can show one line."""


class XaiCoreError(ValueError):
    """Bad input, bad configuration, missing data or a corrupt archive; the message names the problem."""
