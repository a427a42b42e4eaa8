"""Shared test settings: hypothesis is derandomized (seeded) so every run tests the same cases."""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", derandomize=True, deadline=None, max_examples=50)
settings.load_profile("ci")
