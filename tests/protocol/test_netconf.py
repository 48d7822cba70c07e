"""The network file: writing (0600, strong secret), loading, selecting, errors."""

from __future__ import annotations

import argparse
import json
import os
import secrets
import stat
import subprocess
import sys
import threading

import pytest

from saxsdog.errors import SaxsdogError
from saxsdog.protocol import netconf
from saxsdog.protocol.netconf import (MIN_SECRET_BITS, NetworkConfigError, add_network_arguments,
                                      add_network_entry, default_network_path, generate_secret,
                                      load_network, make_entry, redacted, secret_entropy_bits,
                                      select_server, server_from_args, url_port, write_network)

posix_only = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")

URL_SAFE = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@posix_only
def test_written_with_mode_0600_even_with_a_permissive_umask(tmp_path):
    old = os.umask(0o000)
    try:
        path = write_network([make_entry(name="A")], tmp_path / "net")
    finally:
        os.umask(old)
    assert _mode(path) == 0o600


@posix_only
def test_overwriting_a_readable_file_makes_it_private(tmp_path):
    path = tmp_path / "net"
    path.write_text("[]")
    os.chmod(path, 0o644)
    write_network([make_entry()], path)
    assert _mode(path) == 0o600


def test_secret_has_at_least_256_bits():
    secrets_ = {generate_secret() for _ in range(20)}
    assert len(secrets_) == 20
    for s in secrets_:
        assert len(s) >= 43  # 43 url-safe characters carry >= 256 bits
        assert set(s) <= URL_SAFE
    assert len(make_entry()["Secret"]) >= 43


def test_round_trip_and_select(tmp_path):
    a = make_entry("tcp://localhost:7777", "tcp://localhost:5555", "A")
    b = make_entry("tcp://node2:7778", "tcp://node2:5556", "B")
    path = write_network([a, b], tmp_path / "net")
    loaded = load_network(path)
    assert loaded == [a, b]
    assert select_server(loaded, 1)["Name"] == "B"
    assert select_server(loaded, 0)["Server"] == "tcp://localhost:7777"
    with pytest.raises(NetworkConfigError, match=r"no server number 2 .*0: 'A'.*1: 'B'"):
        select_server(loaded, 2)
    with pytest.raises(NetworkConfigError):
        select_server(loaded, -1)


def test_append_entries(tmp_path):
    path = tmp_path / "net"
    add_network_entry(make_entry(name="A"), path)
    _, entries = add_network_entry(make_entry(name="B"), path)
    assert [e["Name"] for e in load_network(path)] == ["A", "B"] == [e["Name"] for e in entries]
    add_network_entry(make_entry(name="C"), path, replace=True)
    assert [e["Name"] for e in load_network(path)] == ["C"]


def test_the_original_format_loads(tmp_path):
    # The original manual's example entry, with a strong secret: its example secret ("Some
    # large random string.", about 150 bits) is refused now (test_weak_secrets_are_refused).
    path = tmp_path / "net"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump([{"Server": "tcp://hostname:7777", "Feeder": "tcp://hostname:5555",
                    "Secret": generate_secret(), "Name": "Pilatus1M"}], fh)
    assert load_network(path)[0]["Name"] == "Pilatus1M"


def _write(path, text: str, mode: int = 0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.chmod(path, mode)
    return path


SECRET = "a-secret-value-that-must-not-leak-0123456789"


@pytest.mark.parametrize("text,match", [
    ("{not json", r"not valid JSON.*line 1 column 2"),
    ("[]", "empty"),
    ('"x"', "expected a JSON list"),
    ('[{"Server": "tcp://h:7777"}]', r"\$\[0\].*missing required field 'Secret'"),
    (f'[{{"Secret": "{SECRET}"}}]', r"missing required field 'Server'"),
    (f'[{{"Server": "http://h:7777", "Secret": "{SECRET}"}}]', r"\$\[0\]\.Server.*tcp://"),
    ('[{"Server": "tcp://h:7777", "Secret": "short"}]', r"\$\[0\]\.Secret.*at least 16"),
    ('[{"Server": "tcp://h:7777", "Secret": 123456789012345678}]', r"\$\[0\]\.Secret"),
])
def test_bad_files_give_clear_errors(tmp_path, text, match):
    path = _write(tmp_path / "net", text)
    with pytest.raises(NetworkConfigError, match=match) as info:
        load_network(path)
    assert str(path) in str(info.value)
    assert SECRET not in str(info.value) and "short" not in str(info.value).split("Secret")[-1]


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(NetworkConfigError, match="no network file at .*saxsnetconf"):
        load_network(tmp_path / "nothing-here")


@posix_only
@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_group_or_world_accessible_file_is_refused(tmp_path, mode):
    path = write_network([make_entry()], tmp_path / "net")
    os.chmod(path, mode)
    with pytest.raises(NetworkConfigError, match=rf"mode {mode:04o}.*chmod 600"):
        load_network(path)
    with pytest.warns(UserWarning, match="chmod 600"):
        assert load_network(path, allow_insecure=True)


def test_errors_are_saxsdog_errors():
    assert issubclass(NetworkConfigError, SaxsdogError)


def test_redacted_hides_the_secret():
    e = make_entry()
    shown = redacted(e)
    assert shown["Secret"] == "<hidden>" and e["Secret"] not in json.dumps(shown)


def test_make_entry_checks_urls():
    with pytest.raises(NetworkConfigError, match="server URL 'localhost:7777'"):
        make_entry(server="localhost:7777")
    with pytest.raises(NetworkConfigError, match="feeder URL"):
        make_entry(feeder="tcp://host:99999")
    assert url_port("tcp://[::1]:7777") == 7777


def test_default_path_honours_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("SAXSDOG_NETWORK", str(tmp_path / "x"))
    assert default_network_path() == tmp_path / "x"
    monkeypatch.delenv("SAXSDOG_NETWORK")
    assert default_network_path().name == ".saxsdognetwork"


def test_argparse_helper(tmp_path):
    path = write_network([make_entry(name="A"), make_entry(name="B")], tmp_path / "net")
    parser = add_network_arguments(argparse.ArgumentParser())
    args = parser.parse_args(["--network", str(path), "-N", "1"])
    assert (args.network, args.serverno) == (str(path), 1)
    assert server_from_args(args)["Name"] == "B"
    assert parser.parse_args([]).serverno == 0


# --------------------------------------------------------------------------- weak secrets

@pytest.mark.parametrize("weak", [
    "a" * 16,                                   # accepted before: 16 characters were enough
    "a" * 200,                                  # long, but one symbol
    "ab" * 60,                                  # a short string repeated
    "abcdefghijklmnopqrstuvwxyz" * 4,           # the alphabet, repeated
    "Some large random string.",                # the original manual's example
    "another-secret-of-enough-length",
    secrets.token_urlsafe(24),                  # random, but only 192 bits
])
def test_weak_secrets_are_refused(tmp_path, weak):
    assert secret_entropy_bits(weak) < MIN_SECRET_BITS
    path = _write(tmp_path / "net", json.dumps([{"Server": "tcp://h:7777", "Secret": weak}]))
    with pytest.raises(NetworkConfigError, match=r"\$\[0\]\.Secret.*too weak.*256.*saxsnetconf") as info:
        load_network(path)
    assert weak not in str(info.value)
    with pytest.raises(NetworkConfigError, match="too weak"):
        make_entry(secret=weak)


def test_strong_secrets_pass():
    # saxsnetconf's secret (384 bits) always passes, and so do other 256-bit random secrets
    for _ in range(1000):
        assert secret_entropy_bits(generate_secret()) >= 300
        assert secret_entropy_bits(secrets.token_hex(32)) >= MIN_SECRET_BITS  # 64 hex digits
    for secret in ("dmsT9bnkpqt3Hkd4QXorEQnE0co9JHNTIuQyvE5JBl4",   # token_urlsafe(32): 43 characters
                   "Yw2-rK9vQ_mZ4tL8xN1cB6hJ3pF7sD0gA5eU2iO9kRw"):
        assert secret_entropy_bits(secret) >= MIN_SECRET_BITS
    assert make_entry(secret=secrets.token_urlsafe(40))["Secret"]


# --------------------------------------------------------------------------- secrets never shown

def test_swapped_server_and_secret_are_not_shown(tmp_path):
    secret = generate_secret()
    path = _write(tmp_path / "net", json.dumps([{"Name": "A", "Server": secret, "Secret": "tcp://h:7777"}]))
    with pytest.raises(NetworkConfigError, match=r"\$\[0\]\.Server") as info:
        load_network(path)
    assert secret not in str(info.value) and secret[:20] not in str(info.value)
    # as saxsleash meets it: the message goes to stderr, without the secret
    run = subprocess.run([sys.executable, "-m", "saxsdog.cli.leash", "--network", str(path), "stat"],
                         capture_output=True, text=True, check=False, timeout=120)
    assert run.returncode != 0 and str(path) in run.stderr
    assert secret not in run.stderr + run.stdout and secret[:20] not in run.stderr + run.stdout


def test_secret_under_an_unknown_key_is_not_shown(tmp_path):
    secret = generate_secret()
    path = _write(tmp_path / "net", json.dumps([{"Server": "tcp://h:7777", "Secrett": secret}]))
    with pytest.raises(NetworkConfigError) as info:
        load_network(path)
    assert "Secrett" in str(info.value) and secret not in str(info.value)


def test_unknown_keys_are_refused_with_a_suggestion_and_x_keys_kept(tmp_path):
    good = {"Name": "A", "Server": "tcp://h:7777", "Feeder": "tcp://h:5555", "Secret": generate_secret()}
    path = _write(tmp_path / "net", json.dumps([dict(good, Fedeer="tcp://h:5556")]))
    with pytest.raises(NetworkConfigError, match=r"\$\[0\]\.Fedeer.*did you mean 'Feeder'"):
        load_network(path)
    _write(path, json.dumps([dict(good, **{"x-comment": "beamline 2"})]))
    assert load_network(path)[0]["x-comment"] == "beamline 2"


# --------------------------------------------------------------------------- other users, FIFOs

@posix_only
def test_file_of_another_user_is_refused(tmp_path, monkeypatch):
    path = write_network([make_entry()], tmp_path / "net")
    assert load_network(path)
    if os.geteuid() == 0:  # really give the file away
        os.chown(path, 65534, 65534)
    else:  # pretend to be someone else
        monkeypatch.setattr(netconf, "_current_uid", lambda: os.geteuid() + 1)
    with pytest.raises(NetworkConfigError, match="belongs to another user"):
        load_network(path)
    with pytest.warns(UserWarning, match="another user"):
        assert load_network(path, allow_insecure=True)


def _load_in_thread(path, timeout: float = 10.0):
    """load_network in a thread: the exception it raised, or ``"hung"`` after ``timeout``."""
    result: list = []

    def run():
        try:
            result.append(load_network(path))
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    return result[0] if result else "hung"


@posix_only
def test_fifo_as_network_file_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "net"
    os.mkfifo(fifo, 0o600)
    got = _load_in_thread(fifo)
    assert got != "hung", "load_network blocked on a FIFO"
    if got == "hung":  # pragma: no cover - unblock the thread
        with open(fifo, "w"):
            pass
    assert isinstance(got, NetworkConfigError) and "not a regular file" in str(got)
    run = subprocess.run([sys.executable, "-m", "saxsdog.cli.leash", "--network", str(fifo), "stat"],
                         capture_output=True, text=True, check=False, timeout=60)
    assert run.returncode != 0 and "not a regular file" in run.stderr


def test_directory_as_network_file_is_refused(tmp_path):
    with pytest.raises(NetworkConfigError, match="not a regular file"):
        load_network(tmp_path)
