"""Simulated SST LuminOx O2 sensor (ASCII, CR LF), values from a :class:`PlantLink`.

Wire format per docs/protocols.md §1.1: ``M n`` -> ``M 0n``; ``O``/``%``/``T``/``P``/``e``
single values; ``A`` and the 1 Hz stream line ``O xxxx.x T yxx.x P xxxx % xxx.xx e xxxx``;
unknown commands -> ``E 01``. Starts in streaming mode (factory default).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Self

from common.clock import DEFAULT_CLOCK, Clock
from drivers.luminox import LuminOxConfig
from simulators.devices.ascii_port import AsciiInstrumentSim
from simulators.devices.link import PlantLink, SiteLink


class LuminOxSim(AsciiInstrumentSim):
    """LuminOx LOX-02 (or LOX-01 with ``has_barometer=False``).

    Args:
        link: Source of O2 and temperature.
        clock: Time source for faults.
        pressure_mbar: Barometric pressure reported, mbar.
        has_barometer: False emulates a LOX-01: ``P`` and ``%`` fields are dashes.

    Attributes:
        mode: 0 streaming, 1 polling, 2 off.
        status: The ``e`` field; set e.g. ``"0004"`` to inject a sensor error.
    """

    eol = "\r\n"

    def __init__(
        self,
        link: PlantLink,
        *,
        clock: Clock = DEFAULT_CLOCK,
        pressure_mbar: float = 1013.0,
        has_barometer: bool = True,
    ) -> None:
        super().__init__(clock=clock)
        self.link = link
        self.pressure_mbar = pressure_mbar
        self.has_barometer = has_barometer
        self.mode = 0
        self.status = "0000"

    @classmethod
    def for_config(cls, cfg: LuminOxConfig, link: SiteLink, clock: Clock) -> Self:
        """The simulator of a site file's ``luminox`` entry."""
        return cls(link, clock=clock)

    def _values(self) -> tuple[float, float, float]:
        o2 = self.faults.measure("o2_pct", self.link.o2_pct())
        temp = self.faults.measure("temp_c", self.link.temp_c(), primary=False)
        o2 = min(max(o2, 0.0), 999.99)
        ppo2 = min(o2 * self.pressure_mbar / 100.0, 9999.9)
        return o2, ppo2, temp

    def _field(self, key: str) -> str:
        o2, ppo2, temp = self._values()
        if key == "O":
            return f"O {ppo2:06.1f}"
        if key == "T":
            return f"T {min(max(temp, -99.9), 99.9):+05.1f}"
        if key == "P":
            return f"P {round(self.pressure_mbar):04d}" if self.has_barometer else "P ------"
        if key == "%":
            return f"% {o2:06.2f}" if self.has_barometer else "% ------"
        return f"e {self.status}"

    def full_line(self) -> str:
        """The ``A`` reply / stream line."""
        return " ".join(self._field(k) for k in ("O", "T", "P", "%", "e"))

    def handle(self, command: str) -> list[str]:
        """Answer one command."""
        if command in ("O", "T", "P", "%", "e"):
            return [self._field(command)]
        if command.startswith("M "):
            return self._set_mode(command[2:].strip())
        fixed: Callable[[], str] | None = {
            "A": self.full_line,
            "M": lambda: f"M 0{self.mode}",
            "# 0": lambda: "# 02021 00123",
            "# 1": lambda: "# 00001 12345",
            "# 2": lambda: "# 00042",
        }.get(command)
        return [fixed()] if fixed else ["E 01"]

    def _set_mode(self, arg: str) -> list[str]:
        if arg not in ("0", "1", "2"):
            return ["E 03"]
        self.mode = int(arg)
        return [f"M 0{self.mode}"]

    def stream_lines(self) -> list[str]:
        """One full line per tick in streaming mode."""
        return [self.full_line()] if self.mode == 0 else []
