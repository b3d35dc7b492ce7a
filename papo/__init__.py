"""papo: a self-hostable real-time server for Python.

The package is layered (see docs/architecture.md): ``protocol`` is the wire contract,
``hub`` the real-time core with its ports, ``persistence`` the adapters, ``domains``
the business handlers, ``workers`` the background jobs and ``server`` the composition
root that wires everything once.
"""

__version__ = "0.1.0"
