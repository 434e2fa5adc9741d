"""Relay autotuning: the analysis on known systems, and `hypoxia tune` on every reference vessel."""

from __future__ import annotations

import math
import random
from collections import deque
from pathlib import Path

import pytest
from typer.testing import CliRunner

from controller.core.loops import LoopTuning
from controller.core.process import ProcessModel
from controller.core.reactor import Actuation, ControllerTuning, ReactorController
from controller.core.recipe_engine import Measured
from controller.engineering.autotune import AutotuneSession, run_autotune
from controller.engineering.loop_analysis import IntegratorModel, fit_integrator, margins, simc_pi
from controller.engineering.tuning_file import load_tuning, tuning_toml
from hypoxia.cli_tuning import tuning_app
from simulators.tuning_twin import autotune_on_twin, operating_phase, verify_on_twin
from simulators.vessel import load_vessel

VESSELS = ["workstation-100l", "incubator-170l", "bioreactor-2l"]


def _bad_tuning(model: ProcessModel, factor: float) -> ControllerTuning:
    """Every loop's model-derived kp multiplied by ``factor`` (Ti unchanged)."""
    nominal = ReactorController(model)
    base = ControllerTuning()
    update = {}
    for name in ("o2", "co2", "temp"):
        pi = getattr(nominal, name).pi
        loop: LoopTuning = getattr(base, name)
        update[name] = loop.model_copy(update={"kp_per_s": pi.kp_per_s * factor, "ti_s": pi.ti_s})
    return base.model_copy(update=update)


def test_margins_of_proportional_control_on_integrator_with_delay() -> None:
    """P control on e^(-theta s)/s: crossover kp, PM = 90 deg - kp theta, GM = pi/2/(kp theta)."""
    found = margins(gain=1.0, dead_time_s=10.0, kp_per_s=0.02, ti_s=1e12)
    assert found.crossover_rad_s == pytest.approx(0.02, rel=0.01)
    assert found.phase_margin_deg == pytest.approx(90.0 - math.degrees(0.2), abs=0.5)
    assert found.gain_margin == pytest.approx(math.pi / 2 / 0.2, rel=0.01)


def test_simc_detunes_until_sensitivity_peak_is_met() -> None:
    model = IntegratorModel(1.0, 10.0, 5.0, 0.0, 0.0, 0.0)
    kp, ti, factor, found = simc_pi(model, tau_c_factor=0.5)
    assert found.ms <= 1.6
    assert factor > 0.5  # tau_c = 0.5 theta alone gives Ms > 1.6
    assert kp == pytest.approx(1.0 / ((factor + 1.0) * 15.0))
    assert ti == pytest.approx(4.0 * (factor + 1.0) * 15.0)


def test_fit_recovers_gain_delay_and_lag_of_a_synthetic_relay_record() -> None:
    """u switches; y = k lag(integral of delayed u) + noise; the fit finds k and theta + tau."""
    rng = random.Random(1)
    k, delay, lag, dt = 0.8, 12, 9.0, 1.0
    u = [(1e-4 if (i // 150) % 2 == 0 else -6e-5) for i in range(3000)]
    integral, z, ys = 0.0, 0.0, []
    line: deque[float] = deque([0.0] * delay)
    for rate in u:
        line.append(integral)
        z += (line.popleft() - z) * (1.0 - math.exp(-dt / lag))
        ys.append(0.01 + k * z + rng.gauss(0.0, 2e-5))
        integral += rate * dt
    found = fit_integrator(u, ys, dt, max_dead_time_s=80.0)
    assert found is not None
    assert found.gain == pytest.approx(k, rel=0.05)
    assert found.effective_dead_time_s == pytest.approx(delay + lag, abs=3.0)


class DelayedIntegrator:
    """A plant that is not the twin: the O2 balance, read through a pure 20 s delay."""

    control_period_s = 1.0

    def __init__(self, model: ProcessModel) -> None:
        self.model = model
        self.x = 0.01
        self.line: deque[float] = deque([self.x] * 20)

    def read(self) -> Measured:
        return Measured(o2_pct=100.0 * self.line[0], co2_pct=None, temp_c=None)

    def apply(self, actuation: Actuation) -> None:
        m = self.model
        inflow = actuation.n2_lpm + actuation.co2_lpm
        rate = (m.leak_lpm * (0.2095 - self.x) - inflow * self.x) / m.volume_l / 60.0
        self.x += rate * self.control_period_s
        self.line.append(self.x)
        self.line.popleft()


def test_relay_runs_against_any_plant_through_the_small_interface() -> None:
    model = load_vessel("workstation-100l").process_model()
    plant = DelayedIntegrator(model)
    phase = operating_phase(1.0, 5.0, 37.0).model_copy(update={"co2_pct": None, "temp_c": None})
    session = run_autotune(plant, AutotuneSession(model, phase, loops=("o2",)), 50_000)
    result = session.results["o2"]
    assert result.ok, result.reason
    assert result.branch.startswith("N2 only")
    assert result.model is not None
    assert result.model.gain == pytest.approx(1.0, rel=0.1)
    # 20 samples of delay + the loop's own 10 s filter (a lag) + half a period of sampling
    assert result.model.effective_dead_time_s == pytest.approx(30.5, abs=5.0)


@pytest.mark.parametrize("factor", [10.0, 0.1])
@pytest.mark.parametrize("vessel_name", VESSELS)
def test_tune_from_bad_gains_proposes_gains_that_meet_targets(
    vessel_name: str, factor: float
) -> None:
    """T1 (ratio <= 1.2 + 2 theta / t_bb), T2 (undershoot <= 0.1 %), T4 (2 sigma <= 0.1 %)."""
    vessel = load_vessel(vessel_name)
    model = vessel.process_model()
    session = autotune_on_twin(
        vessel, operating_phase(1.0, 5.0, 37.0), tuning=_bad_tuning(model, factor), seed=3
    )
    assert session.done
    for name, result in session.results.items():
        assert result.ok, f"{name}: {result.reason}"
        assert result.margins is not None
        assert result.margins.ms <= 1.6
        assert result.margins.phase_margin_deg >= 45.0
    o2 = session.results["o2"].model
    assert o2 is not None
    assert 0.8 <= o2.gain <= 1.25  # the model is exact: achieved rate = requested rate
    nominal = ReactorController(model).o2.dead_time_s  # transport + t63 + half period + filter
    assert o2.effective_dead_time_s == pytest.approx(nominal, rel=0.35)
    check = verify_on_twin(vessel, session.proposed, 1.0, seed=4)
    assert check["ratio"] <= check["ratio_limit"]
    assert check["undershoot_pct"] <= 0.1
    assert check["steady_2sigma_pct"] <= 0.1


def test_relay_sees_a_volume_error_as_loop_gain_and_lowers_kp() -> None:
    """Controller believes V is 1.5x: it asks 1.5x the N2, the relay measures k ~ 1.5."""
    vessel = load_vessel("incubator-170l")
    true = vessel.process_model()
    wrong = true.model_copy(update={"volume_l": 1.5 * true.volume_l})
    phase = operating_phase(1.0, 5.0, 37.0)
    right = autotune_on_twin(vessel, phase, loops=("o2",), seed=2).results["o2"]
    off = autotune_on_twin(vessel, phase, loops=("o2",), seed=2, model=wrong).results["o2"]
    assert off.model is not None
    assert right.tuning is not None
    assert off.tuning is not None
    assert off.model.gain == pytest.approx(1.5, rel=0.15)
    assert right.tuning.kp_per_s is not None
    assert off.tuning.kp_per_s is not None
    assert off.tuning.kp_per_s / right.tuning.kp_per_s == pytest.approx(1 / 1.5, rel=0.2)


def test_cli_tune_from_bad_gains_file_writes_a_loadable_tuning(tmp_path: Path) -> None:
    vessel = load_vessel("workstation-100l")
    bad = tmp_path / "bad.toml"
    bad.write_text(tuning_toml(_bad_tuning(vessel.process_model(), 10.0), "kp x10"))
    proposed = tmp_path / "tuned.toml"
    result = CliRunner().invoke(
        tuning_app,
        ["tune", "--vessel", "workstation-100l", "--tuning", str(bad), "--write", str(proposed)],
    )
    assert result.exit_code == 0, result.output
    assert "proposed PI gains" in result.output
    assert "observer (adapted on the twin): volume 1" in result.output  # ~100 L learned
    assert "[tuning.o2]" in proposed.read_text()
    tuned = load_tuning(proposed)
    start = load_tuning(bad)
    assert tuned.o2.kp_per_s is not None
    assert start.o2.kp_per_s is not None
    assert tuned.o2.kp_per_s < 0.2 * start.o2.kp_per_s  # the x10 gain was not kept
    check = verify_on_twin(vessel, tuned, 1.0, seed=5)
    assert check["ratio"] <= check["ratio_limit"]
    assert check["steady_2sigma_pct"] <= 0.1


def test_cli_tune_rejects_unknown_loop_and_unreachable_operating_point() -> None:
    runner = CliRunner()
    bad_loop = runner.invoke(tuning_app, ["tune", "--vessel", "incubator-170l", "--loops", "ph"])
    assert bad_loop.exit_code == 2
    assert "--loops" in bad_loop.output
    floor = runner.invoke(tuning_app, ["tune", "--vessel", "workstation-100l", "--o2", "0.05"])
    assert floor.exit_code == 2
    assert "bottoms out" in floor.output
