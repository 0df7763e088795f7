"""The bundled sample, landed and built by dbt once per test module: the fixture `built` of
the PostgreSQL serving tests. A module imports it (`from sample_deployment import
sample_deployment`); its name as a fixture is `built`."""

from __future__ import annotations

import pytest
from dbt_harness import Project


@pytest.fixture(scope="module", name="built")
def sample_deployment(tmp_path_factory: pytest.TempPathFactory, built_samples) -> Project:
    """The sample deployment built (a copy of the per-process cache, dbt_harness.BuiltSamples;
    a test that changes it works on a copy of this one)."""
    return built_samples.copy(tmp_path_factory.mktemp("sample_deployment"))
