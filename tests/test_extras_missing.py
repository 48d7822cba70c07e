"""A core-only install: the core works, and each command without its extra says what to install.

No second virtualenv is needed: every case runs in a subprocess whose first import hook makes
the optional packages (:data:`saxsdog.extras.EXTRAS`) fail to import, as they do where only
``pip install saxsdog`` ran.  The console scripts are called as pip's generated scripts call
them (``sys.exit(entry())``), with the arguments a user would type.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest

from saxsdog.extras import EXTRAS

pytestmark = pytest.mark.slow  # real processes, servers or seconds-long waits

ROOT = Path(__file__).resolve().parents[1]
OPTIONAL = sorted({m for e in EXTRAS.values() for m in e.packages.values()} | {"dask"})
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]

# Installed before anything else: an import of a blocked top-level package fails as if the
# package were not installed.
_BLOCKER = textwrap.dedent("""
    import sys

    class _NotInstalled:
        blocked = frozenset(sys.argv.pop(1).split(","))

        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in self.blocked:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, _NotInstalled())
""")


def _run_script(script: str, *args: str, blocked=OPTIONAL, cwd: Path | None = None, home: Path | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess:
    """Run console script ``script`` (from pyproject) with ``blocked`` packages missing."""
    module, func = SCRIPTS[script].split(":")
    code = _BLOCKER + f"sys.argv[0] = {script!r}\nfrom {module} import {func}\nsys.exit({func}())\n"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    if home is not None:
        env["HOME"] = str(home)
    env.pop("SAXSDOG_NETWORK", None)
    return subprocess.run([sys.executable, "-c", code, ",".join(blocked), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


def _assert_names_extra(proc: subprocess.CompletedProcess, prog: str, extra: str) -> None:
    """Exit 2 with the one line ``<prog...> needs ... pip install 'saxsdog[extra]'``, no traceback."""
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert re.fullmatch(rf"{re.escape(prog)}.* needs the Python package '\w+', which is not installed: "
                        rf"pip install 'saxsdog\[{extra}\]'", lines[-1]), proc.stderr


def test_the_blocker_blocks():
    code = _BLOCKER + "import zmq\n"
    proc = subprocess.run([sys.executable, "-c", code, "zmq"], capture_output=True, text=True, timeout=60)
    assert "ModuleNotFoundError: No module named 'zmq'" in proc.stderr


def test_every_console_script_goes_through_the_entry_wrapper():
    from saxsdog.cli import entry

    for script, target in SCRIPTS.items():
        assert target == f"saxsdog.cli.entry:{script}"
        assert callable(getattr(entry, script))


@pytest.mark.parametrize("script, args, extra", [
    ("saxsdogserver", ["{tmp}"], "server"),
    ("saxsfeeder", ["--simulate", "{tmp}"], "server"),
    ("saxsleash", ["stat"], "server"),
    ("saxsdmerge", ["{tmp}", "shutter.log"], "merge"),
    ("plotchi", ["{chi}", "-o", "{tmp}/curve.png"], "plot"),
    ("leash", [], "server"),
    ("leash", ["--local", "{tmp}"], "server"),
    ("saxsconverter", ["-t", "{cal}", "--to-poni", "{tmp}/cal.poni"], "pyfai"),
])
def test_a_command_without_its_extra_names_it(tmp_path, data_dir, script, args, extra):
    fill = {"tmp": str(tmp_path), "chi": str(data_dir / "reference" / "buf1_00000.saxsdog.chi"),
            "cal": str(data_dir / "cal.json")}
    proc = _run_script(script, *(a.format(**fill) for a in args), home=tmp_path)
    _assert_names_extra(proc, script, extra)


@pytest.mark.parametrize("args, extra", [
    (["-s"], "plot"),
    (["--scheduler", "local"], "dask"),
])
def test_saxsdog_options_without_their_extra_name_it(tmp_path, data_dir, args, extra):
    (tmp_path / "img").mkdir()
    proc = _run_script("saxsdog", "-c", str(data_dir / "cal.json"), "-o", str(tmp_path / "out"), *args,
                       str(data_dir / "buf1_00000.tif"), home=tmp_path)
    _assert_names_extra(proc, "saxsdog", extra)
    assert not list((tmp_path / "out").rglob("*.chi"))


def test_saxsdog_stream_without_the_stream_extra_names_it(tmp_path, data_dir):
    # before: the receiving thread died on 'import zmq' and saxsdog waited for frames forever
    proc = _run_script("saxsdog", "-c", str(data_dir / "cal.json"), "-o", str(tmp_path),
                       "--stream", "tcp://127.0.0.1:9", home=tmp_path, timeout=60)
    _assert_names_extra(proc, "saxsdog", "stream")


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_needs_no_extra(script):
    proc = _run_script(script, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage:" in proc.stdout


def test_server_without_the_web_packages_runs_with_no_http(tmp_path):
    # --no-http needs only pyzmq: the web packages are not asked for before the server starts
    proc = _run_script("saxsdogserver", "--no-http", str(tmp_path), blocked=["starlette", "uvicorn", "websockets"],
                       home=tmp_path)
    assert "needs the Python package" not in proc.stderr
    assert "no network file" in proc.stderr


def test_saxsdog_on_the_real_data_needs_no_extra(tmp_path, data_dir):
    proc = _run_script("saxsdog", "-c", str(data_dir / "cal.json"), "-o", str(tmp_path / "out"),
                       str(data_dir / "buf1_00000.tif"), str(data_dir / "agbeh2_1M.tif"), home=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 processed" in proc.stdout + proc.stderr
    assert sorted(p.name for p in (tmp_path / "out").rglob("*.chi")) == ["agbeh2_1M.chi", "buf1_00000.chi"]


def test_library_integrates_with_every_optional_package_missing(data_dir, real_calibration, real_image):
    code = _BLOCKER + textwrap.dedent(f"""
        import json
        import saxsdog
        cal = saxsdog.Calibration({str(data_dir / 'cal.json')!r}, cache=False)
        q, I = cal.integrate(saxsdog.read_image({str(data_dir / 'buf1_00000.tif')!r}).data)[:2]
        optional = {OPTIONAL!r}
        loaded = sorted(m for m in sys.modules if m.partition(".")[0] in optional)
        print(json.dumps({{"q": list(map(float, q)), "I": list(map(float, I)), "loaded": loaded}}))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code, ",".join(OPTIONAL)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["loaded"] == []
    q, intensity = real_calibration.integrate(real_image)[:2]
    np.testing.assert_array_equal(np.asarray(result["q"]), np.asarray(q, dtype=float))
    np.testing.assert_array_equal(np.asarray(result["I"]), np.asarray(intensity, dtype=float))



def _handler_answer(tmp_path: Path, blocked: list[str], command: str, argument: dict,
                    attachments: list[bytes]) -> dict:
    """The server's answer to ``command`` (an in-process CommandHandler) with ``blocked`` missing."""
    for k, blob in enumerate(attachments):
        (tmp_path / f"attachment{k}").write_bytes(blob)
    code = _BLOCKER + textwrap.dedent(f"""
        import json
        from pathlib import Path
        from saxsdog.pipeline import QueueOptions
        from saxsdog.server.handler import CommandHandler
        tmp = Path({str(tmp_path)!r})
        handler = CommandHandler(tmp, QueueOptions(workers=1), rescan_interval=0)
        try:
            blobs = [(tmp / f"attachment{{k}}").read_bytes() for k in range({len(attachments)})]
            answer = handler.execute({command!r}, json.loads({json.dumps(argument)!r}), blobs)
        finally:
            handler.shutdown()
        print(json.dumps(answer))
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code, ",".join(blocked)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_server_mergedata_without_the_merge_extra_names_it(tmp_path):
    # before: "internal error in mergedata: ModuleNotFoundError: No module named 'pandas'"
    conf = {"LogDataTables": [{"Name": "Peak", "Files": [{"LocalPath": "peak.log"}]}]}
    answer = _handler_answer(tmp_path, ["pandas", "openpyxl"], "mergedata",
                             {"mergeconf": conf, "filenames": ["peak.log"]}, [b"1 2"])
    assert answer["result"] == "Error"
    assert answer["data"]["Error"].endswith("needs the Python package 'pandas', which is not installed: "
                                            "pip install 'saxsdog[merge]'"), answer


def test_server_mask_preview_without_the_plot_extra_names_it(tmp_path, data_dir):
    # before: "internal error in maskpreview: ModuleNotFoundError: No module named 'matplotlib'"
    cal = json.loads((data_dir / "cal.json").read_text())
    answer = _handler_answer(tmp_path, ["matplotlib"], "maskpreview",
                             {"calibration": cal, "filenames": ["AAA_integ.msk"]},
                             [(data_dir / "AAA_integ.msk").read_bytes()])
    assert answer == {"result": "Error", "data": {"Error": "the mask preview needs the Python package "
                      "'matplotlib', which is not installed: pip install 'saxsdog[plot]'"}}, answer


def test_excel_output_without_openpyxl_names_the_merge_extra(tmp_path):
    code = _BLOCKER + textwrap.dedent(f"""
        import pandas as pd
        from saxsdog.extras import MissingExtraError
        from saxsdog.merge import write_merged
        try:
            write_merged(pd.DataFrame({{"file": ["a.tif"], "t": [1.0]}}), {str(tmp_path / 'merged.xlsx')!r})
        except MissingExtraError as exc:
            print(exc)
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code, "openpyxl"], capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ("Excel output needs the Python package 'openpyxl', which is not installed: "
                                   "pip install 'saxsdog[merge]'")
    assert not list(tmp_path.iterdir())
