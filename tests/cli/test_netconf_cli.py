"""``saxsnetconf`` in-process."""

from __future__ import annotations

import io
import json
import os
import stat

import pytest

from saxsdog.cli.netconf import main
from saxsdog.protocol.netconf import load_network


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(capsys, *argv, **kw):
    code = main([str(a) for a in argv], **kw)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_non_interactive_flags_write_a_private_file(tmp_path, capsys):
    path = tmp_path / "net"
    code, out, err = run(capsys, "--server", "tcp://localhost:7777", "--feeder", "tcp://localhost:5555",
                         "--name", "X", "--network", path)
    assert code == 0, err
    if os.name == "posix":
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    entries = json.loads(path.read_text())
    assert len(entries) == 1
    e = entries[0]
    assert (e["Name"], e["Server"], e["Feeder"]) == ("X", "tcp://localhost:7777", "tcp://localhost:5555")
    assert len(e["Secret"]) >= 43
    assert e["Secret"] not in out + err
    assert "0600" in out and str(path) in out


def test_existing_file_needs_append_or_replace(tmp_path, capsys):
    path = tmp_path / "net"
    assert run(capsys, "--name", "A", "--network", path, "--non-interactive")[0] == 0
    code, _, err = run(capsys, "--name", "B", "--network", path, "--non-interactive")
    assert code == 2 and "--append" in err and "--replace" in err
    assert [e["Name"] for e in load_network(path)] == ["A"]

    assert run(capsys, "--name", "B", "--server", "tcp://node2:7778", "--network", path, "--append")[0] == 0
    entries = load_network(path)
    assert [e["Name"] for e in entries] == ["A", "B"]
    assert entries[0]["Secret"] != entries[1]["Secret"]

    assert run(capsys, "--name", "C", "--network", path, "--replace")[0] == 0
    assert [e["Name"] for e in load_network(path)] == ["C"]


def test_interactive_prompt(tmp_path, capsys):
    path = tmp_path / "net"
    answers = iter(["Pilatus1M", "tcp://beamline:7777", ""])  # empty answer = the default
    prompts = []

    def read(prompt):
        prompts.append(prompt)
        return next(answers)

    code, _, err = run(capsys, "--network", path, stdin=FakeTTY(), read=read)
    assert code == 0, err
    assert len(prompts) == 3 and "Feeder URL [tcp://localhost:5555]" in prompts[2]
    e = load_network(path)[0]
    assert (e["Name"], e["Server"], e["Feeder"]) == ("Pilatus1M", "tcp://beamline:7777",
                                                    "tcp://localhost:5555")


def test_interactive_existing_file_asks(tmp_path, capsys):
    path = tmp_path / "net"
    assert run(capsys, "--name", "A", "--network", path, "--non-interactive")[0] == 0
    answers = iter(["a"])
    code, _, _ = run(capsys, "--name", "B", "--server", "tcp://h:1", "--feeder", "tcp://h:2",
                     "--network", path, stdin=FakeTTY(), read=lambda p: next(answers))
    assert code == 0
    assert [e["Name"] for e in load_network(path)] == ["A", "B"]
    code, _, err = run(capsys, "--name", "C", "--server", "tcp://h:1", "--feeder", "tcp://h:2",
                       "--network", path, stdin=FakeTTY(), read=lambda p: "c")
    assert code == 2 and "cancelled" in err
    assert len(load_network(path)) == 2


def test_list_hides_secrets(tmp_path, capsys):
    path = tmp_path / "net"
    run(capsys, "--name", "A", "--network", path, "--non-interactive")
    secret = load_network(path)[0]["Secret"]
    code, out, _ = run(capsys, "--list", "--network", path)
    assert code == 0
    assert "A" in out and "tcp://localhost:7777" in out and "hidden" in out
    assert secret not in out


def test_bad_url_is_a_usage_error(tmp_path, capsys):
    code, _, err = run(capsys, "--server", "localhost:7777", "--network", tmp_path / "net",
                       "--non-interactive")
    assert code == 2 and "tcp://hostname:port" in err
    assert not (tmp_path / "net").exists()


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "--server tcp://localhost:7777" in capsys.readouterr().out
