"""pytest-bdd hooks for CAMARA's Gherkin scenarios (tests/http_api/test_camara_features.py); the world
fixtures come from tests/conftest.py."""

from __future__ import annotations

import pytest


def pytest_bdd_apply_tag(tag, function):
    """CAMARA's scenario tags name scenarios, they are not markers: a tag in the skip table of
    test_camara_features.py skips its scenario with the reason given there, any other is ignored."""
    from tests.http_api.test_camara_features import SKIPPED

    if tag in SKIPPED:
        pytest.mark.skip(reason=SKIPPED[tag])(function)
    return True


def pytest_bdd_before_scenario(request, feature, scenario):
    """CAMARA's scenarios name their testing assets by tag (a number not eligible for payment): the steps read them."""
    if request.module.__name__.endswith("test_camara_features"):
        request.getfixturevalue("ctx").tags = set(scenario.tags)
