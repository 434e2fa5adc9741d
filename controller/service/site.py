"""Site file: buses, lines, reactors with their devices and roles, limits, users (docs/site.md).

One TOML file describes a site. Everything is validated before any hardware moves; a problem is
reported as ``FILE: FIELD: problem; allowed: ...`` (see :mod:`common.config_errors`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from common.config_errors import ConfigError, load_toml_model
from controller.core.pericellular import CultureModel
from controller.core.process import ProcessModel
from controller.core.reactor import ControllerTuning
from controller.core.safety import SafetyLimits
from controller.service.budget import transport_loads
from controller.service.limits import socket_path_problem, wire_time_problem
from controller.service.page_config import NotificationsConfig, PageConfig
from drivers.catalog import DeviceConfig, RegisterMapConfig, device_roles
from drivers.transport.settings import ModbusBusSettings, SerialLineSettings
from telemetry.config import BrokerConfig, RecorderConfig
from telemetry.credentials import SERVICE_ACCOUNTS

UserRole = Literal["viewer", "operator", "engineer", "admin"]

REQUIRED_ROLES = ("o2", "co2", "temperature", "n2_mixer", "co2_mixer")
"""Roles every reactor must fill."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SetpointLimits(_Strict):
    """Range an operator command may set, per variable (site policy, inside physics)."""

    o2_pct: tuple[float, float] = (0.0, 21.0)
    co2_pct: tuple[float, float] = (0.0, 10.0)
    temp_c: tuple[float, float] = (30.0, 39.0)


class ReactorConfig(_Strict):
    """One reactor: its nominal process model, devices (by role) and policies.

    Attributes:
        id: Short id used in topics, journals and commands (lower-case letters, digits, dashes).
        process: The controller's nominal model of the vessel.
        restart: What a restarted controller does with an active run: ``resume`` it, ``hold``
            it (targets kept, no phase progress until an operator restarts it) or go ``safe``
            (gas and heater off, run held).
        devices: The instruments, each with its role.
        culture: Optional static culture in the chamber (``[reactors.culture]``): with it the
            service estimates the pericellular O2 every cycle from the measured headspace O2
            (docs/physics.md §B7) and reports it in telemetry and harvest statistics.
    """

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    name: str = ""
    process: ProcessModel
    restart: Literal["resume", "hold", "safe"] = "resume"
    limits: SafetyLimits = SafetyLimits()
    setpoint_limits: SetpointLimits = SetpointLimits()
    tuning: ControllerTuning = ControllerTuning()
    devices: list[DeviceConfig] = Field(min_length=1)
    culture: CultureModel | None = None

    @model_validator(mode="after")
    def _roles(self) -> Self:
        filled: dict[str, str] = {}
        for device in self.devices:
            for role in device_roles(device):
                if role in filled:
                    msg = (
                        f"role '{role}' is served by both '{filled[role]}' and "
                        f"'{device.name}' (allowed: one device per role)"
                    )
                    raise ValueError(msg)
                filled[role] = device.name
        required = list(REQUIRED_ROLES)
        if self.process.air_max_lpm > 0:
            required.append("air_mixer")
        if self.process.liquid is not None:
            required.append("do")
        missing = [r for r in required if r not in filled]
        if missing:
            msg = (
                f"role(s) {', '.join(missing)} missing: no device serves them "
                f"(every reactor needs {', '.join(required)})"
            )
            raise ValueError(msg)
        return self


class UserConfig(_Strict):
    """A user allowed to command reactors (``reactors = ["*"]`` means all).

    Attributes:
        os_user: The OS account that is this user on the control socket (resolved to a uid).
        uid: The same by numeric uid (for accounts the controller host's passwd does not list).
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")
    role: UserRole
    reactors: list[str] = Field(default_factory=lambda: ["*"])
    os_user: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.\-]{0,63}\$?$")
    uid: int | None = Field(default=None, ge=0)

    def may_command(self, reactor: str) -> bool:
        """True when this user may act on ``reactor``."""
        return "*" in self.reactors or reactor in self.reactors


class JournalConfig(_Strict):
    """``[journal]``: how long the outbox keeps what the broker has acknowledged.

    Attributes:
        replay_window_h: A message acknowledged by the broker stays in the outbox at least this
            long, so a recorder may ask for it again (docs/reliability.md, "Replay window");
            older ones are pruned. At 774 bytes per reactor-second (docs/performance.md) the
            outbox of 100 reactors holds about 0.28 GB per hour of window.
        prune_every_s: How often the MQTT link prunes, s (one indexed DELETE each time).
    """

    replay_window_h: float = Field(default=12.0, gt=0, le=8760)
    prune_every_s: float = Field(default=60.0, ge=1, le=3600)


class SiteConfig(_Strict):
    """The whole site file.

    ``partition`` names this controller process when the site's reactors are split among several
    site files (one per process or host, same ``site`` id and broker root, disjoint reactors,
    each its own ``state_dir``): it keeps the processes' MQTT client ids and ``controller/status``
    topics apart (docs/scaling.md).
    """

    site: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,31}$")
    partition: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,15}$")
    simulated: bool = False
    state_dir: Path = Path("var")
    control_socket: Path | None = None
    buses: dict[str, ModbusBusSettings] = Field(default_factory=dict)
    lines: dict[str, SerialLineSettings] = Field(default_factory=dict)
    reactors: list[ReactorConfig] = Field(min_length=1)
    users: list[UserConfig] = Field(default_factory=list)
    password_file: Path | None = None
    audit_key_file: Path | None = None
    calibration_interval_days: float | None = Field(default=None, gt=0, le=3650)
    control_socket_group: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.][A-Za-z0-9_.\-]{0,63}$"
    )
    broker: BrokerConfig = BrokerConfig(embedded=True)
    recorder: RecorderConfig = RecorderConfig()
    journal: JournalConfig = JournalConfig()
    page: PageConfig = PageConfig()
    notifications: NotificationsConfig = NotificationsConfig()

    @model_validator(mode="after")
    def _cross_checks(self) -> Self:
        ids = [r.id for r in self.reactors]
        if len(set(ids)) != len(ids):
            msg = "reactor ids must be unique"
            raise ValueError(msg)
        self._check_devices()
        self._check_time_budget()
        for u in self.users:
            if u.name in SERVICE_ACCOUNTS:
                k = self.users.index(u)
                msg = (
                    f"@users[{k}].name: '{u.name}' is a service account of the embedded broker "
                    f"(allowed: any other name than {', '.join(SERVICE_ACCOUNTS)})"
                )
                raise ValueError(msg)
            self._check_os_identity(u)
            unknown = [x for x in u.reactors if x != "*" and x not in ids]
            if unknown:
                k = self.users.index(u)
                msg = (
                    f"@users[{k}].reactors: user '{u.name}' names unknown reactor(s) "
                    f'{", ".join(unknown)} (allowed: {", ".join(ids)} or "*")'
                )
                raise ValueError(msg)
        return self

    def _check_os_identity(self, user: UserConfig) -> None:
        """An OS account (name or uid) stands for one site user at most."""
        k = self.users.index(user)
        for other in self.users[:k]:
            for key in ("os_user", "uid"):
                mine = getattr(user, key)
                if mine is not None and mine == getattr(other, key):
                    msg = (
                        f"@users[{k}].{key}: {mine!r} is already '{other.name}' "
                        f"(allowed: one site user per OS account)"
                    )
                    raise ValueError(msg)

    def _check_devices(self) -> None:
        """Unique names, defined buses and lines, one unit id per bus, known map points."""
        names: set[str] = set()
        units: dict[tuple[str, int], str] = {}
        for i, reactor in enumerate(self.reactors):
            for j, d in enumerate(reactor.devices):
                where = f"@reactors[{i}].devices[{j}]"
                if d.name in names:
                    msg = f"{where}.name: '{d.name}' is used twice (allowed: unique names)"
                    raise ValueError(msg)
                names.add(d.name)
                bus = getattr(d, "bus", None)
                line = getattr(d, "line", None)
                for kind, ref, defined in (("bus", bus, self.buses), ("line", line, self.lines)):
                    if ref is not None and ref not in defined:
                        msg = (
                            f"{where}.{kind}: '{ref}' is not defined (allowed: "
                            f"{', '.join(sorted(defined)) or 'none defined'})"
                        )
                        raise ValueError(msg)
                if bus is not None:
                    key = (bus, int(getattr(d, "unit", 0)))
                    if key in units:
                        msg = (
                            f"{where}.unit: devices '{units[key]}' and '{d.name}' both use "
                            f"unit id {key[1]} on bus '{bus}' (allowed: one unit id per bus)"
                        )
                        raise ValueError(msg)
                    units[key] = d.name
                if isinstance(d, RegisterMapConfig):
                    points = {p.name for p in d.map.points}
                    for role, point in d.roles.items():
                        if point not in points:
                            msg = (
                                f"{where}.roles.{role}: names point '{point}', which the map "
                                f"does not define (allowed: {', '.join(sorted(points))})"
                            )
                            raise ValueError(msg)

    def _check_time_budget(self) -> None:
        """Every bus and line fits its worst case inside the cycle deadline (budget.py)."""
        devices = [(d, r.process.control_period_s) for r in self.reactors for d in r.devices]
        for load in transport_loads(devices, self.buses, self.lines):
            wire = wire_time_problem(load, self.buses[load.name]) if load.kind == "bus" else None
            if wire is not None:  # no timeout helps: the wire itself is too slow (limits.py)
                msg = f"@buses.{load.name}.baudrate: {wire}"
                raise ValueError(msg)
            if not load.fits:
                where = "buses" if load.kind == "bus" else "lines"
                field = "timeout_s" if load.kind == "bus" else "reply_timeout_s"
                msg = f"@{where}.{load.name}.{field}: {load.problem()}"
                raise ValueError(msg)

    def reactor(self, reactor_id: str) -> ReactorConfig:
        """The reactor with ``reactor_id``; ``KeyError`` naming the known ids otherwise."""
        for r in self.reactors:
            if r.id == reactor_id:
                return r
        raise KeyError(
            f"unknown reactor '{reactor_id}' (known: {', '.join(r.id for r in self.reactors)})"
        )

    def user(self, name: str) -> UserConfig | None:
        """A user by name."""
        return next((u for u in self.users if u.name == name), None)

    @property
    def users_file(self) -> Path:
        """The users' password file (argon2 hashes): ``password_file`` or the state directory's."""
        return self.password_file or self.state_dir / "users.passwd"

    @property
    def audit_key_path(self) -> Path:
        """The audit trail's HMAC key: ``audit_key_file`` or ``state_dir/audit.key``."""
        return self.audit_key_file or self.state_dir / "audit.key"

    @property
    def socket_path(self) -> Path:
        """Where ``hypoxia ctl`` finds the running service."""
        return self.control_socket or self.state_dir / f"{self.site}.sock"


def load_site(path: Path) -> SiteConfig:
    """Load and validate a site file; relative state paths are taken from the file's folder."""
    site = load_toml_model(path, SiteConfig)
    base = path.resolve().parent
    updates: dict[str, Path] = {}
    if not site.state_dir.is_absolute():
        updates["state_dir"] = base / site.state_dir
    if site.control_socket is not None and not site.control_socket.is_absolute():
        updates["control_socket"] = base / site.control_socket
    if site.password_file is not None and not site.password_file.is_absolute():
        updates["password_file"] = base / site.password_file
    if site.audit_key_file is not None and not site.audit_key_file.is_absolute():
        updates["audit_key_file"] = base / site.audit_key_file
    site = site.model_copy(update=updates) if updates else site
    problem = socket_path_problem(site.socket_path)
    if problem is not None:
        field = "control_socket" if site.control_socket is not None else "state_dir"
        raise ConfigError(str(path), field, problem)
    return site
