"""Exceptions with messages a researcher can act on.

Every failure the harness can predict (bad config choice, missing or malformed data,
a quantizer that cannot run here, a diverging loss) raises one of these, so the
pipeline can record it in results.json instead of crashing a sweep or, worse,
producing a silent wrong number.
"""


class QuailError(Exception):
    """Base class of the harness's own errors."""


class ConfigError(QuailError):
    """A config value is unknown or inconsistent; the message names the option."""


class DataError(QuailError):
    """A data file is missing or malformed; the message names the file or split."""


class QuantizerUnavailable(QuailError):
    """A quantizer cannot run on this machine (library missing, device unsupported)."""


class Diverged(QuailError):
    """A training loss became NaN/inf or exceeded the configured bound."""

    def __init__(self, step: int, loss: float, reason: str):
        self.step, self.loss, self.reason = step, loss, reason
        super().__init__(f"loss diverged at step {step}: {reason} (loss={loss})")


def int_option(name: str, value, *, minimum: int, allow_none: bool = False) -> int | None:
    """``value`` as the integer option ``name`` must be (>= ``minimum``; None where allowed), else a
    ConfigError naming it."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}{' or null' if allow_none else ''}, got {value!r}")
    return value
