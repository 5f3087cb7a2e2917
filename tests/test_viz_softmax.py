"""Softmax with temperature, entropy and the slider maths against plain reference code."""
from __future__ import annotations

import math

import numpy as np
import pytest

from viz.softmax import apply_sliders, entropy, softmax, softmax_view


def reference_softmax(logits, temperature=1.0):
    exps = [math.exp(x / temperature) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


def reference_entropy(probabilities):
    return -sum(p * math.log(p) for p in probabilities if p > 0)


@pytest.mark.parametrize("temperature", [0.05, 0.5, 1.0, 3.0, 100.0])
def test_softmax_with_temperature_matches_the_textbook_formula(temperature):
    logits = [2.0, -1.0, 0.5, 3.25, 0.0]
    np.testing.assert_allclose(softmax(logits, temperature), reference_softmax(logits, temperature), rtol=1e-12)


def test_softmax_is_stable_for_large_logits_and_works_along_an_axis():
    big = np.array([1000.0, 1001.0, 999.0])
    np.testing.assert_allclose(softmax(big), reference_softmax(big - 1000.0), rtol=1e-12)
    matrix = np.array([[1.0, 2.0, 3.0], [0.0, -1.0, 4.0]])
    rows = softmax(matrix, axis=1)
    cols = softmax(matrix, axis=0)
    for r in range(2):
        np.testing.assert_allclose(rows[r], reference_softmax(matrix[r]), rtol=1e-12)
    for c in range(3):
        np.testing.assert_allclose(cols[:, c], reference_softmax(matrix[:, c]), rtol=1e-12)


def test_temperature_runs_from_one_hot_to_uniform_and_must_be_positive():
    logits = [1.0, 2.0, 4.0, 0.5]
    sharp = softmax(logits, 0.01)
    flat = softmax(logits, 1e4)
    assert sharp[2] > 1 - 1e-12
    np.testing.assert_allclose(flat, 0.25, atol=1e-3)
    with pytest.raises(ValueError, match="Temperature"):
        softmax(logits, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        softmax([], 1.0)


def test_entropy_in_nats():
    for p in ([1.0, 0.0, 0.0], [0.25] * 4, [0.7, 0.2, 0.1], reference_softmax([1.0, -2.0, 0.3])):
        assert entropy(p) == pytest.approx(reference_entropy(p), abs=1e-12)
    assert entropy([0.25] * 4) == pytest.approx(math.log(4))
    np.testing.assert_allclose(entropy(np.array([[1.0, 0.0], [0.5, 0.5]])), [0.0, math.log(2)])


def test_entropy_rises_with_temperature():
    logits = [3.0, 1.0, 0.2, -1.0]
    values = [softmax_view(list("abcd"), logits, t).entropy for t in (0.1, 0.5, 1.0, 2.0, 10.0)]
    assert all(a < b for a, b in zip(values, values[1:], strict=False))
    assert softmax_view(list("abcd"), logits).max_entropy == pytest.approx(math.log(4))


@pytest.mark.parametrize("moved", [0, 2, 4])
@pytest.mark.parametrize("temperature", [0.3, 1.0, 4.0])
def test_moving_one_slider_raises_its_class_and_lowers_every_other(moved, temperature):
    model_logits = np.array([4.0, 2.5, 1.0, -0.5, 0.0, 3.0])
    slider_classes = [0, 5, 1, 2, 4]   # the top five; class 3 has no slider
    values = model_logits[slider_classes]
    before = softmax_view([str(i) for i in range(6)], model_logits, temperature).probabilities
    nudged = values.copy()
    nudged[moved] += 1.5
    after = softmax_view([str(i) for i in range(6)], apply_sliders(model_logits, slider_classes, nudged),
                         temperature).probabilities
    target = slider_classes[moved]
    assert after.sum() == pytest.approx(1.0, abs=1e-12)
    assert after[target] > before[target]                          # monotonicity
    others = [i for i in range(6) if i != target]
    assert np.all(after[others] < before[others])                  # non-locality: every other class falls
    assert after[3] < before[3]                                    # including the class without a slider
    expected = reference_softmax(apply_sliders(model_logits, slider_classes, nudged), temperature)
    np.testing.assert_allclose(after, expected, rtol=1e-12)


def test_apply_sliders_replaces_only_the_slider_classes_and_checks_its_input():
    logits = apply_sliders([1.0, 2.0, 3.0], [2, 0], [9.0, -1.0])
    np.testing.assert_array_equal(logits, [-1.0, 2.0, 9.0])
    with pytest.raises(ValueError, match="slider values"):
        apply_sliders([1.0, 2.0], [0], [1.0, 2.0])
    with pytest.raises(ValueError, match="outside"):
        apply_sliders([1.0, 2.0], [5], [1.0])
    with pytest.raises(ValueError, match="labels"):
        softmax_view(["a"], [1.0, 2.0])


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_sigmoid_view_is_one_independent_probability_per_label(temperature):
    logits = [2.0, -1.0, 0.0, 40.0]
    view = softmax_view(list("abcd"), logits, temperature, probability="sigmoid")
    expected = [1.0 / (1.0 + math.exp(-v / temperature)) for v in logits]
    np.testing.assert_allclose(view.probabilities, expected, rtol=1e-12)
    binary = sum(reference_entropy([p, 1 - p]) for p in expected)
    assert view.entropy == pytest.approx(binary) and view.max_entropy == pytest.approx(4 * math.log(2))
    assert view.probability == "sigmoid"
    nudged = softmax_view(list("abcd"), [3.0, -1.0, 0.0, 40.0], temperature, probability="sigmoid")
    np.testing.assert_allclose(nudged.probabilities[1:], view.probabilities[1:])   # the others do not move
    with pytest.raises(ValueError, match="Unknown probability"):
        softmax_view(["a"], [1.0], probability="tanh")
