"""The bundled sample, landed and built by dbt once per test module: the fixture `built` of
the PostgreSQL serving tests. A module imports it (`from sample_deployment import
sample_deployment`); its name as a fixture is `built`."""

from __future__ import annotations

import pytest
from dbt_harness import Project


@pytest.fixture(scope="module", name="built")
def sample_deployment(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """The sample deployment built (a test that changes it works on a copy)."""
    project = Project(tmp_path_factory.mktemp("sample_deployment"))
    project.land_sample()
    project.build()
    return project
