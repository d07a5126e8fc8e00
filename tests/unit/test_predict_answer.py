"""The predict answer's ages: headers and body from one formatting, equal to round(x, 3)."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from gateway.api.predict import _3dp

# Halfway cases in decimal that binary floats sit just above or below, and plain ones.
EDGES = [0.0, 0.0005, 0.0015, 0.0025, 1.0005, 2.675, 1.2345, 0.1235, 59.9995, 86_399.9995, 1e9]


def test_the_text_is_three_places_and_its_value_is_round_to_three() -> None:
    for value in EDGES:
        text = _3dp(value)
        assert text is not None
        assert text == b"%.3f" % value
        assert float(text) == round(value, 3)
    assert _3dp(None) is None


@given(st.floats(min_value=0.0, max_value=1e12, allow_nan=False))
def test_for_any_age_the_body_value_is_round_to_three(value: float) -> None:
    text = _3dp(value)
    assert text is not None
    assert float(text) == round(value, 3)
    assert math.isclose(float(text), value, abs_tol=0.0005 + 1e-9)
