"""The node agent: the trio runtime that drives the protocol core over libp2p, the executor, the store and the chain.

Modules: :mod:`config` (settings, TOML), :mod:`journal` (SQLite WAL), :mod:`runtime` (:class:`Agent`),
:mod:`control` (local HTTP API, endpoints documented there), :mod:`ports` (what the agent needs from a
chain), :mod:`chainlink` (the project's chain client behind that port), :mod:`build`, the CLI modules ``cli_agent``, ``cli_status``, ``cli_nodes``, ``cli_jobs``
and ``testnet`` (their client of the control API is
:class:`sandrun_p2p.client.peer.ControlClient`). Importing the package is cheap: nothing here imports libp2p or web3 until used.
"""
