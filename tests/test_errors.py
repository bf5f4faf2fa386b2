"""PollError accepts only the fixed reasons: ``reason`` is a bounded label of every target's
cache_exporter_poll_errors_total, and a stray value would be a new series per typo."""

from __future__ import annotations

import pytest

from exporter.errors import REASONS, PollError


def test_an_unknown_reason_is_refused_even_without_asserts():
    # A ValueError, not an AssertionError: `python -O` strips asserts, never a raise.
    with pytest.raises(ValueError, match="unknown failure reason 'Timeout'"):
        PollError("Timeout", "misspelt")


@pytest.mark.parametrize("reason", REASONS)
def test_every_reason_is_accepted(reason):
    err = PollError(reason, "detail")
    assert err.reason == reason
    assert str(err).endswith(": detail")
