"""Request/response schemas and the multipart wire format."""

from __future__ import annotations

import json

import pytest

from saxsdog.errors import SaxsdogError
from saxsdog.protocol.messages import (COMMAND_ALIASES, COMMANDS, MAX_MESSAGE_BYTES, RESULTS,
                                       STAT_KEYS, ProtocolError, canonical_command,
                                       decode_request, decode_response, encode_request,
                                       encode_response, error_response, ok_response,
                                       validate_request, validate_response)
from saxsdog.protocol.signing import sign_request

SECRET = "a-test-secret-that-is-long-enough"

STAT = {"time interval": 0.8776, "queue length": 0, "frames per sec": 10.255,
        "images processed": 235, "pics": 9}

#: one example request argument (and attachments) per command
EXAMPLES = {
    "new": ({"calibration": {"Title": "cal", "Masks": [{"MaskFile": "AAA_integ.msk"}]},
             "directory": ["data", "run42"], "filenames": ["AAA_integ.msk"], "maskbin": ""},
            [b"mask-bytes"]),
    "close": (None, []),
    "abort": ({}, []),
    "get": ({"since": 10}, []),
    "plot": ({}, []),
    "plotdata": ({"since": 1712345678.5}, []),
    "readdir": ({}, []),
    "stat": ({}, []),
    "listdir": ({"directory": ["data"]}, []),
    "fileslist": ({}, []),
    "mergedata": ({"mergeconf": {"TimeOffset": "0", "LogDataTables": []}, "filenames": ["log.txt"]},
                  [b"log"]),
    "getmergedata": ({}, []),
    "validate": ({"calibration": {"Title": "cal"}}, []),
    "convertfit2d": ({"text": "INFO: Refined Beam centre = 1 2 (pixels)", "template": {"Title": "t"}}, []),
    "convertponi": ({"text": "Distance: 1.0\n"}, []),
    "maskpreview": ({"calibration": {"Title": "cal"}, "image": "run/a.tif", "index": 0,
                     "filenames": ["m.msk"]}, [b"mask"]),
    "absolute": ({"curve": "work/water.chi", "standard": "water", "temperature": 25, "q_range": [0.1, 2]}, []),
    "detectorframe": ({"image": "run/a.tif", "frame": 0, "maxside": 1024}, []),
    "calibrants": ({"name": "AgBh"}, []),
    "maskencode": ({"format": "msk", "shape": [2, 3]}, [b"\x00\x01\x00\x00\x00\x01"]),
    "maskdecode": ({"filenames": ["m.msk"], "shape": [2, 3]}, [b"mask"]),
    "calibrateimage": ({"calibrant": "AgBh", "filenames": ["agbh.tif"], "wavelength": 1.54, "pixel": [172],
                        "distance": 800, "template": {"Title": "t"}, "mask": True}, [b"image", b"mask"]),
    "commands": ({}, []),
    "job": ({"id": "0123abcd"}, []),
}

RESPONSES = [
    {"result": "queue closed", "data": {"stat": STAT}},
    {"result": "queue stopped emptied and closed", "data": {"stat": STAT}},
    {"result": "new queue", "data": {}},
    {"result": "plot data", "data": {"filename": "/name/.tif", "stat": STAT,
                                     "array": [[0.1, 0.2], [5.0, None], [1.0, 0.5]]}},
    {"result": "plot data", "data": {"filename": "x.tif", "stat": STAT, "array": [[[0], [0], [0]]]}},
    {"result": "plot data", "data": {"graphs": [{"kind": "Radial", "conf": {}, "columnLabels": ["q", "I", "err"],
                                                 "array": [[1.0], [2.0], [0.1]]}],
                                     "IntegralParameters": {"I0": 1.0}}},
    {"result": "directory refilled queue", "data": {"stat": STAT}},
    {"result": "stat", "data": {"stat": dict(STAT, **{"images failed": 2,
                                                      "stage seconds": {"read": 0.001}})}},
    {"result": "dircontent", "data": {"dircontent": [{"isdir": True, "path": "run1"},
                                                     {"isdir": False, "path": "a.tif"}],
                                      "directory": ["data"]}},
    {"result": "cal", "data": {"cal": {"Title": "x"}, "history": [], "attachments": []}},
    {"result": "fileslist", "data": {"fileslist": {"chi": ["a.chi"]}}},
    {"result": "Empty", "data": {"stat": STAT}},
    {"result": "Error", "data": {"Error": "no queue"}},
    {"result": "accepted", "data": {"job": {"id": "ab12", "command": "new", "state": "running", "seconds": 0.5}}},
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_example_validates(command):
    argument, attachments = EXAMPLES[command]
    env = sign_request(command, argument, secret=SECRET, attachments=attachments)
    validate_request(env)
    frames = encode_request(env, attachments)
    assert frames[1:] == attachments
    got_env, got_att = decode_request(frames)
    assert got_env == env and got_att == attachments
    validate_request(got_env)


def test_examples_cover_every_command():
    assert set(EXAMPLES) == set(COMMANDS) == set(RESULTS)


@pytest.mark.parametrize("alias", sorted(COMMAND_ALIASES))
def test_manual_section_3_5_names_are_aliases(alias):
    argument = EXAMPLES[COMMAND_ALIASES[alias]][0]
    validate_request(sign_request(alias, argument, secret=SECRET))
    assert canonical_command(alias) in COMMANDS


@pytest.mark.parametrize("resp", RESPONSES, ids=lambda r: r["result"])
def test_response_examples_validate_and_round_trip(resp):
    validate_response(resp)
    frames = encode_response(resp)
    assert len(frames) == 1
    assert decode_response(frames) == resp


def test_unknown_command_is_named():
    env = sign_request("frobnicate", {}, secret=SECRET)
    with pytest.raises(ProtocolError, match=r"\$\.command.*unknown command 'frobnicate'"):
        validate_request(env)
    with pytest.raises(ProtocolError, match="frobnicate"):
        canonical_command("frobnicate")


@pytest.mark.parametrize("command,argument,path", [
    ("new", {"calibration": {}, "directory": ["data", ".."]}, r"\$\.argument\.directory\[1\]"),
    ("new", {"calibration": {}, "directory": ["a/b"]}, r"\$\.argument\.directory\[0\]"),
    ("new", {"directory": ["data"]}, r"\$\.argument\.calibration.*missing required field"),
    ("new", {"calibration": [], "directory": ["."]}, r"\$\.argument\.calibration.*expected object"),
    ("new", None, r"\$\.argument.*missing required field 'argument'"),
    ("listdir", {"directory": "data"}, r"\$\.argument\.directory.*expected array"),
    ("get", {"since": -1}, r"\$\.argument\.since"),
    ("plotdata", {"since": "yesterday"}, r"\$\.argument\.since.*expected number"),
    ("stat", {"unexpected": 1}, r"\$\.argument.*'unexpected'"),
    ("mergedata", {}, r"\$\.argument\.mergeconf.*missing"),
])
def test_schema_violations_name_the_path(command, argument, path):
    env = sign_request(command, argument, secret=SECRET)
    with pytest.raises(ProtocolError, match=path):
        validate_request(env)


def test_envelope_fields_are_checked():
    env = sign_request("stat", {}, secret=SECRET)
    with pytest.raises(ProtocolError, match=r"\$\.nonce"):
        validate_request(dict(env, nonce="XYZ"))
    with pytest.raises(ProtocolError, match=r"\$\.sign.*missing"):
        validate_request({k: v for k, v in env.items() if k != "sign"})
    with pytest.raises(ProtocolError, match=r"'extra'"):
        validate_request(dict(env, extra=1))
    with pytest.raises(ProtocolError, match=r"\$\.attachments\[0\]"):
        validate_request(dict(env, attachments=["nothex"]))
    with pytest.raises(ProtocolError, match=r"\$: expected a JSON object"):
        validate_request([env])


@pytest.mark.parametrize("frames,match", [
    ([], "empty message"),
    ([b"{not json"], "not valid JSON.*line 1 column 2"),
    ([b"[1, 2, 3]"], "must be a JSON object, got list"),
    ([b"null"], "must be a JSON object, got null"),
    ([b'"stat"'], "must be a JSON object, got str"),
    ([b'{"command": "stat", "time": NaN}'], "NaN is not allowed"),
    ([b'{"x": Infinity}'], "Infinity is not allowed"),
    ([b'{"x": -Infinity}'], "Infinity is not allowed"),
    ([b"\xff\xfe{}"], "not UTF-8"),
    ([b'{"a": 1, "a": 2}'], "duplicate key 'a'"),
])
def test_malformed_requests_are_protocol_errors(frames, match):
    with pytest.raises(ProtocolError, match=match):
        decode_request(frames)


def test_oversized_request_is_refused_before_parsing():
    frames = [b"{}", b"x" * 1000]
    with pytest.raises(ProtocolError, match=r"too large: 1002 bytes in 2 frame\(s\), the limit is 1000"):
        decode_request(frames, max_bytes=1000)
    assert decode_request(frames, max_bytes=1002) == ({}, [b"x" * 1000])
    assert MAX_MESSAGE_BYTES == 64 * 1024 * 1024


def test_protocol_error_is_a_saxsdog_error():
    assert issubclass(ProtocolError, SaxsdogError)


def test_encoding_refuses_nan():
    with pytest.raises(ProtocolError, match="NaN"):
        encode_response({"result": "plot data", "data": {"array": [[float("nan")]]}})
    with pytest.raises(ProtocolError, match="NaN"):
        encode_request({"command": "stat", "time": float("inf")})


def test_decode_response_errors():
    with pytest.raises(ProtocolError, match="expected 1"):
        decode_response([b"{}", b"{}"])
    with pytest.raises(ProtocolError, match="not valid JSON"):
        decode_response([b"<html>"])


def test_helpers_build_valid_responses():
    err = error_response("queue not started")
    assert err == {"result": "Error", "data": {"Error": "queue not started"}}
    validate_response(err)
    ok = ok_response("stat", {"stat": STAT})
    assert ok == {"result": "stat", "data": {"stat": STAT}}
    validate_response(ok)


@pytest.mark.parametrize("resp,path", [
    ({"data": {}}, r"\$\.result.*missing"),
    ({"result": "stat"}, r"\$\.data.*missing"),
    ({"result": "Error", "data": {}}, r"\$\.data\.Error.*missing"),
    ({"result": "stat", "data": {"stat": {"queue length": 0}}}, r'\$\.data\.stat\["time interval"\]'),
    ({"result": "stat", "data": {"stat": dict(STAT, **{"queue length": -3})}},
     r'\$\.data\.stat\["queue length"\].*-3'),
    ({"result": "plot data", "data": {"array": [["a"]]}}, r"\$\.data\.array\[0\]\[0\]"),
    ({"result": "x", "data": {}, "extra": 1}, r"'extra'"),
])
def test_bad_responses_name_the_path(resp, path):
    with pytest.raises(ProtocolError, match=path):
        validate_response(resp)


def test_stat_keys_are_the_originals():
    assert STAT_KEYS == ("time interval", "queue length", "frames per sec", "images processed", "pics")
    schema = json.loads(__import__("importlib").resources.files("saxsdog.schemas")
                        .joinpath("leash_response.schema.json").read_text())
    assert schema["$defs"]["stat"]["required"] == list(STAT_KEYS)


# --------------------------------------------------------------------------- the command table

def test_views_of_the_table_agree_with_it():
    from saxsdog.protocol import commands as table

    assert COMMANDS == tuple(c.name for c in table.COMMANDS)
    assert RESULTS == {c.name: c.result for c in table.COMMANDS}
    assert COMMAND_ALIASES == {a: c.name for c in table.COMMANDS for a in c.aliases}
    assert len(set(COMMANDS) | set(COMMAND_ALIASES)) == len(COMMANDS) + len(COMMAND_ALIASES)


def test_results_keep_the_original_spellings():
    """The results the original manual gives, and ``dircontent`` for listdir (its payload name)."""
    assert {k: RESULTS[k] for k in ("new", "close", "abort", "readdir", "stat", "plot", "listdir")} == {
        "new": "new queue", "close": "queue closed", "abort": "queue stopped emptied and closed",
        "readdir": "directory refilled queue", "stat": "stat", "plot": "plot data", "listdir": "dircontent"}
    assert {a: COMMAND_ALIASES[a] for a in ("new queue", "close queue", "abort queue", "send plot")} == {
        "new queue": "new", "close queue": "close", "abort queue": "abort", "send plot": "plot"}


def test_every_argument_schema_exists_and_is_used():
    from saxsdog.protocol.commands import COMMANDS as TABLE, describe_commands

    schema = json.loads(__import__("importlib").resources.files("saxsdog.schemas")
                        .joinpath("leash_request.schema.json").read_text())
    argument_defs = {k for k in schema["$defs"] if k.endswith("Argument")}
    assert {c.argument for c in TABLE} == argument_defs
    described = {d["name"]: d for d in describe_commands()}
    assert list(described) == list(COMMANDS)
    assert described["listdir"]["argument"]["properties"]["directory"]["items"]["maxLength"] == 255
    assert "$ref" not in json.dumps(described)  # references resolved for the page
    json.dumps(described, allow_nan=False)


def test_the_envelope_schema_names_no_command():
    """Command names live in the table only; the envelope schema takes any short string."""
    schema = json.loads(__import__("importlib").resources.files("saxsdog.schemas")
                        .joinpath("leash_request.schema.json").read_text())
    assert "enum" not in schema["properties"]["command"] and "allOf" not in schema


def test_argument_is_validated_without_an_envelope():
    from saxsdog.protocol.messages import validate_argument

    assert validate_argument("stat", None) == {}
    assert validate_argument("close queue", {}) == {}
    with pytest.raises(ProtocolError, match=r"\$\.argument\.directory\[0\]"):
        validate_argument("listdir", {"directory": [".."]})
    with pytest.raises(ProtocolError, match=r"\$\.argument: missing required field 'argument'"):
        validate_argument("mergedata", None)
    with pytest.raises(ProtocolError, match=r"\$\.argument\.text.*missing"):
        validate_argument("convertfit2d", {})


def test_a_5000_digit_integer_is_a_clear_protocol_error():
    frame = b'{"command": "stat", "time": ' + b"9" * 5000 + b"}"
    with pytest.raises(ProtocolError, match="an integer has more than 4300 digits"):
        decode_request([frame])
    env = sign_request("plotdata", {"since": 10 ** 4000}, secret=SECRET)
    with pytest.raises(ProtocolError, match=r"\$\.argument\.since: integer too large \(4001 digits"):
        validate_request(env)
    env = sign_request("new", {"calibration": {"Geometry": {"Imagesize": [10 ** 30, 1]}}, "directory": ["."]},
                       secret=SECRET)
    with pytest.raises(ProtocolError, match=r"\$\.argument\.calibration\.Geometry\.Imagesize\[0\]"):
        validate_request(env)


def test_a_huge_command_name_is_not_echoed_whole():
    name = "x" * 500_000
    with pytest.raises(ProtocolError) as info:
        validate_request(sign_request(name, {}, secret=SECRET))
    message = str(info.value)
    assert len(message) < 1000 and "(500000 characters)" in message and "unknown command" in message


def test_shorten():
    from saxsdog.protocol.messages import shorten

    assert shorten("abc") == "'abc'"
    assert shorten("y" * 300, 10) == "'yyyyyyyyyy'… (300 characters)"
    assert shorten([1, 2]) == "[1, 2]"
