"""Plant physics and instrument simulators; stand-ins for hardware in tests, demos and what-ifs.

Runtime code (``controller``, ``drivers``) never imports this package.
"""
