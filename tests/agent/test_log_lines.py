"""The agent's structured log lines are only formatted when INFO is enabled."""

from __future__ import annotations

import logging
from pathlib import Path

from sandrun_p2p.agent.runtime import log
from sandrun_p2p.protocol.identity import NodeKey

from .test_journal_resume import make_agent


class Counted:
    def __init__(self) -> None:
        self.n = 0

    def __str__(self) -> str:
        self.n += 1
        return "value"


def test_log_lines_are_formatted_only_when_info_is_on(tmp_path: Path, caplog) -> None:
    agent = make_agent(tmp_path, NodeKey.generate())
    field = Counted()
    level = log.level
    try:
        log.setLevel(logging.WARNING)
        agent._log("executed", b"\x01" * 32, root=field)
        assert field.n == 0
        log.setLevel(logging.INFO)
        with caplog.at_level(logging.INFO, logger=log.name):
            agent._log("executed", b"\x01" * 32, root=field)
        assert field.n == 1 and "event=executed job=0101010101010101 root=value" in caplog.text
    finally:
        log.setLevel(level)
        agent.journal.close()
