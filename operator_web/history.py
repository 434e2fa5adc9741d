"""Chart history of each reactor: a ring buffer of every cycle, kept in the service's memory.

48 h of 1 s cycles is 172 800 rows per reactor; the columns are numpy arrays (float32 values,
float64 times), about 10 MB per reactor. The first paint of a chart asks for a window at a
bounded number of points: each bucket of rows becomes its minimum and its maximum, so a short
excursion survives downsampling. Live updates then append single rows on the page.

Times are UTC seconds since the epoch of the service's clock (what uPlot's time axis takes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

COLUMNS = (
    "o2",
    "o2_sp",
    "o2_band",
    "co2",
    "co2_sp",
    "co2_band",
    "temp",
    "temp_sp",
    "temp_band",
    "do",
    "cells",
    "n2_lpm",
    "air_lpm",
    "o2_lpm",
    "co2_lpm",
)
"""Columns of a history row (values in %, degC and L/min; NaN where absent)."""

HISTORY_S = 48 * 3600.0
"""How far back the buffer reaches, s."""


def _num(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    number = float(value)
    return number if math.isfinite(number) else math.nan


FIRST_ROWS = 4096
"""Rows a history buffer holds before it first grows (about an hour at a 1 s period)."""


class SeriesBuffer:
    """A fixed-size ring of rows (time + :data:`COLUMNS`).

    Args:
        capacity: Rows kept; the oldest are overwritten.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = max(2, capacity)
        self._t = np.empty(0, dtype=np.float64)
        self._data = np.empty((len(COLUMNS), 0), dtype=np.float32)
        self._reserve(min(self.capacity, FIRST_ROWS))
        self._head = 0
        self.size = 0

    def _reserve(self, rows: int) -> None:
        """Grow the arrays to ``rows`` (at most the capacity), keeping what they hold.

        A buffer starts small and doubles as it fills, so a reactor whose run is young (or a
        service of hundreds of reactors) does not hold 48 h of rows it has not got: about 60 bytes
        a row, 10 MB per reactor at a 1 s period when full.
        """
        rows = min(rows, self.capacity)
        have = len(self._t)
        if rows <= have:
            return
        self._t = np.concatenate((self._t, np.full(rows - have, np.nan, dtype=np.float64)))
        pad = np.full((len(COLUMNS), rows - have), np.nan, dtype=np.float32)
        self._data = np.concatenate((self._data, pad), axis=1)

    @classmethod
    def for_period(cls, period_s: float, history_s: float = HISTORY_S) -> SeriesBuffer:
        """A buffer holding ``history_s`` of cycles of ``period_s``."""
        return cls(math.ceil(history_s / max(period_s, 1e-3)) + 16)

    def append(self, t_utc_s: float, row: Mapping[str, Any]) -> None:
        """Add one row (missing columns are NaN)."""
        i = self._head
        if i >= len(self._t):  # not wrapped yet (head == size): grow before writing
            self._reserve(2 * len(self._t))
        self._t[i] = t_utc_s
        for k, name in enumerate(COLUMNS):
            self._data[k, i] = _num(row.get(name))
        self._head = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def load(self, t: npt.NDArray[np.float64], data: npt.NDArray[Any]) -> None:
        """Replace the contents with ``t`` and ``data`` (columns x rows, oldest first)."""
        n = min(len(t), self.capacity)
        self._reserve(n)
        self._t[:] = np.nan
        self._data[:] = np.nan
        if n:
            self._t[:n] = t[-n:]
            self._data[:, :n] = data[:, -n:]
        self._head = n % self.capacity
        self.size = n

    @property
    def last_t(self) -> float | None:
        """Time of the newest row."""
        if self.size == 0:
            return None
        return float(self._t[(self._head - 1) % self.capacity])

    def _ordered(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
        if self.size < self.capacity:
            return self._t[: self.size], self._data[:, : self.size]
        h = self._head
        t = np.concatenate((self._t[h:], self._t[:h]))
        data = np.concatenate((self._data[:, h:], self._data[:, :h]), axis=1)
        return t, data

    def window(
        self, since_s: float | None = None, until_s: float | None = None, max_points: int = 2000
    ) -> dict[str, list[float | None]]:
        """Rows with ``since_s < t <= until_s``, at most ``max_points`` (min/max buckets).

        Returns:
            ``{"t": [...], "o2": [...], ...}``: JSON-ready columns, ``None`` for gaps.
        """
        t, data = self._ordered()
        lo = 0 if since_s is None else int(np.searchsorted(t, since_s, side="right"))
        hi = len(t) if until_s is None else int(np.searchsorted(t, until_s, side="right"))
        t, data = t[lo:hi], data[:, lo:hi]
        t, data = downsample(t, data, max(4, max_points))
        out: dict[str, list[float | None]] = {"t": _json_column(t)}
        for k, name in enumerate(COLUMNS):
            out[name] = _json_column(data[k])
        return out


def downsample(
    t: npt.NDArray[np.float64], data: npt.NDArray[np.float32], max_points: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float32]]:
    """At most ``max_points`` rows: each bucket's first time with its minima, last with maxima."""
    n = len(t)
    if n <= max_points:
        return t, data
    per = math.ceil(n / (max_points // 2))
    buckets = math.ceil(n / per)
    pad = buckets * per - n
    if pad:
        t = np.concatenate((t, np.full(pad, t[-1])))
        data = np.concatenate((data, np.full((data.shape[0], pad), np.nan, np.float32)), axis=1)
    tb = t.reshape(buckets, per)
    db = data.reshape(data.shape[0], buckets, per)
    low = np.fmin.reduce(db, axis=2)  # NaN only where a whole bucket is NaN (no warning)
    high = np.fmax.reduce(db, axis=2)
    t_out = np.empty(2 * buckets, dtype=np.float64)
    t_out[0::2] = tb[:, 0]
    t_out[1::2] = tb[:, -1]
    d_out = np.empty((data.shape[0], 2 * buckets), dtype=np.float32)
    d_out[:, 0::2] = low
    d_out[:, 1::2] = high
    return t_out, d_out


def _json_column(values: npt.NDArray[Any]) -> list[float | None]:
    rounded = np.round(values.astype(np.float64), 4)
    return [None if math.isnan(v) else v for v in rounded.tolist()]


def row_from_overview(view: Mapping[str, Any]) -> dict[str, float | None]:
    """A history row from :func:`controller.service.overview.reactor_overview`."""
    values = view["values"]
    outputs = view["outputs"]
    row: dict[str, float | None] = {}
    for key in ("o2", "co2", "temp"):
        v = values[key]
        row[key] = v["value"]
        row[f"{key}_sp"] = v["sp"]
        row[f"{key}_band"] = v["band"]
    row["do"] = values["do"]["value"] if "do" in values else None
    row["cells"] = values["cells"]["value"] if "cells" in values else None
    for key in ("n2_lpm", "air_lpm", "o2_lpm", "co2_lpm"):
        value = outputs.get(key)
        row[key] = None if value is None or isinstance(value, bool) else float(value)
    return row


def row_from_telemetry(msg: Mapping[str, Any]) -> dict[str, float | None]:
    """A history row from a journaled ``telemetry`` message (docs/mqtt.md)."""
    band = msg.get("o2_band_pct")
    return {
        "o2": msg.get("o2_pct"),
        "o2_sp": msg.get("o2_sp_pct"),
        "o2_band": band if msg.get("o2_sp_pct") is not None else None,
        "co2": msg.get("co2_pct"),
        "co2_sp": msg.get("co2_sp_pct"),
        "co2_band": None,
        "temp": msg.get("temp_c"),
        "temp_sp": msg.get("temp_sp_c"),
        "temp_band": None,
        "do": msg.get("do_pct"),
        "cells": msg.get("pericellular_o2_pct"),
        "n2_lpm": msg.get("n2_lpm"),
        "air_lpm": msg.get("air_lpm"),
        "o2_lpm": msg.get("o2_lpm"),
        "co2_lpm": msg.get("co2_lpm"),
    }
