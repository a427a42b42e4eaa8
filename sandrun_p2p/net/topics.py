"""Gossip topic names: one global advert topic and ``2**shard_bits`` job topics under a versioned prefix."""

from __future__ import annotations

from ..protocol import messages as m

PREFIX = "/sandrun-p2p/1"
ADVERT_TOPIC = f"{PREFIX}/advert"


def job_topic(shard: int) -> str:
    return f"{PREFIX}/jobs/{shard}"


def topic_for(kind: str, shard: int | None) -> str:
    """Topic a message of ``kind`` travels on (adverts are global; everything else goes to its job shard)."""
    if kind == m.ADVERT:
        return ADVERT_TOPIC
    if shard is None:
        raise ValueError(f"a {kind} message needs a job shard")
    return job_topic(shard)


def topics_for_shards(shards: list[int]) -> list[str]:
    return [ADVERT_TOPIC, *(job_topic(s) for s in shards)]


def kinds_allowed(topic: str) -> frozenset[str]:
    """Message kinds accepted on ``topic`` (anything else is rejected by the validator)."""
    if topic == ADVERT_TOPIC:
        return frozenset({m.ADVERT})
    return frozenset(m.SCHEMAS) - {m.ADVERT}
