"""Shared pytest setup: marker registration only."""


def pytest_configure(config):
    config.addinivalue_line("markers", "ray: starts Ray (slow: ~20-60 s each on a 2-core machine)")
