"""Wire-level instrument simulators: real protocols (Modbus TCP/RTU, ASCII serial) on loopback.

Values come from a :class:`~simulators.devices.link.PlantLink`; faults are injected per device
through its :class:`~simulators.devices.faults.Faults`. Drivers never import this package.
"""

from simulators.devices.alicat import AlicatAsciiSim, AlicatModbusSim, AlicatState
from simulators.devices.ascii_port import AsciiInstrumentSim, AsciiPortSim
from simulators.devices.faults import Faults, garble_text
from simulators.devices.gss import GssSim
from simulators.devices.link import PlantLink, StaticPlantLink
from simulators.devices.luminox import LuminOxSim
from simulators.devices.modbus_bus import ModbusBusSim, ModbusDeviceSim
from simulators.devices.null_modem import PtyNullModem
from simulators.devices.pt100 import Pt100Sim
from simulators.devices.register_map import RegisterMapSim
from simulators.devices.relay_board import RelayBoardSim
from simulators.devices.vaisala import GmpSim, HmpSim

__all__ = [
    "AlicatAsciiSim",
    "AlicatModbusSim",
    "AlicatState",
    "AsciiInstrumentSim",
    "AsciiPortSim",
    "Faults",
    "GmpSim",
    "GssSim",
    "HmpSim",
    "LuminOxSim",
    "ModbusBusSim",
    "ModbusDeviceSim",
    "PlantLink",
    "Pt100Sim",
    "PtyNullModem",
    "RegisterMapSim",
    "RelayBoardSim",
    "StaticPlantLink",
    "garble_text",
]
