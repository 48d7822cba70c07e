"""The page's JavaScript: its unit tests under ``node --test``, and its modules as served.

The page is native ES modules without a build step; the pure parts (schema form, validation
messages, log-in answer, request queue and deadlines, history merge) have tests in
``tests/web/js/*.test.mjs`` run by Node's own test runner (no npm packages).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "src" / "saxsdog" / "server" / "static"
JS_TESTS = Path(__file__).resolve().parent / "js"
IMPORT_RE = re.compile(r"""^\s*(?:import|export)\s[^;]*?from\s+["'](\./[^"']+)["']""", re.MULTILINE | re.DOTALL)


def _node() -> str:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed (apt-get install nodejs): the page's JavaScript unit tests need it")
    return node


@pytest.mark.slow
def test_node_unit_tests_pass():
    node = _node()
    files = sorted(str(p) for p in JS_TESTS.glob("*.test.mjs"))
    assert files, "no JavaScript tests found"
    proc = subprocess.run([node, "--test", *files], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert re.search(r"^# fail 0$", proc.stdout, re.MULTILINE), proc.stdout[-2000:]


def _module_graph() -> set[str]:
    """Every module the page loads, following relative imports from app.js."""
    seen: set[str] = set()
    todo = ["app.js"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        text = (STATIC / name).read_text(encoding="utf-8")
        todo.extend(m.group(1)[2:] for m in IMPORT_RE.finditer(text))
    return seen


def test_every_module_exists_ships_and_is_served_as_javascript(client):
    modules = _module_graph()
    assert {"app.js", "api.js", "auth.js", "schemaform.js", "history.js", "plots.js", "server.js",
            "merge.js", "state.js"} <= modules
    page = client.get("/").text
    assert '<script type="module" src="/static/app.js">' in page
    for name in sorted(modules):
        r = client.get(f"/static/{name}")
        assert r.status_code == 200, name
        assert "javascript" in r.headers["content-type"], (name, r.headers["content-type"])  # modules need it
    # shipped by the package data (server/static/*): no sub-folders that would need an entry
    assert all("/" not in name for name in modules)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"server/static/*"' in pyproject


def test_no_seed_citations_in_the_page():
    for p in STATIC.iterdir():
        if p.suffix in (".js", ".html", ".css"):
            assert not re.search(r"seed \d{3}", p.read_text(encoding="utf-8")), p.name


def test_every_command_the_page_sends_is_in_the_command_table():
    """The page names commands only from the table (it also gets the table at login and
    refuses unknown names): a renamed command cannot silently break a button."""
    from saxsdog.protocol.commands import BY_NAME

    sent = set()
    for path in STATIC.glob("*.js"):
        sent |= set(re.findall(r"""command\(\s*["']([A-Za-z]+)["']""", path.read_text(encoding="utf-8")))
    assert {"new", "stat", "commands"} <= sent
    assert sent - set(BY_NAME) == set()
