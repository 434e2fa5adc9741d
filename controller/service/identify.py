"""``hypoxia identify``: run the identification test on a chamber through the site's drivers.

The test (docs/commissioning.md): everything closed for a baseline, a timed N2 step at a capped
flow down to an O2 floor (volume, transport delay, sensor lag), everything closed again while the
leak brings O2 back up (leak), optionally a short CO2 step (CO2 sensor lag). This module opens the
reactor's instruments on the injected clock, drives the mass-flow controllers, records readings
and set points into an :class:`~controller.engineering.identification.IdentificationRecord`, and
always leaves every gas closed, whatever ends the test. It refuses while the service holds the
reactor or a run is active (:func:`identify_refusal`). The fit itself is
:mod:`controller.engineering.identification` (pure).
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from common.config_errors import ConfigError
from controller.core.process import ProcessModel
from controller.engineering.identification import FlowStep, IdentificationRecord, Prior
from controller.service.calibration import calibrate_readers, calibration_path, load_calibrations
from controller.service.clock import CycleClock
from controller.service.journal import RunJournal
from controller.service.site import SiteConfig
from drivers.catalog import Transports, open_devices
from drivers.registry import RoleSet

log = logging.getLogger(__name__)

MIXER_GAS = {
    "n2_mixer": "n2_lpm",
    "air_mixer": "air_lpm",
    "o2_mixer": "o2_lpm",
    "co2_mixer": "co2_lpm",
}
MAX_UNTRUSTED = 10
"""Consecutive untrusted O2 readings that abort the test (gas closed)."""
IDENTIFYING_ROLES = ("engineer", "admin")
MIN_FALL_PCT = 1.0
"""Least O2 fall (% abs) the N2 step must cause; less aborts the test (N2 not reaching it)."""


@dataclass(frozen=True)
class IdentifyPlan:
    """The test's settings (times in s, flows in L/min, O2 and CO2 in vol-%).

    Attributes:
        baseline_s: Everything closed before the N2 step (10-3600).
        o2_floor_pct: The N2 step ends when the reading, projected one nominal dead time ahead,
            reaches this (2-19; the chamber undershoots it by at most the fall over the
            dead-time error).
        n2_lpm: N2 flow of the step (> 0, at most the process model's ``n2_max_lpm``).
        n2_max_s: Longest N2 step (30-7200): the N2 used is capped at ``n2_lpm * n2_max_s / 60`` L.
        leak_watch_s: Everything closed while the leak raises O2 (60-86400).
        co2_lpm: CO2 flow of the CO2 step (0 = no CO2 step; at most ``co2_max_lpm``).
        co2_step_s: Length of the CO2 step (5-1800).
        co2_ceiling_pct: The CO2 step ends early when the reading reaches this (0.1-10).
        co2_watch_s: Everything closed after the CO2 step (30-7200).
        sample_s: Reading period (0.2-60).
    """

    baseline_s: float = 60.0
    o2_floor_pct: float = 12.0
    n2_lpm: float = 10.0
    n2_max_s: float = 1800.0
    leak_watch_s: float = 1800.0
    co2_lpm: float = 0.5
    co2_step_s: float = 60.0
    co2_ceiling_pct: float = 3.0
    co2_watch_s: float = 300.0
    sample_s: float = 1.0

    def checked(self, process: ProcessModel) -> IdentifyPlan:
        """This plan, or :class:`ConfigError` naming the option, its value and what is allowed."""
        bounds = {
            "baseline_s": ("--baseline", 10.0, 3600.0, "s"),
            "o2_floor_pct": ("--o2-floor", 2.0, 19.0, "%"),
            "n2_lpm": ("--n2", 1e-3, process.n2_max_lpm, "L/min (the N2 maximum)"),
            "n2_max_s": ("--n2-max", 30.0, 7200.0, "s"),
            "leak_watch_s": ("--leak-watch", 60.0, 86400.0, "s"),
            "co2_lpm": ("--co2", 0.0, process.co2_max_lpm, "L/min (the CO2 maximum)"),
            "co2_step_s": ("--co2-step", 5.0, 1800.0, "s"),
            "co2_ceiling_pct": ("--co2-ceiling", 0.1, 10.0, "%"),
            "co2_watch_s": ("--co2-watch", 30.0, 7200.0, "s"),
            "sample_s": ("--sample", 0.2, 60.0, "s"),
        }
        for name, (option, low, high, unit) in bounds.items():
            value = getattr(self, name)
            if not (math.isfinite(value) and low <= value <= high):
                raise ConfigError(option, "", f"{value:g}; allowed: {low:g} to {high:g} {unit}")
        return self

    def longest_s(self) -> float:
        """The test's longest duration (N2 step at its cap), s."""
        return self.baseline_s + self.n2_max_s + self._after_n2_s()

    def expected_s(self, process: ProcessModel) -> float:
        """The test's expected duration on the nominal chamber (the progress bar's length), s.

        The N2 step lasts V/Q_N ln(x_a/x_floor) on the nominal volume, at most ``n2_max_s``.
        """
        fall_s = 60.0 * process.volume_l / self.n2_lpm * math.log(20.9 / self.o2_floor_pct)
        return self.baseline_s + min(self.n2_max_s, fall_s) + self._after_n2_s()

    def _after_n2_s(self) -> float:
        co2 = self.co2_step_s + self.co2_watch_s if self.co2_lpm > 0 else 0.0
        return self.leak_watch_s + co2


def prior_of(process: ProcessModel) -> Prior:
    """The fit's starting point: the site's nominal model of the reactor."""
    return Prior(
        volume_l=process.volume_l,
        leak_lpm=process.leak_lpm,
        transport_delay_s=process.transport_delay_s,
        o2_t63_s=process.o2_sensor_t63_s,
        co2_t63_s=process.co2_sensor_t63_s,
        mfc_tau_s=process.mfc_tau_s,
    )


def service_running(site: SiteConfig) -> bool:
    """True when the site's service answers on its control socket."""
    path = site.socket_path
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX) as sock, contextlib.suppress(OSError):
        sock.settimeout(1.0)
        sock.connect(str(path))
        return True
    return False


def identify_refusal(site: SiteConfig, reactor: str) -> str | None:
    """Why the test may not run now (``None``: it may).

    It may not while the service runs (it holds the instruments and the reactor's outputs) or
    while the journal holds an active run of the reactor (a restarted service would resume it).
    """
    if service_running(site):
        return (
            f"the service of site {site.site} is running ({site.socket_path}): it holds the "
            "reactor's instruments; stop it first (identify runs only with no service and no run)"
        )
    path = site.state_dir / "journal.sqlite"
    if path.exists():
        journal = RunJournal.open(path)
        try:
            run = journal.active_run(reactor)
        finally:
            journal.close()
        if run is not None:
            return (
                f"reactor {reactor} has an active run {run.run_id} ({run.recipe_name}) in "
                f"{path}: end or abort it first (hypoxia ctl stop or abort while the service runs, "
                "then stop the service); "
                "identify never runs beside a run"
            )
    return None


@dataclass
class Progress:
    """What the test is doing, for the progress display (passed to the callback each sample).

    Attributes:
        phase: ``baseline``, ``N2 step``, ``leak watch``, ``CO2 step`` or ``CO2 watch``.
        elapsed_s: Time since the test began, s.
        expected_s: Its expected length on the nominal chamber, s.
        o2_pct: Latest good O2 reading, % (nan before the first).
        co2_pct: Latest good CO2 reading, % (nan without a CO2 step).
        flows: Set points in force, L/min, by gas (``n2_lpm`` …).
    """

    phase: str
    elapsed_s: float
    expected_s: float
    o2_pct: float
    co2_pct: float = math.nan
    flows: dict[str, float] = field(default_factory=dict)


class IdentifyAbortedError(RuntimeError):
    """The test stopped early (instrument lost, O2 out of bounds); every gas was closed."""


@dataclass
class _Recorder:
    roles: RoleSet
    clock: CycleClock
    plan: IdentifyPlan
    on_progress: Callable[[Progress], None]
    with_co2: bool
    t0: float = 0.0
    flows: list[FlowStep] = field(default_factory=list)
    o2_t: list[float] = field(default_factory=list)
    o2: list[float] = field(default_factory=list)
    co2_t: list[float] = field(default_factory=list)
    co2: list[float] = field(default_factory=list)
    setpoints: dict[str, float] = field(default_factory=dict)
    untrusted: int = 0
    phase: str = "closing"
    next_s: float = 0.0
    expected_s: float = 0.0

    async def set_flows(self, **lpm: float) -> None:
        wanted = {role: lpm.get(MIXER_GAS[role], 0.0) for role in self.roles.mixers}
        before = self.clock.monotonic()
        for role, value in wanted.items():
            if self.setpoints.get(role) != value:
                await self.roles.mixers[role].set_flow_lpm(value)
                self.setpoints[role] = value
        at = 0.5 * (before + self.clock.monotonic())
        self.flows.append(FlowStep(at, **{MIXER_GAS[r]: v for r, v in wanted.items()}))

    async def sample(self) -> float:
        """Wait for the next sample time, read O2 (and CO2); return the O2 reading, %."""
        await self.clock.sleep_until(self.next_s)
        self.next_s = max(self.next_s + self.plan.sample_s, self.clock.monotonic())
        reading = await self.roles.readers["o2"]()
        if reading.trusted:
            self.untrusted = 0
            self.o2_t.append(reading.monotonic_s)
            self.o2.append(reading.value)
        else:
            self.untrusted += 1
            if self.untrusted >= MAX_UNTRUSTED:
                why = f"{reading.quality.value}: {reading.reason}"
                raise IdentifyAbortedError(f"O2 reading not good {self.untrusted} times ({why})")
        co2 = math.nan
        if self.with_co2:
            c = await self.roles.readers["co2"]()
            if c.trusted:
                self.co2_t.append(c.monotonic_s)
                self.co2.append(c.value)
                co2 = c.value
        o2 = self.o2[-1] if self.o2 else math.nan
        self.on_progress(
            Progress(
                self.phase,
                self.clock.monotonic() - self.t0,
                self.expected_s,
                o2,
                co2,
                {MIXER_GAS[r]: v for r, v in self.setpoints.items()},
            )
        )
        return o2

    async def hold(self, phase: str, seconds: float) -> None:
        self.phase = phase
        end = self.clock.monotonic() + seconds
        while self.clock.monotonic() < end:
            await self.sample()


async def _n2_step(rec: _Recorder, process: ProcessModel) -> tuple[float, float]:
    plan = rec.plan
    rec.phase = "N2 step"
    await rec.set_flows(n2_lpm=plan.n2_lpm)
    start = rec.flows[-1].t_s
    dead_s = process.transport_delay_s + process.o2_sensor_t63_s
    while rec.clock.monotonic() - start < plan.n2_max_s:
        o2 = await rec.sample()
        recent = [
            (t, y) for t, y in zip(rec.o2_t[-10:], rec.o2[-10:], strict=True) if t > start + dead_s
        ]
        slope = 0.0
        if len(recent) >= 5:  # the fall's current slope, once the dead time has passed
            (ta, ya), (tb, yb) = recent[0], recent[-1]
            slope = (yb - ya) / (tb - ta) if tb > ta else 0.0
        if o2 + min(0.0, slope) * dead_s <= plan.o2_floor_pct:
            break
    await rec.set_flows()
    before = [y for t, y in zip(rec.o2_t, rec.o2, strict=True) if t <= start]
    after = rec.o2[len(before) :]
    fell_pct = before[-1] - min(after) if before and after else 0.0
    if not fell_pct >= MIN_FALL_PCT:
        raise IdentifyAbortedError(
            f"O2 fell only {fell_pct:.2f} % in {rec.clock.monotonic() - start:.0f} s of N2 at "
            f"{plan.n2_lpm:g} L/min (at least {MIN_FALL_PCT:g} % needed): is N2 reaching the "
            "chamber (cylinder, valve, MFC, tubing)?"
        )
    return start, rec.flows[-1].t_s


async def run_test(
    site: SiteConfig,
    reactor: str,
    plan: IdentifyPlan,
    clock: CycleClock,
    on_progress: Callable[[Progress], None] = lambda _p: None,
    *,
    open_wait_s: float = 5.0,
) -> IdentificationRecord:
    """Run the identification test on ``reactor`` and return what it recorded.

    Every gas is closed at the start and, whatever ends the test (done, error, cancellation),
    at the end.

    Raises:
        ConfigError: Unknown reactor, a role the test needs missing, or a bad plan.
        IdentifyAbortedError: An instrument failed during the test.
    """
    try:
        config = site.reactor(reactor)
    except KeyError as exc:
        raise ConfigError("--reactor", "", str(exc.args[0])) from None
    plan = plan.checked(config.process)
    transports = Transports.create(site.buses, site.lines, clock)
    await transports.open(wait_s=open_wait_s)
    try:
        roles = open_devices(config.devices, transports, clock)
        calibrate_readers(roles, load_calibrations(calibration_path(site.state_dir)), reactor)
        for role in ("o2", "n2_mixer"):
            if role not in roles.readers and role not in roles.mixers:
                raise ConfigError(site.site, f"reactor {reactor}", f"no {role!r} device")
        with_co2 = plan.co2_lpm > 0 and "co2_mixer" in roles.mixers and "co2" in roles.readers
        for device in roles.devices.values():
            with contextlib.suppress(Exception):
                await device.start()
        rec = _Recorder(roles, clock, plan, on_progress, with_co2)
        rec.expected_s = plan.expected_s(config.process)
        rec.t0 = rec.next_s = clock.monotonic()
        try:
            await rec.set_flows()
            await rec.hold("baseline", plan.baseline_s)
            n2_start, n2_end = await _n2_step(rec, config.process)
            await rec.hold("leak watch", plan.leak_watch_s)
            co2_start: float | None = None
            if with_co2:
                rec.phase = "CO2 step"
                await rec.set_flows(co2_lpm=plan.co2_lpm)
                co2_start = rec.flows[-1].t_s
                while rec.clock.monotonic() - co2_start < plan.co2_step_s:
                    await rec.sample()
                    if rec.co2 and rec.co2[-1] >= plan.co2_ceiling_pct:
                        break
                await rec.set_flows()
                await rec.hold("CO2 watch", plan.co2_watch_s)
        finally:
            await _close_all(roles)
        return IdentificationRecord(
            flows=tuple(rec.flows),
            o2_t_s=tuple(rec.o2_t),
            o2_pct=tuple(rec.o2),
            n2_start_s=n2_start,
            n2_end_s=n2_end,
            co2_t_s=tuple(rec.co2_t),
            co2_pct=tuple(rec.co2),
            co2_start_s=co2_start,
        )
    finally:
        await transports.close()


async def _close_all(roles: RoleSet) -> None:
    for role, mixer in roles.mixers.items():
        try:
            await mixer.set_flow_lpm(0.0)
        except Exception:
            log.exception("identify: closing %s failed: close it by hand", role)


def plan_record(plan: IdentifyPlan) -> dict[str, float]:
    """The plan as the audit trail keeps it."""
    return asdict(plan)
