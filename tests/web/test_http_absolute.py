"""The ``absolute`` command over the web leash's /api/command (in-process): the page's
"absolute scale" panel computes the factor from a curve on the server."""

from __future__ import annotations


import numpy as np
import pytest
from webleash_helpers import command, login

from saxsdog.io.chi import write_chi
from saxsdog.reduction.absolute import water_cross_section

pytest.importorskip("starlette")
pytest.importorskip("httpx")


@pytest.fixture
def water_curve(base):
    q = np.linspace(0.1, 2.0, 100)
    write_chi(base / "run" / "water.chi", [q, np.full(q.size, 4.0), np.full(q.size, 0.04)],
              {"Normalization": {"AbsoluteScale": 2.0}})
    return "run/water.chi"


def test_water_factor_from_a_server_curve(client, water_curve) -> None:
    login(client)
    got = command(client, "absolute", {"curve": water_curve, "temperature": 25})
    assert got["result"] == "absolute"
    data = got["data"]
    assert data["fit"]["factor"] == pytest.approx(water_cross_section(25.0) / 4.0)
    assert data["fit"]["points"] == 100 and data["fit"]["source"] == water_curve
    assert data["applied"] == 2.0 and data["absolute_scale"] == pytest.approx(2 * water_cross_section(25.0) / 4.0)
    assert "factor:" in data["report"]


def test_reference_table_as_text(client, water_curve) -> None:
    login(client)
    table = "# q (1/nm), dSigma/dOmega (1/cm)\n0.05,0.08\n1.0,0.08\n3.0,0.08\n"
    got = command(client, "absolute", {"curve": water_curve, "standard": "reference", "reference": table,
                                       "q_range": [0.2, 1.5]})
    assert got["result"] == "absolute", got
    assert got["data"]["fit"]["factor"] == pytest.approx(0.02)
    assert got["data"]["fit"]["q_max"] <= 1.5


@pytest.mark.parametrize("argument, message", [
    ({"curve": "run/nothere.chi"}, "run/nothere.chi: no such file"),
    ({"curve": "../outside.chi"}, "outside"),
    ({"curve": "run/water.chi", "standard": "reference"}, "argument.reference"),
    ({"curve": "run/water.chi", "standard": "reference", "reference": "10,1\n20,1\n"}, "do not overlap"),
    ({"curve": "run/water.chi", "temperature": 150}, "$.argument.temperature"),
])
def test_bad_requests_are_clear_errors(client, water_curve, argument, message) -> None:
    login(client)
    got = command(client, "absolute", argument)
    assert got["result"] == "Error" and message in got["data"]["Error"], got
    assert "/base/run" not in got["data"]["Error"]  # the server's own path is not shown


def test_command_is_listed_for_the_page(client) -> None:
    login(client)
    listed = command(client, "commands")["data"]["commands"]
    entry = next(c for c in listed if c["name"] == "absolute")
    assert entry["runs"] == "parallel" and "curve" in entry["argument"]["properties"]
