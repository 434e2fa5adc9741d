"""The operator page's chart history (operator_web/history.py): a ring that starts small.

Hundreds of reactors in one service each keep a history buffer; a buffer holds only the rows it
has been given (doubling as it fills) until it reaches 48 h, then overwrites the oldest.
"""

from __future__ import annotations

import numpy as np

from operator_web.history import COLUMNS, FIRST_ROWS, SeriesBuffer


def _fill(buf: SeriesBuffer, start: int, stop: int) -> None:
    for i in range(start, stop):
        buf.append(float(i), {COLUMNS[0]: float(i) / 10.0})


def test_a_young_buffer_holds_only_what_it_was_given() -> None:
    """A 48 h buffer at 1 s starts at FIRST_ROWS rows and doubles; every row comes back."""
    buf = SeriesBuffer.for_period(1.0)
    assert buf.capacity > 170_000
    assert len(buf._t) == FIRST_ROWS
    _fill(buf, 0, 3 * FIRST_ROWS + 5)
    assert len(buf._t) == 4 * FIRST_ROWS
    out = buf.window(max_points=10**9)
    assert out["t"] == [float(i) for i in range(3 * FIRST_ROWS + 5)]
    assert out[COLUMNS[0]][-1] == (3 * FIRST_ROWS + 4) / 10.0
    assert buf.last_t == 3 * FIRST_ROWS + 4


def test_a_full_buffer_overwrites_the_oldest_rows() -> None:
    """Past its capacity the ring keeps the newest ``capacity`` rows, oldest first."""
    buf = SeriesBuffer(5000)
    _fill(buf, 0, 12_345)
    assert len(buf._t) == 5000
    out = buf.window(max_points=10**9)
    assert out["t"] == [float(i) for i in range(12_345 - 5000, 12_345)]
    assert buf.last_t == 12_344.0


def test_loading_a_resumed_runs_history_grows_the_buffer_once() -> None:
    """load() takes the newest ``capacity`` rows of a resumed run; appends continue after."""
    buf = SeriesBuffer(20_000)
    t = np.arange(9000, dtype=np.float64)
    data = np.tile(t.astype(np.float32) / 10.0, (len(COLUMNS), 1))
    buf.load(t, data)
    assert buf.size == 9000
    _fill(buf, 9000, 9010)
    out = buf.window(since_s=8990.0, max_points=10**9)
    assert out["t"] == [float(i) for i in range(8991, 9010)]
