"""The batch record of one run: plain data for :mod:`records.render`.

It is gathered by :mod:`records.gather` (service runs) or :mod:`records.twin` (twin runs).

Every number here is read from the run journal, the audit trail or the store (or, for a twin run,
from its result and summary); the few derived ones (excursion times and peaks, gas integrated over
telemetry, data gaps) say what they were derived from in docs/records.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from controller.core.recipe import Recipe
from records.analysis import AlarmSpan, Excursion, Gap

SERIES = (
    "t_s",
    "o2_pct",
    "o2_sp_pct",
    "o2_band_pct",
    "do_pct",
    "do_sp_pct",
    "co2_pct",
    "co2_sp_pct",
    "temp_c",
    "temp_sp_c",
    "exposure_s",
    "n2_lpm",
    "air_lpm",
    "o2_lpm",
    "co2_lpm",
    "pericellular_o2_pct",
)
"""Columns of :attr:`BatchRecord.series` (what the plots draw)."""


@dataclass(slots=True)
class PhaseRow:
    """A recipe phase, planned and as run (times: run seconds)."""

    index: int
    name: str
    targets: str
    end_rule: str
    planned_start_s: float | None
    planned_s: float
    started_s: float | None = None
    ended_s: float | None = None
    exposure_s: float | None = None
    outcome: str = "not reached"

    @property
    def elapsed_s(self) -> float | None:
        """How long it ran (so far), s."""
        if self.started_s is None or self.ended_s is None:
            return None
        return self.ended_s - self.started_s


@dataclass(slots=True)
class Confirmation:
    """Who collected a harvest, when, into what."""

    by: str
    t_s: float
    volume_ml: float | None
    container: str
    audit_seq: int | None = None
    audit_utc: str = ""


@dataclass(slots=True)
class HarvestRow:
    """A harvest: what the recipe planned, and the journaled statistics of its window."""

    name: str
    phase: str
    action: str
    planned_exposure_s: float
    latest_s: float | None
    setpoint_pct: float | None
    band_pct: float | None
    released: bool = False
    at_s: float | None = None
    opened_s: float | None = None
    window_s: float | None = None
    exposure_s: float | None = None
    in_band_frac: float | None = None
    o2_mean_pct: float | None = None
    dose_error_pct_h: float | None = None
    excursions_journal: int | None = None
    excursion_s_journal: float | None = None
    forced: bool = False
    confirmation: Confirmation | None = None
    excursions: list[Excursion] = field(default_factory=list)
    pericellular_mean_pct: float | None = None
    cells_window_s: float | None = None
    """Cells side (docs/physics.md §B7): the same exposure rules on the pericellular O2 (the
    service's estimate from measured headspace O2, or the twin's plant) -- window, s."""
    cells_in_band_s: float | None = None
    """Time the pericellular O2 spent in the band within the cells' window, s."""
    cells_o2_mean_pct: float | None = None
    """Mean pericellular O2 over the cells' window, %-equivalent."""
    cells_dose_error_pct_h: float | None = None
    """Integral of |pericellular O2 - set point| over the cells' window, %·h."""
    cells_excursions: int | None = None
    """Excursions of the pericellular O2 (same debounce as the chamber's)."""
    cells_excursion_s: float | None = None
    """Their total length, s."""

    @property
    def in_band_s(self) -> float | None:
        """In-band time within the window, s (in-band fraction x window length)."""
        if self.in_band_frac is None or self.window_s is None:
            return None
        return self.in_band_frac * self.window_s


@dataclass(slots=True)
class AuditRow:
    """One audit record of the run (values as recorded: JSON text)."""

    seq: int
    utc: str
    user: str
    role: str
    action: str
    old: str
    new: str
    reason: str
    outcome: str
    hash: str


@dataclass(slots=True)
class Instrument:
    """A device of the reactor as the site file describes it."""

    name: str
    driver: str
    roles: str
    connection: str
    serial_number: str
    calibration: str


@dataclass(slots=True)
class Outage:
    """The controller was not running (journal: outages), run seconds and UTC."""

    start_s: float
    end_s: float
    start_utc: datetime | None

    @property
    def seconds(self) -> float:
        """Length, s."""
        return self.end_s - self.start_s


@dataclass(slots=True)
class BatchRecord:
    """Everything one record shows."""

    source: str
    """``service`` (journal + audit + store) or ``twin`` (a simulated run)."""
    run_id: str
    site: str
    reactor: str
    reactor_name: str
    vessel: dict[str, str]
    recipe: Recipe
    recipe_sha256: str
    recipe_toml: str
    status: str
    provisional: bool
    started_utc: datetime | None
    ended_utc: datetime | None
    last_s: float
    """Run time of the last journaled cycle, s."""
    period_s: float
    debounce_s: float
    generated_utc: datetime
    store: str
    phases: list[PhaseRow] = field(default_factory=list)
    harvests: list[HarvestRow] = field(default_factory=list)
    selected_harvest: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    alarm_spans: list[AlarmSpan] = field(default_factory=list)
    audit: list[AuditRow] = field(default_factory=list)
    audit_head: tuple[int, str] | None = None
    audit_check: str = ""
    outages: list[Outage] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    missing_seq: list[tuple[int, int]] = field(default_factory=list)
    telemetry_points: int = 0
    event_points: int = 0
    gas_l: dict[str, float] = field(default_factory=dict)
    gas_note: str = ""
    instruments: list[Instrument] = field(default_factory=list)
    series: dict[str, list[float | None]] = field(default_factory=dict)
    open_excursions: list[Excursion] = field(default_factory=list)
    """Excursions after the last released harvest (the window still open)."""
    notes: list[str] = field(default_factory=list)
    """Discrepancies and caveats the reader must see (shown at the top)."""

    def utc_at(self, t_s: float | None) -> datetime | None:
        """UTC of a run time (run time counts from the journaled start, outages included)."""
        if t_s is None or self.started_utc is None:
            return None
        return self.started_utc + timedelta(seconds=t_s)

    @property
    def shown_harvests(self) -> list[HarvestRow]:
        """The harvests the record details (one with ``--harvest``, else all)."""
        if self.selected_harvest is None:
            return self.harvests
        return [h for h in self.harvests if h.name == self.selected_harvest]
