"""Fixtures of the chain tests: one embedded chain per session, reverted to a snapshot after each test."""

from __future__ import annotations

import pytest
from chain_world import World

from sandrun_p2p.chain.chain import Chain


@pytest.fixture(scope="session")
def world() -> World:
    return World(Chain.embedded())


@pytest.fixture
def w(world: World):
    """The session's world, rolled back after the test."""
    snap = world.chain.snapshot()
    try:
        yield world
    finally:
        world.chain.revert(snap)
