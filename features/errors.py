"""The errors funnelcast raises on purpose: bad data, config, sources, stores and destinations.

Every one derives from :class:`FunnelcastError` and carries a message a person can act on (what was
wrong and where). The command line reports exactly these as one paragraph with exit code 2; any
other exception is a bug and shows as one, with its traceback. Each class also derives from the
built-in it used to be (``ValueError``, ``RuntimeError``), so ``except ValueError`` keeps working.

This module sits at the bottom of the house (``features``), so training and serving derive their
own errors from it without importing each other.
"""

from __future__ import annotations


class FunnelcastError(Exception):
    """Base of every error funnelcast raises on purpose; ``kind`` says what was at fault, in a word."""

    kind = "input"

    @property
    def headline(self) -> str:
        """What the CLI says before the message: ``bad input``, ``bad config``, ``delivery failed``..."""
        return f"bad {self.kind}"


class EventDataError(FunnelcastError, ValueError):
    """Input data that breaks the event contract; the message names source, column, rows and values."""


class ConfigError(FunnelcastError, ValueError):
    """A funnel config that cannot be used, with a message naming the field and the fix."""

    kind = "config"


class TrainingDataError(FunnelcastError, ValueError):
    """Data that cannot train a target: no labelled row, one class, too few cutoffs for a fold."""


class DestinationError(FunnelcastError, OSError):
    """A place funnelcast was asked to write (a folder for reports, simulations or a store) that it cannot."""

    kind = "destination"
