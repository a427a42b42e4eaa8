"""Adaptive verification rules (protocol/trust.py): credibility-sized open checks, tie-break verdicts, the ledger."""

from __future__ import annotations

import pytest

from sandrun_p2p.protocol import trust

A, B, C, D, E, G = (bytes([i]) * 32 for i in range(1, 7))
RIGHT, WRONG = b"r" * 32, b"w" * 32


def _trusted(book: trust.TrustBook, *nodes: bytes, v: int = 10) -> None:
    for n in nodes:
        for _ in range(v):
            book.verified(n)


def test_policy_rejects_bad_knobs() -> None:
    for bad in (
        {"probation": 0},
        {"dispute_redundancy": 0},
        {"spot_min": 0.6, "spot_max": 0.5},
        {"credibility_target": 1.0},
        {"challenge_window": -1.0},
        {"verdict_margin": 0},
        {"verdict_target": 0.0},
        {"prior_bad": 0.0},
    ):
        with pytest.raises(ValueError):
            trust.TrustPolicy(**bad)


def test_open_checks_are_sized_by_the_credibility_target() -> None:
    assert trust.open_check_redundancy(trust.TrustPolicy(open_check_redundancy=2)) == 2  # no target: as set
    # f = 0.2: f**(1+k) <= target -> k = 2 for 1e-2 (0.008), 4 for 1e-3 (3.2e-4), 5 for 1e-4 (6.4e-5)
    for target, k in ((1e-2, 2), (1e-3, 4), (1e-4, 5)):
        p = trust.TrustPolicy(credibility_target=target)
        assert trust.open_check_redundancy(p) == k
        assert trust.check_plan(False, p) == trust.Plan(k, k)
        assert trust.check_plan(True, p) == trust.Plan(1, 1)
    p = trust.TrustPolicy(credibility_target=1e-3, dispute_redundancy=3)
    assert trust.dispute_plan(True, p) == trust.Plan(3, 3)
    assert trust.dispute_plan(False, p) == trust.Plan(4, 4)  # never fewer than an open check


def test_verdict_needs_a_margin_and_a_credible_majority() -> None:
    book = trust.TrustBook(trust.TrustPolicy())
    _trusted(book, C, D, E, G)
    # one vote against one: nobody can be slashed yet
    assert trust.verdict([(WRONG, (A,)), (RIGHT, (B,))], book) is None
    # four trusted voters outvote one: margin 4, all-bad chance (0.2 * (1 - trust))**4 well under 1e-4
    assert trust.verdict([(WRONG, (A,)), (RIGHT, (B,)), (RIGHT, (C, D, E, G))], book) == RIGHT
    # four unknown nodes outvoting one are all bad with 0.2**4 = 1.6e-3: not enough to slash the one
    fresh = trust.TrustBook(trust.TrustPolicy())
    assert trust.verdict([(RIGHT, (A,)), (WRONG, (B, C, D, E))], fresh) is None
    assert trust.all_bad(fresh, (B, C, D, E)) == pytest.approx(0.2**4)


def test_caught_voters_do_not_vote() -> None:
    book = trust.TrustBook(trust.TrustPolicy())
    _trusted(book, B, C, D, E, G)
    results = [(WRONG, (A, B)), (RIGHT, (C, D))]
    assert trust.verdict(results, book) is None  # 2 against 2
    book.fault(B)
    assert trust.verdict(results + [(RIGHT, (E,))], book) is None  # 3 against A alone, but 0.077**3 > 1e-4
    assert trust.verdict(results + [(RIGHT, (E, G))], book) == RIGHT  # 4 against A alone
    assert book.trust(B) == 0.0 and book.on_probation(B)


def test_ledger_audits_a_caught_nodes_results_inside_the_window_once() -> None:
    led = trust.ChallengeLedger(window=100.0)
    led.release(b"j1", WRONG, (A, B), now=0.0)
    led.release(b"j2", RIGHT, (A,), now=50.0)
    led.release(b"j3", RIGHT, (C,), now=60.0)
    assert led.closes_at(b"j2") == 150.0
    assert led.to_audit(A, now=120.0) == [b"j2"]  # j1's window ended at 100
    assert led.to_audit(A, now=121.0) == []  # not twice
    assert led.to_audit(C, now=10.0) == [b"j3"]
    assert led.close(b"j1") is not None and led.close(b"j1") is None
    assert B not in led.by_node  # closed results leave the audit lists


def test_no_window_keeps_nothing() -> None:
    led = trust.ChallengeLedger(window=0.0)
    led.release(b"j1", WRONG, (A,), now=0.0)
    assert led.to_audit(A, now=1.0) == [] and not led.open
