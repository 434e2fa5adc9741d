"""Noise model and limits of the headspace observer (:mod:`controller.core.observer`).

A module of its own so that the observer's module holds no pydantic model: that module is what
``scripts/build-compiled`` compiles with mypyc (a pydantic model cannot be a compiled class).
:mod:`controller.core.observer` re-exports :class:`ObserverTuning`.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ObserverTuning(BaseModel):
    """Noise model and limits of the headspace observer (fractions 0..1, per control period).

    Attributes:
        chamber_sd: Process noise of the chamber balance per period (unmodelled inflow), fraction.
        gain_sd: Random walk of the flow gain g per period (the purge horizon re-learns it).
        leak_sd: Random walk of the leak exchange rate per period, as a share of the nominal
            leak rate (plus ``leak_floor_lpm``).
        leak_floor_lpm: Leak the observer allows for even when the model states none, L/min.
        door_sd: Random walk of the door exchange rate per period while a door is open, 1/s.
        co2_bias_sd: Random walk of the CO2 rate bias per period, fraction/s.
        gain_min / gain_max: Limits of g = V_model / V_true (adaptation stays within them).
        leak_max_factor: Largest leak estimate as a multiple of the nominal leak plus the floor.
        quiet_s: The door's exchange must stay low this long before the door counts as shut, s.
        door_close_share: "Low": below this share of the door's peak exchange.
        lag_sd: Prior uncertainty of the O2 sensor's lag (and transport) as a share of the
            model's (0 = trust the model).
        lag_walk_sd: Random walk of the lag per period, as a share of the model's.
        anchor_dead_times: A purge from a settled chamber is re-simulated from its start with
            the learned parameters for this many dead times (transport + lag), s / s.
        delay_candidates: The horizon also tries transport delays this many periods either
            side of the model's.
        dead_band_sigmas: MFC dead band in tracking, in standard deviations of the rate the PI
            asks because of the estimate's uncertainty (0 = no dead band); the set points are
            held only while the estimated error is within as many standard deviations.
        dead_band_max_fs: Largest dead band as a share of each MFC's full scale.
        dead_band_min_fs: Smallest dead band as a share of full scale (set-point changes below
            an MFC's resolution are not worth sending).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    chamber_sd: float = Field(default=2e-6, gt=0, le=1e-2)
    gain_sd: float = Field(default=2e-4, ge=0, le=1)
    leak_sd: float = Field(default=5e-4, ge=0, le=1)
    leak_floor_lpm: float = Field(default=0.005, ge=0, le=50)
    door_sd: float = Field(default=0.005, gt=0, le=10)
    co2_bias_sd: float = Field(default=2e-9, ge=0, le=1e-3)
    gain_min: float = Field(default=0.2, gt=0, le=1)
    gain_max: float = Field(default=5.0, ge=1, le=100)
    leak_max_factor: float = Field(default=5.0, ge=1, le=100)
    quiet_s: float = Field(default=5.0, ge=0, le=3600)
    door_close_share: float = Field(default=0.05, gt=0, le=1)
    lag_sd: float = Field(default=0.3, ge=0, le=1)
    lag_walk_sd: float = Field(default=2e-4, ge=0, le=1)
    anchor_dead_times: float = Field(default=6.0, ge=0, le=100)
    delay_candidates: int = Field(default=2, ge=0, le=10)
    dead_band_sigmas: float = Field(default=2.0, ge=0, le=20)
    dead_band_max_fs: float = Field(default=0.05, ge=0, le=1)
    dead_band_min_fs: float = Field(default=0.002, ge=0, le=1)
