"""Simulated GSS SprintIR / ExplorIR CO2 sensor (ASCII, CR LF), CO2 from a :class:`PlantLink`.

Wire format per docs/protocols.md §2.2: ``K n`` -> ``K 0000n``; ``.`` -> multiplier;
``Z``/``z`` -> filtered/unfiltered count (ppm = count x multiplier); stream line
``Z ##### z #####``; unknown commands -> ``?``. Starts streaming (factory default).
"""

from __future__ import annotations

from typing import Self

from common.clock import DEFAULT_CLOCK, Clock
from drivers.gss import GssConfig
from drivers.units import PPM_PER_PCT
from simulators.devices.ascii_port import AsciiInstrumentSim
from simulators.devices.link import PlantLink, SiteLink


class GssSim(AsciiInstrumentSim):
    """SprintIR-style CO2 sensor.

    Args:
        link: Source of CO2.
        clock: Time source for faults.
        multiplier: Counts-to-ppm factor of the simulated range (1, 10 or 100).
        leading_space: Prefix replies with a space, as some firmware does.

    Attributes:
        mode: 0 command, 1 streaming, 2 polling.
        reported_multiplier: Multiplier answered to ``.``; set it different from ``multiplier``
            to inject a "wrong multiplier" fault.
    """

    eol = "\r\n"

    def __init__(
        self,
        link: PlantLink,
        *,
        clock: Clock = DEFAULT_CLOCK,
        multiplier: int = 10,
        leading_space: bool = False,
    ) -> None:
        super().__init__(clock=clock)
        self.link = link
        self.multiplier = multiplier
        self.reported_multiplier = multiplier
        self.leading_space = leading_space
        self.mode = 1
        self.mask = 6
        self.filter = 32

    @classmethod
    def for_config(cls, cfg: GssConfig, link: SiteLink, clock: Clock) -> Self:
        """The simulator of a site file's ``gss_co2`` entry (its range's multiplier, else 10)."""
        return cls(link, clock=clock, multiplier=cfg.expected_multiplier or 10)

    def _count(self) -> int:
        co2_pct = self.faults.measure("co2_pct", self.link.co2_pct())
        return min(max(round(co2_pct * PPM_PER_PCT / self.multiplier), 0), 99999)

    def _reply(self, text: str) -> list[str]:
        return [(" " if self.leading_space else "") + text]

    def handle(self, command: str) -> list[str]:
        """Answer one command (``?`` for anything not understood)."""
        letter, _, arg = command.partition(" ")
        arg = arg.strip()
        if not arg:
            query = {
                "Z": lambda: f"Z {self._count():05d}",
                "z": lambda: f"z {self._count():05d}",
                ".": lambda: f". {self.reported_multiplier:05d}",
                "a": lambda: f"a {self.filter:05d}",
                "Q": lambda: self.stream_lines()[0] if self.mode == 1 else f"Z {self._count():05d}",
            }.get(letter)
            return self._reply(query().strip()) if query else ["?"]
        if not arg.isdigit():
            return ["?"]
        return self._setting(letter, int(arg))

    def _setting(self, letter: str, value: int) -> list[str]:
        if letter == "K" and value in (0, 1, 2):
            self.mode = value
        elif letter == "M":
            self.mask = value
        elif letter == "A" and 1 <= value <= 255:
            self.filter = value
        else:
            return ["?"]
        return self._reply(f"{letter} {value:05d}")

    def stream_lines(self) -> list[str]:
        """``Z ##### z #####`` per tick in streaming mode."""
        if self.mode != 1:
            return []
        count = self._count()
        return self._reply(f"Z {count:05d} z {count:05d}")
