"""From logits to the probabilities a run reports: a softmax temperature, and a class-prior shift.

Both are transforms of the logits, so the exported model carries them as one scale and one
bias: ``softmax(logits / temperature + log(prior weights))``. The temperature is fitted on
the set that chooses (the validation split, or a labelled target sample); the prior weights
``target prior / source prior`` come from an adaptation to a target site (Saerens et al.
2002), estimated by ``cxrlab.evaluate.adapt``.
"""

from __future__ import annotations

import math

import numpy as np

# log T is searched in [-3, 3]: temperatures from 0.05 to 20, far beyond what fitted nets need.
_LOG_T_BOUNDS = (-3.0, 3.0)


def probabilities(logits: np.ndarray, temperature: float | None = None, log_weights=None) -> np.ndarray:
    """``softmax(logits / temperature + log_weights)`` in float64; both parts optional."""
    z = np.asarray(logits, dtype=np.float64)
    if temperature is not None and temperature != 1.0:
        z = z / temperature
    if log_weights is not None:
        z = z + np.asarray(log_weights, dtype=np.float64)
    return softmax(z)


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of each row of ``logits``, in their dtype (scipy's ``softmax``,
    without importing scipy)."""
    shifted = np.exp(logits - np.max(logits, axis=1, keepdims=True))
    return shifted / np.sum(shifted, axis=1, keepdims=True)


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    probs = probabilities(logits, temperature)
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None))))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T that minimises the negative log-likelihood of ``softmax(logits / T)``
    on ``labels`` (Guo et al. 2017); it rescales confidence and keeps every ranking."""
    from scipy.optimize import minimize_scalar  # here: most runs fit no temperature, and scipy costs ~1 s

    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    result = minimize_scalar(
        lambda log_t: negative_log_likelihood(logits, labels, math.exp(log_t)),
        bounds=_LOG_T_BOUNDS,
        method="bounded",
        options={"xatol": 1e-4},
    )
    return round(math.exp(float(result.x)), 4)


def prior_log_weights(source_prior, target_prior) -> np.ndarray:
    """The logit bias that moves posteriors from the source class prior to the target's."""
    source, target = np.asarray(source_prior, dtype=np.float64), np.asarray(target_prior, dtype=np.float64)
    return np.log(np.clip(target, 1e-12, None)) - np.log(np.clip(source, 1e-12, None))
