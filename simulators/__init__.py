"""Plant physics and instrument simulators; stand-ins for hardware in tests, demos and what-ifs.

Runtime code (``controller``, ``drivers``) never imports this package.
"""

from common.compiled import prefer_compiled

COMPILED = prefer_compiled(__path__)
"""Whether the mypyc build of the plant and sensor models is in use (buildtools/compile_core.py):
only when built from exactly the sources here; the pure-Python modules otherwise."""
