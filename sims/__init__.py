"""Discrete-event simulator that runs the real ``sandrun_p2p.protocol.NodeCore`` for thousands of nodes."""
