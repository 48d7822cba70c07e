"""The extras table: pyproject and saxsdog.extras agree, and a missing extra is named."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from saxsdog.extras import EXTRAS, MissingExtraError, extra_of, import_optional

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _names(requirements: list[str]) -> set[str]:
    """Distribution names (with their own extras, e.g. ``dask[distributed]``) without versions."""
    return {re.match(r"[A-Za-z0-9_.\-]+(\[[^\]]*\])?", r.strip()).group(0) for r in requirements}


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads(PYPROJECT.read_text())["project"]


@pytest.mark.parametrize("name", sorted(EXTRAS))
def test_pyproject_extra_lists_the_tables_packages(project, name):
    assert _names(project["optional-dependencies"][name]) == set(EXTRAS[name].packages)


def test_all_and_test_bring_every_extra(project):
    deps = project["optional-dependencies"]
    assert deps["all"] == [f"saxsdog[{','.join(EXTRAS)}]"]
    assert "saxsdog[all]" in deps["test"]


def test_core_has_none_of_the_extras(project):
    extras = set().union(*(set(e.packages) for e in EXTRAS.values()))
    assert not _names(project["dependencies"]) & extras


def test_missing_extra_names_the_pip_command():
    with pytest.raises(MissingExtraError, match=r"pip install 'saxsdog\[merge\]'") as info:
        import_optional("saxsdog_no_such_module", extra="merge", needed_for="saxsdmerge")
    assert str(info.value).startswith("saxsdmerge needs the Python package 'saxsdog_no_such_module'")
    assert isinstance(info.value, ImportError)


def test_extra_of_finds_the_module_of_a_submodule():
    assert extra_of("lz4.block") == "stream"
    assert extra_of("zmq") == "server"
    with pytest.raises(KeyError):
        extra_of("numpy")


def test_installed_module_is_returned():
    import json

    assert import_optional("json", extra="merge") is json
