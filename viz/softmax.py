"""Softmax with a temperature, its entropy, and the maths behind the softmax sliders.

The sliders hold some of a prediction's logits (the top classes); the other logits stay as the model made them.
Moving one slider changes every probability at once: the moved class rises, every other class falls (monotonicity
and non-locality), and the probabilities always sum to 1.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def softmax(logits: Sequence[float] | np.ndarray, temperature: float = 1.0, axis: int = -1) -> np.ndarray:
    """softmax(logits / temperature) along ``axis``, computed stably (the max is subtracted first), in float64."""
    if not temperature > 0:
        raise ValueError(f"Temperature must be > 0, got {temperature}.")
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    if scaled.size == 0:
        raise ValueError("softmax needs at least one logit.")
    shifted = scaled - scaled.max(axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=axis, keepdims=True)


def entropy(probabilities: Sequence[float] | np.ndarray, axis: int = -1) -> np.ndarray | float:
    """Shannon entropy in nats: 0 for a one-hot distribution, log(n) for a uniform one (0 log 0 = 0)."""
    p = np.asarray(probabilities, dtype=np.float64)
    terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    result = terms.sum(axis=axis)
    return float(result) if np.ndim(result) == 0 else result


@dataclass
class SoftmaxView:
    """What the sliders show: every class's logit and probability, and the distribution's entropy."""

    labels: list[str]
    logits: np.ndarray          # (classes,) as the sliders set them
    probabilities: np.ndarray   # (classes,) softmax(logits / temperature)
    temperature: float
    entropy: float              # nats
    max_entropy: float          # log(classes): a flat distribution
    probability: str = "softmax"   # or "sigmoid": one independent probability per label (SigLIP)


def sigmoid(logits: Sequence[float] | np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Independent sigmoids of logits / temperature (SigLIP's probabilities), in float64."""
    if not temperature > 0:
        raise ValueError(f"Temperature must be > 0, got {temperature}.")
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    return np.exp(-np.logaddexp(0.0, -scaled))


def softmax_view(labels: Sequence[str], logits: Sequence[float] | np.ndarray, temperature: float = 1.0,
                 probability: str = "softmax") -> SoftmaxView:
    """Probabilities and entropy of ``logits`` at ``temperature``: one softmax over the labels, or (``"sigmoid"``,
    SigLIP) an independent sigmoid per label, whose entropy is the sum of each label's yes/no entropy."""
    logits = np.asarray(logits, dtype=np.float64)
    if len(labels) != len(logits):
        raise ValueError(f"{len(labels)} labels for {len(logits)} logits.")
    if probability == "sigmoid":
        p = sigmoid(logits, temperature)
        spread = float(entropy(np.stack([p, 1 - p]), axis=0).sum())
        return SoftmaxView(list(labels), logits, p, float(temperature), spread, float(len(logits) * np.log(2)),
                           probability)
    if probability != "softmax":
        raise ValueError(f"Unknown probability {probability!r}: use 'softmax' or 'sigmoid'.")
    probabilities = softmax(logits, temperature)
    return SoftmaxView(list(labels), logits, probabilities, float(temperature), float(entropy(probabilities)),
                       float(np.log(len(logits))))


def apply_sliders(model_logits: Sequence[float] | np.ndarray, slider_classes: Sequence[int],
                  slider_values: Sequence[float]) -> np.ndarray:
    """The full logit vector with the slider classes set to the sliders' values (the rest kept as the model's)."""
    logits = np.array(model_logits, dtype=np.float64)
    if len(slider_classes) != len(slider_values):
        raise ValueError(f"{len(slider_values)} slider values for {len(slider_classes)} slider classes.")
    for index, value in zip(slider_classes, slider_values, strict=True):
        if not 0 <= index < len(logits):
            raise ValueError(f"Slider class {index} is outside the {len(logits)} classes.")
        logits[index] = float(value)
    return logits
