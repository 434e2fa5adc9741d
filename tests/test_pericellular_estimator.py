"""The service's pericellular estimator against the twin's plant, recipe growth, cells clock.

controller/core/pericellular.py runs in the service on measured headspace O2; simulators/plant.py
runs the same physics on the true chamber O2. Fed the same trajectory they must agree to rounding
(docs/physics.md §B7), and the cells-side harvest statistics the engine keeps live must equal what
the twin's summary computes afterwards from its trace.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from common.config_errors import ConfigError, load_toml_model, validate_model
from controller.core.exposure import CELLS_KEYS, ExposureClock, cells_stats
from controller.core.pericellular import (
    HOLD_UNTRUSTED_S,
    CultureAtmosphere,
    CultureModel,
    PericellularEstimator,
    grow,
    steady_cell_um,
)
from controller.core.recipe import Growth, Harvest, Phase, Recipe, check_growth
from controller.core.recipe_engine import Measured, RecipeEngine
from controller.service.site import SiteConfig
from simulators.plant import Plant
from simulators.summary import summarize
from simulators.twin import DoorOpening, run_twin
from simulators.vessel import AtmosphereSection, Vessel, load_vessel, with_recipe_growth

ROOT = Path(__file__).resolve().parent.parent


def _drive_plant(vessel: Vessel, hours: float, seed: int = 3) -> tuple[list[float], list[float]]:
    """Advance ``vessel``'s plant with a purge, a hold, a door and a warm-up; compare each cycle.

    Returns the plant's and the estimator's pericellular O2 (%-equivalent) after every step.
    """
    culture = vessel.culture_model()
    assert culture is not None
    plant = Plant(vessel)
    est = PericellularEstimator(culture)
    s = plant.state
    est.update(1.0, plant.gas_reading(s.o2_frac, vessel.o2_sensor.basis), s.temp_c)
    rng = random.Random(seed)
    truth, estimate = [], []
    for n in range(int(hours * 3600)):
        t = n + 1.0
        plant.door_open = 5400.0 <= t < 5430.0
        n2 = 20.0 if s.o2_frac > 0.02 else rng.uniform(0.5, 3.0)
        plant.advance(1.0, n2, 0.0, 0.0, 0.2, 300.0 if s.temp_c < 37.0 else 100.0)
        value = est.update(1.0, plant.gas_reading(s.o2_frac, vessel.o2_sensor.basis), s.temp_c)
        assert value is not None
        truth.append(plant.pericellular_o2_pct())
        estimate.append(value)
    return truth, estimate


@pytest.mark.parametrize("with_atmosphere", [False, True])
def test_estimator_on_the_true_chamber_o2_reproduces_the_plant(with_atmosphere: bool) -> None:
    """Same headspace trajectory in, same pericellular O2 out (growing cells, warm-up, door)."""
    vessel = load_vessel("workstation-100l")
    assert vessel.culture is not None
    culture = vessel.culture.model_copy(
        update={"growth_per_day": 0.8, "max_cells_per_cm2": 6e4, "vent_tau_min": 5.0}
    )
    update: dict[str, object] = {"culture": culture}
    if with_atmosphere:
        update["atmosphere"] = AtmosphereSection(
            barometric_mmhg=712.0, humidity_frac=0.95, temperature_dependent=True, salinity=8.0
        )
        update["o2_sensor"] = vessel.o2_sensor.model_copy(update={"basis": "wet_pct"})
    vessel = vessel.model_copy(update=update)
    truth, estimate = _drive_plant(vessel, hours=2.0)
    worst = max(abs(a - b) for a, b in zip(truth, estimate, strict=True))
    assert worst < 1e-6  # %-equivalent: the same numbers up to rounding
    assert min(truth) < 2.5 < max(truth)  # the trajectory did go somewhere


def test_estimator_bridges_a_short_gap_and_flags_a_long_one() -> None:
    culture = CultureModel(cells_per_cm2=2.5e4)
    est = PericellularEstimator(culture)
    assert est.update(1.0, None, 37.0) is None  # nothing trusted yet: no estimate
    first = est.update(1.0, 2.0, 37.0)
    assert first is not None
    assert first < 2.0  # the cells sit below the headspace
    for _ in range(int(HOLD_UNTRUSTED_S)):
        assert est.update(1.0, None) is not None
    assert est.update(1.0, None) is None
    assert est.update(1.0, 2.0) is not None


def test_estimator_snapshot_restores_the_same_trajectory() -> None:
    culture = CultureModel(cells_per_cm2=3e4, growth_per_day=1.0, vent_tau_min=10.0)
    a = PericellularEstimator(culture)
    for n in range(600):
        a.update(1.0, 20.9 if n < 100 else 1.0, 37.0)
    b = PericellularEstimator.restore(culture, a.snapshot())
    for _ in range(600):
        assert a.update(1.0, 1.0, 37.0) == b.update(1.0, 1.0, 37.0)


def test_partial_pressure_bases_by_hand() -> None:
    """dry: x (P - RH p_w); wet: x P; pp: x 760 (mmHg); no atmosphere: x 760 whatever the basis."""
    atm = CultureAtmosphere(barometric_mmhg=700.0, humidity_frac=1.0)
    p_w = 47.07  # Buck at 37 degC, mmHg
    dry = PericellularEstimator(CultureModel(o2_basis="dry_pct", atmosphere=atm))
    assert dry.po2_mmhg(5.0, 37.0, 700.0) == pytest.approx(0.05 * (700.0 - p_w), abs=0.01)
    wet = PericellularEstimator(CultureModel(o2_basis="wet_pct", atmosphere=atm))
    assert wet.po2_mmhg(5.0, 37.0, 700.0) == pytest.approx(35.0)
    pp = PericellularEstimator(CultureModel(o2_basis="pp_pct", atmosphere=atm))
    assert pp.po2_mmhg(5.0, 37.0, 700.0) == pytest.approx(38.0)
    legacy = PericellularEstimator(CultureModel(o2_basis="wet_pct"))
    assert legacy.po2_mmhg(5.0, 37.0, 700.0) == pytest.approx(38.0)


def test_uptake_rises_with_growth_and_stops_at_the_cap() -> None:
    capped = CultureModel(cells_per_cm2=1e4, growth_per_day=1.0, max_cells_per_cm2=4e4)
    est = PericellularEstimator(capped)
    est.update(1.0, 5.0, 37.0)
    start = est.estimate_pct()
    for _ in range(3 * 86400 // 5):
        est.update(5.0, 5.0, 37.0)
    # logistic, exact: K / (1 + (K/X0 - 1) e^(-r t))
    assert est.cells_per_cm2 == pytest.approx(4e4 / (1 + 3 * math.exp(-3.0)), rel=1e-9)
    # more cells, more uptake, less O2 at the cells: the steady balance at the final density
    h = capped.henry_um_per_mmhg
    drop_um = est.jmax_um_m_s(37.0) * capped.depth_mm * 1e-3 / capped.diffusivity_m2_s
    expected = steady_cell_um(h * 0.05 * 760.0, drop_um, capped.km_um) / h / 760.0 * 100.0
    assert est.estimate_pct() == pytest.approx(expected, rel=1e-3)
    assert est.estimate_pct() < start - 0.3
    assert grow(1e4, 1.0, None, 86400.0) == pytest.approx(1e4 * math.e)


def _growth_error(data: dict[str, object]) -> str:
    with pytest.raises(ConfigError) as err:
        validate_model("r.toml", {"name": "r", "growth": data, "phases": _PHASES}, Recipe)
    return str(err.value)


_PHASES = [{"name": "hold", "o2_pct": 2.0, "duration_h": 1.0}]


def test_recipe_growth_validation_messages() -> None:
    ok = validate_model(
        "r.toml",
        {"name": "r", "growth": {"rate_per_day": 0.5, "max_cells_per_cm2": 1e5}, "phases": _PHASES},
        Recipe,
    )
    assert ok.growth == Growth(rate_per_day=0.5, max_cells_per_cm2=1e5)
    assert "growth.rate_per_day" in _growth_error({"rate_per_day": 9.0})
    no_cap = _growth_error({"rate_per_day": 1.0, "max_cells_per_cm2": 0})
    assert "growth.max_cells_per_cm2" in no_cap
    assert "needs a positive rate_per_day" in _growth_error(
        {"rate_per_day": 0.0, "max_cells_per_ml": 1e6}
    )
    assert "growth.doubling_h" in _growth_error({"rate_per_day": 1.0, "doubling_h": 20})
    assert "growth.rate_per_day" in _growth_error({"max_cells_per_cm2": 1e5})
    with pytest.raises(ConfigError, match=r"growth.max_cells_per_cm2: 10000 cells/cm\^2 is below"):
        check_growth(
            ok.model_copy(update={"growth": Growth(rate_per_day=1, max_cells_per_cm2=1e4)}),
            2.5e4,
            None,
            "r.toml",
            "workstation-100l",
        )


def test_recipe_growth_reaches_the_twin_plant() -> None:
    vessel = load_vessel("bioreactor-2l")
    recipe = Recipe(
        name="g",
        growth=Growth(rate_per_day=0.7, max_cells_per_ml=2e6),
        phases=[Phase(name="p", duration_h=0.1)],
    )
    grown = with_recipe_growth(vessel, recipe)
    assert grown.liquid is not None
    assert (grown.liquid.growth_per_day, grown.liquid.max_cells_per_ml) == (0.7, 2e6)
    result = run_twin(recipe, vessel)
    assert result.plant.state.cells_per_ml == pytest.approx(
        grow(5e5, 0.7, 2e6, result.duration_s), rel=1e-9
    )
    too_low = recipe.model_copy(update={"growth": Growth(rate_per_day=1, max_cells_per_ml=1e5)})
    with pytest.raises(ConfigError, match="max_cells_per_ml"):
        with_recipe_growth(vessel, too_low)


def test_live_cells_clock_equals_the_twin_summary() -> None:
    """RecipeEngine(track_cells=True) fed each cycle == summarize() from the trace afterwards."""
    vessel = load_vessel("workstation-100l")
    assert vessel.culture is not None
    sparse = vessel.culture.model_copy(update={"cells_per_cm2": 5e3})
    vessel = vessel.model_copy(update={"culture": sparse})
    recipe = Recipe(
        name="cells",
        phases=[
            Phase(
                name="hold",
                o2_pct=2.0,
                o2_band_pct=0.3,
                co2_pct=5.0,
                until="exposure",
                duration_h=1.0,
                max_duration_h=2.0,
                harvests=[Harvest(name="A", at_exposure_h=0.4), Harvest(name="B", at_exposure_h=1)],
            )
        ],
    )
    result = run_twin(recipe, vessel, doors=[DoorOpening(at_s=2400.0, duration_s=30.0)])
    summary = {h["name"]: h for h in summarize(result)["harvests"]}
    tr = result.trace
    # replay the engine's cells clock cycle by cycle with the latest culture sample
    dt = vessel.control_period_s
    clock = ExposureClock(2.0, 0.3, result.engine.debounce_s)
    cuts = {round(h.at_s, 6): h.name for h in result.engine.harvests}
    k, live = 0, {}
    for t in tr.t_s:
        while k + 1 < len(tr.cells_t_s) and tr.cells_t_s[k + 1] <= t + 1e-9:
            k += 1
        clock.sample(t, dt, tr.cells_o2_pct[k])
        if round(t, 6) in cuts:
            live[cuts[round(t, 6)]] = cells_stats(clock.cut(t))
    assert set(live) == {"A", "B"}
    assert live["B"]["cells_excursions"] == 1
    assert live["B"]["cells_in_band_s"] > 0
    for name, stats in live.items():
        for key in CELLS_KEYS:
            expected = pytest.approx(stats[key], rel=1e-9, abs=1e-6, nan_ok=True)
            assert summary[name][key] == expected, key
    # the twin's batch record shows them, under the same names as a service run's
    from records.twin import twin_record

    rec = twin_record(result, summarize(result), "twin", "", "-")
    for row in rec.harvests:
        assert row.cells_in_band_s == summary[row.name]["cells_in_band_s"]
        assert row.cells_excursions == summary[row.name]["cells_excursions"]
    assert rec.harvests[1].pericellular_mean_pct is not None
    # the engine does the same when told to track the cells
    engine = RecipeEngine(recipe, track_cells=True)
    engine.start(0.0)
    engine.step(dt, dt, Measured(o2_pct=2.0, cells_o2_pct=1.9))
    engine.step(2 * dt, dt, Measured(o2_pct=2.0, cells_o2_pct=None))
    restored = RecipeEngine.restore(recipe, engine.snapshot())
    assert restored.cells_clock == engine.cells_clock
    assert restored.cells_clock is not None
    assert restored.cells_clock.exposure_s == dt


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("depth_mm = 0", "reactors[0].culture.depth_mm: got 0; allowed: input should be greater"),
        (
            "cells_per_cm2 = 5e4\nmax_cells_per_cm2 = 1e4",
            "reactors[0].culture: max_cells_per_cm2 10000 is below cells_per_cm2 50000",
        ),
        ("width_mm = 3", "reactors[0].culture.width_mm: unknown key; allowed keys: atmosphere"),
        ('o2_basis = "ppm"', "reactors[0].culture.o2_basis: got 'ppm'"),
    ],
)
def test_site_culture_section_errors_name_the_field(
    tmp_path: Path, body: str, message: str
) -> None:
    text = (ROOT / "examples/sites/sim.toml").read_text()
    section = f"[reactors.culture]\n{body}\n\n[reactors.limits]"
    path = tmp_path / "site.toml"
    path.write_text(text.replace("[reactors.limits]", section, 1))
    with pytest.raises(ConfigError) as err:
        load_toml_model(path, SiteConfig)
    assert message in str(err.value)
