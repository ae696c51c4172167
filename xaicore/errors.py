"""The one exception type xaicore raises for bad input, so a caller (or a CLI) can show one line."""


class XaiCoreError(ValueError):
    """Bad input, bad configuration, missing data or a corrupt archive; the message names the problem."""


class NotApplicable(XaiCoreError):
    """A method that cannot explain this model at all (e.g. Grad-CAM on a network without a conv layer)."""
