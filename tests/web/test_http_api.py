"""The web leash's HTTP/WebSocket API: HTTP in process (ASGI), the WebSocket over a loopback socket."""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest

from saxsdog.protocol.signing import compute_mac
from saxsdog.protocol.weblogin import COOKIE_NAME
from saxsdog.config import calibration_problems
from saxsdog.testing import wait_for

from webleash_helpers import SECRET, add_images, calibration_request, login

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
ws_client = pytest.importorskip("websockets.sync.client", reason="the WebSocket tests need websockets")

AUTHENTICATED = [("POST", "/api/command", {"command": "stat"}),
                 ("GET", "/api/schema/calibration", None), ("POST", "/api/validate", {"calibration": {}}),
                 ("POST", "/api/convert/fit2d", {"text": ""}), ("POST", "/api/convert/poni", {"text": ""}),
                 ("POST", "/api/maskpreview", {"calibration": {}}), ("POST", "/api/logout", {})]


def ws_url(server) -> str:
    return server.url.replace("http://", "ws://") + "/ws"


def test_page_and_assets_are_public_and_local(client):
    page = client.get("/")
    assert page.status_code == 200 and "<title>SAXSDOG leash</title>" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/style.css"):
        assert client.get(asset).status_code == 200
    # no asset from elsewhere: every script and stylesheet is served by the package
    assert "http://" not in page.text.replace("http://127.0.0.1", "") and "https://" not in page.text
    pytest.importorskip("plotly", reason="the plots need plotly.js from the plotly package")
    plotly = client.get("/static/plotly.min.js")
    assert plotly.status_code == 200 and "plotly" in plotly.text[:200].lower()


def test_login_with_the_hmac_of_a_challenge(client, client_factory):
    nonce = client.get("/api/challenge").json()["nonce"]
    r = client.post("/api/login", json={"nonce": nonce, "mac": compute_mac(SECRET, nonce)})
    assert r.status_code == 200
    token = r.json()["token"]
    assert len(token) >= 32 and r.json()["expires_in"] > 0
    cookie = r.headers["set-cookie"]
    assert f"{COOKIE_NAME}={token}" in cookie and "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    # the cookie alone works, and so does the bearer token alone
    assert client.get("/api/session").json()["ok"] is True
    with client_factory() as other:
        assert other.get("/api/session").json() == {"ok": False}
        assert other.post("/api/command", json={"command": "stat"}).status_code == 401
        assert other.get("/api/session", headers={"Authorization": f"Bearer {token}"}).json()["ok"] is True
        assert other.post("/api/command", json={"command": "stat"},
                          headers={"Authorization": f"Bearer {token}"}).json()["result"] == "stat"


def test_wrong_mac_reused_and_expired_nonces_are_refused(client, app_factory, client_factory):
    nonce = client.get("/api/challenge").json()["nonce"]
    r = client.post("/api/login", json={"nonce": nonce, "mac": compute_mac("not the secret", nonce)})
    assert r.status_code == 401 and r.json()["result"] == "Error"
    # the nonce was consumed by the failed attempt: the right MAC is refused now
    assert client.post("/api/login", json={"nonce": nonce, "mac": compute_mac(SECRET, nonce)}).status_code == 401
    nonce = client.get("/api/challenge").json()["nonce"]
    assert client.post("/api/login", json={"nonce": nonce, "mac": compute_mac(SECRET, nonce)}).status_code == 200
    assert client.post("/api/login", json={"nonce": nonce, "mac": compute_mac(SECRET, nonce)}).status_code == 401
    assert client.post("/api/login", json={"nonce": "made-up", "mac": compute_mac(SECRET, "made-up")}).status_code == 401
    assert client.post("/api/login", json={"mac": "00"}).status_code == 401
    assert client.post("/api/login", content=b"not json").status_code == 400
    with client_factory(app_factory(nonce_ttl=0.2)) as c:
        nonce = c.get("/api/challenge").json()["nonce"]
        time.sleep(0.4)
        assert c.post("/api/login", json={"nonce": nonce, "mac": compute_mac(SECRET, nonce)}).status_code == 401


def test_launch_codes_work_once_and_expire(client, app_factory, client_factory):
    nonce = client.get("/api/challenge").json()["nonce"]
    assert client.post("/api/launch", json={"nonce": nonce, "mac": compute_mac("wrong", nonce)}).status_code == 401
    nonce = client.get("/api/challenge").json()["nonce"]
    r = client.post("/api/launch", json={"nonce": nonce, "mac": compute_mac(SECRET, nonce)})
    assert r.status_code == 200 and r.json()["expires_in"] == 60
    code = r.json()["code"]
    with client_factory() as browser:
        r = browser.post("/api/login", json={"code": code})
        assert r.status_code == 200 and browser.get("/api/session").json()["ok"] is True
        assert browser.post("/api/login", json={"code": code}).status_code == 401  # single use
    short = app_factory(code_ttl=0.2)
    with client_factory(short) as c:
        code = short.state.auth.new_launch_code()
        time.sleep(0.4)
        assert c.post("/api/login", json={"code": code}).status_code == 401
        assert c.post("/api/login", json={"code": ""}).status_code == 401


@pytest.mark.parametrize("method,path,body", AUTHENTICATED)
@pytest.mark.slow
def test_api_needs_a_session(client, method, path, body):
    r = client.request(method, path, json=body)
    assert r.status_code == 401
    assert r.json()["result"] == "Error" and "log in" in r.json()["data"]["Error"]
    r = client.request(method, path, json=body, headers={"Authorization": "Bearer forged-token"})
    assert r.status_code == 401


def test_logout_ends_the_session(client):
    token = login(client)
    assert client.post("/api/logout", json={}).status_code == 200
    assert client.get("/api/session", headers={"Authorization": f"Bearer {token}"}).json()["ok"] is False
    assert client.post("/api/command", json={"command": "stat"},
                       headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_cross_origin_cookie_requests_are_refused(client):
    login(client)
    r = client.post("/api/command", json={"command": "stat"}, headers={"Origin": "http://evil.example"})
    assert r.status_code == 403
    ok = client.post("/api/command", json={"command": "stat"}, headers={"Origin": str(client.base_url)})
    assert ok.status_code == 200 and ok.json()["result"] == "stat"


@pytest.mark.slow
def test_unauthenticated_websocket_is_closed(server):
    from websockets.exceptions import ConnectionClosed

    with ws_client.connect(ws_url(server), open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": "forged"}))
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd.code == 4401
    with httpx.Client(base_url=server.url) as c:
        token = login(c)
    with ws_client.connect(ws_url(server), open_timeout=10, origin="http://evil.example",
                           additional_headers={"Cookie": f"{COOKIE_NAME}={token}"}) as ws:
        ws.send(json.dumps({"type": "hello"}))  # a cookie sent from another site's page counts for nothing
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=10)
    assert info.value.rcvd.code == 4401
    with ws_client.connect(ws_url(server), open_timeout=10) as ws:  # says nothing at all
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=15)
    assert info.value.rcvd.code == 4401


@pytest.mark.slow
def test_command_round_trip_and_live_results(server, handler, base, data_dir):
    with httpx.Client(base_url=server.url, timeout=30.0) as client:  # the WebSocket needs this server's session
        round_trip(client, server, handler, base, data_dir)


def round_trip(client, server, handler, base, data_dir) -> None:
    token = login(client)
    assert client.post("/api/command", json={"command": "stat"}).json()["result"] == "stat"
    r = client.post("/api/command", json={"command": "listdir", "argument": {"directory": ["."]}}).json()
    assert r["result"] == "dircontent" and "run" in json.dumps(r["data"]["dircontent"])
    # the request rules of the ZeroMQ transport apply
    bad = client.post("/api/command", json={"command": "listdir", "argument": {"directory": [".."]}}).json()
    assert bad["result"] == "Error" and "$.argument.directory[0]" in bad["data"]["Error"]
    assert client.post("/api/command", json={"command": "selfdestruct"}).json()["result"] == "Error"
    assert client.post("/api/command", json={"command": "stat", "attachments": ["***"]}).status_code == 400
    assert client.post("/api/command", json={"command": "plot"}).json()["result"] == "Error"  # no queue yet

    arg, att = calibration_request(data_dir)
    r = client.post("/api/command", json={"command": "new", "argument": arg,
                                          "attachments": [base64.b64encode(a).decode() for a in att]}).json()
    assert r["result"] == "new queue", r
    with ws_client.connect(ws_url(server), open_timeout=10,
                           additional_headers={"Cookie": f"{COOKIE_NAME}={token}"}) as ws:
        assert json.loads(ws.recv(timeout=10))["type"] == "hello"
        for p in add_images(base, 3):
            assert handler.session.feeder_event(str(p)) is None
        seen = {"stat": 0, "result": None}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (seen["result"] and seen["stat"] >= 2):
            msg = json.loads(ws.recv(timeout=30))
            if msg["type"] == "stat":
                seen["stat"] += 1
            elif msg["type"] == "result":
                seen["result"] = msg
    result = seen["result"]
    assert result is not None, "no result was pushed"
    assert result["filename"].startswith("run/img_") and result["time"] is not None
    assert result["IntegralParameters"]["R0"]["I0"] > 0
    graph = result["graphs"][0]
    assert graph["kind"] == "Radial" and len(graph["array"]) == 4 and len(graph["array"][0]) == 1003
    assert wait_for(lambda: handler.stat()["images processed"] == 3)
    plot = client.post("/api/command", json={"command": "plot"}).json()
    assert plot["result"] == "plot data" and plot["data"]["filename"].startswith("run/img_")
    hist = client.post("/api/command", json={"command": "plotdata"}).json()["data"]["history"]
    assert len(hist["I0"]) == 3 and all(v > 0 for v in hist["I0"])
    assert client.post("/api/command", json={"command": "close"}).json()["result"] == "queue closed"


def test_validate_names_the_json_path(client, data_dir):
    login(client)
    cal = json.loads((data_dir / "cal.json").read_text())
    assert client.post("/api/validate", json={"calibration": cal}).json() == []
    cal["Geometry"]["DedectorDistanceMM"] = -5
    cal["Masks"][0]["Oversampling"] = "three"
    del cal["Wavelength"]
    problems = client.post("/api/validate", json={"calibration": cal}).json()
    by_path = {p["path"]: p["message"] for p in problems}
    assert "-5" in by_path["$.Geometry.DedectorDistanceMM"] and "> 0" in by_path["$.Geometry.DedectorDistanceMM"]
    assert "integer" in by_path["$.Masks[0].Oversampling"]
    assert "missing" in by_path["$.Wavelength"]
    cal = json.loads((data_dir / "cal.json").read_text())
    cal["Geometry"]["DetectorDistanceMM"] = 1000.0  # both spellings at once
    assert [p["path"] for p in calibration_problems(cal)] == ["$.Geometry"]
    assert calibration_problems([1, 2])[0]["path"] == "$"


@pytest.mark.slow
def test_schema_and_converters(client, data_dir):
    login(client)
    schema = client.get("/api/schema/calibration").json()
    assert schema["properties"]["Geometry"]["properties"]["DedectorDistanceMM"]["exclusiveMinimum"] == 0
    template = json.loads((data_dir / "cal.json").read_text())
    text = ("INFO: Refined Beam centre =      387.772     808.370 (pixels)\n"
            "INFO: Refined sample to detector distance =     2000.5 mm\n"
            "INFO: Refined wavelength =      1.00000 Angstroms\n")
    r = client.post("/api/convert/fit2d", json={"text": text, "template": template})
    assert r.status_code == 200, r.text
    cal = r.json()["calibration"]
    assert cal["Geometry"]["DedectorDistanceMM"] == pytest.approx(2000.5) and cal["Wavelength"] == pytest.approx(1.0)
    assert cal["Masks"] == template["Masks"]
    r = client.post("/api/convert/fit2d", json={"text": "nothing useful"})
    assert r.status_code == 400 and r.json()["data"]["Error"]
    pytest.importorskip("pyFAI")
    from saxsdog.io.poni import calibration_to_poni_text

    r = client.post("/api/convert/poni", json={"text": calibration_to_poni_text(template), "template": template})
    assert r.status_code == 200, r.text
    geo = r.json()["calibration"]["Geometry"]
    assert geo["DedectorDistanceMM"] == pytest.approx(1031.657, rel=1e-6)
    assert geo["BeamCenter"] == pytest.approx([808.37, 387.772], rel=1e-6)
    assert client.post("/api/convert/poni", json={"text": "garbage"}).status_code == 400


@pytest.mark.slow
def test_mask_preview(client, data_dir, base):
    login(client)
    cal = json.loads((data_dir / "cal.json").read_text())
    mask = {"name": "AAA_integ.msk", "data": base64.b64encode((data_dir / "AAA_integ.msk").read_bytes()).decode()}
    r = client.post("/api/maskpreview", json={"calibration": cal, "mask": mask, "image": "template.tif"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "image/png" and r.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(r.content) > 20_000
    r = client.post("/api/maskpreview", json={"calibration": cal})  # the mask file is not in the base dir
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    r = client.post("/api/maskpreview", json={"calibration": cal, "image": "../../etc/passwd"})
    assert r.status_code == 403 and "outside" in r.json()["data"]["Error"]
    r = client.post("/api/maskpreview", json={"calibration": cal, "mask": {"name": "m.msk", "data": "AAAA"}})
    assert r.status_code == 400 and "$.Masks[0].MaskFile" in r.json()["data"]["Error"]


def test_large_bodies_are_refused(app_factory, client_factory):
    with client_factory(app_factory(max_body_bytes=2000)) as c:
        login(c)
        r = c.post("/api/command", json={"command": "stat", "attachments": ["A" * 4000]})
        assert r.status_code == 413


def test_the_secret_never_leaks(client, app, server, data_dir, caplog):
    responses = []
    with caplog.at_level(logging.DEBUG):
        for secret in (SECRET, "wrong-" + SECRET):
            nonce = client.get("/api/challenge").json()["nonce"]
            responses.append(client.post("/api/login", json={"nonce": nonce, "mac": compute_mac(secret, nonce)}))
        for method, path, body in AUTHENTICATED[:4]:
            responses.append(client.request(method, path, json=body))
        arg, att = calibration_request(data_dir)
        arg["calibration"]["Title"] = "x"
        responses.append(client.post("/api/command", json={"command": "new", "argument": {"directory": 1}}))
        responses.append(client.post("/api/login", json={"code": SECRET}))
        responses.append(client.get("/no-such-page"))
    texts = [r.text + json.dumps(dict(r.headers)) for r in responses]
    assert all(SECRET not in t for t in texts)
    assert caplog.records, "expected some log records (logins)"
    for rec in caplog.records:
        assert SECRET not in rec.getMessage() and SECRET not in repr(rec.args)
    assert SECRET not in repr(app.state.auth) and SECRET not in repr(server.app.state.auth)
    assert SECRET not in repr(server) and SECRET not in repr(app.state.ctx)


@pytest.mark.slow
def test_mask_preview_png_draws_arrays_without_files():
    import numpy as np

    from saxsdog.pipeline.plots import mask_preview_png

    image = np.arange(60 * 40, dtype=np.float64).reshape(60, 40)
    valid = np.ones((60, 40), dtype=bool)
    valid[:10] = False
    cal = {"Geometry": {"BeamCenter": [30, 20]}, "Slices": [{"CutPosition": 5, "CutMargin": 1, "Direction": "y"}]}
    png = mask_preview_png(cal, (60, 40), image, valid, "synthetic", ["a note"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert mask_preview_png({}, (60, 40))[:4] == b"\x89PNG"  # no image, no mask, no beam centre
