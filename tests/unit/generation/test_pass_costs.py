"""The cost model behind a row's own feeding pass in a batch (fast-forward): `_PassCosts`."""

from __future__ import annotations

import pytest

from realizar_ort.generation.scheduler import PASS_MARGIN, _PassCosts


def test_unmeasured_costs_are_conservative_guesses() -> None:
    costs = _PassCosts(8)
    costs.record_step(4, 0.040)
    assert costs.step(4) == pytest.approx(0.040)
    assert costs.step(8) == pytest.approx(0.080)  # nearest measured size, scaled per row
    assert costs.feed(4) == pytest.approx(0.040)  # 4 tokens of one row: a step of 4 rows
    assert costs.feed(2) == pytest.approx(0.020)  # (nearest measured, scaled per row)
    assert costs.feed(16) == pytest.approx(0.160)  # beyond max_batch: growing with its tokens


def test_a_freed_row_is_worth_a_share_of_a_step_only_while_requests_wait() -> None:
    costs = _PassCosts(8)
    costs.record_step(8, 0.040)
    assert costs.row_step(8, queued=False) == pytest.approx(0.005)  # b - 1 rows not measured yet: the share
    costs.record_step(7, 0.038)
    assert costs.row_step(8, queued=True) == pytest.approx(0.005)  # a waiting request takes the row
    assert costs.row_step(8, queued=False) == pytest.approx(0.002)  # else only the step's marginal row
    costs.record_step(7, 0.060)  # noise can make b - 1 rows look dearer: then nothing is worth a pass
    assert costs.row_step(8, queued=False) == 0.0


def test_measured_passes_replace_the_guess_per_length_bucket() -> None:
    costs = _PassCosts(8)
    costs.record_step(8, 0.040)
    costs.record_feed(5, 0.010)
    assert costs.feed(7) == pytest.approx(0.010)  # 5 and 7 share the bucket of 8
    costs.record_feed(6, 0.020)
    assert costs.feed(8) == pytest.approx(0.010 + _PassCosts.ALPHA * 0.010)  # a moving average
    assert costs.feed(9) == pytest.approx(0.040 * 9 / 8)  # the next bucket is not measured
    # the rule: a run of n tokens gets its pass when n x row_step > PASS_MARGIN x feed
    n = 8
    costs.record_step(7, 0.039)
    assert n * costs.row_step(8, queued=True) > PASS_MARGIN * costs.feed(n)
    assert not n * costs.row_step(8, queued=False) > PASS_MARGIN * costs.feed(n)
