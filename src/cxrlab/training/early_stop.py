"""Early stopping on the validation loss (``--patience``)."""

from __future__ import annotations

from collections.abc import Sequence


def stalled_epochs(val_losses: Sequence[float]) -> int:
    """How many epochs have passed since the lowest validation loss so far (0 when the last
    epoch was the lowest, or when there is no epoch yet). A tie is not an improvement."""
    if not val_losses:
        return 0
    best = min(range(len(val_losses)), key=lambda i: (val_losses[i], i))
    return len(val_losses) - 1 - best
