"""``leash``: open the web leash of a server, or of a private local server (local-server mode).

``leash [--network FILE] [-N N] [--url URL] [--http-port P]``
    Asks the server named in the network file for a one-time launch code (proving
    knowledge of the shared secret with an HMAC; the secret itself is never sent) and opens
    ``URL/#code=...`` in the browser.  The code is single-use, expires in 60 s and travels
    in the URL fragment, which browsers never send to servers.

``leash --local DIR [--port P]``
    Starts a private command handler and HTTP service for ``DIR`` on 127.0.0.1 in this
    process, with a random secret made for this session, opens the page and serves until
    Ctrl-C (as the original SAXSDOG manual describes: no feeder; the directory walker and
    ``readdir`` fill the queue).

``--no-browser`` prints the URL instead of opening a browser.

The remote mode needs nothing of :mod:`saxsdog.server` (the login MAC and the default port
come from :mod:`saxsdog.protocol`); only the local-server mode imports the server.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import signal
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    from saxsdog.protocol.netconf import add_network_arguments
    from saxsdog.protocol.weblogin import DEFAULT_HTTP_PORT

    p = argparse.ArgumentParser(
        prog="leash",
        description="Open the SAXSDOG web leash in a browser: of a server from the network file (logged in "
                    "with a one-time launch code), or of a private local server for a directory (--local).",
        epilog="Examples:\n  leash                      # server 0 of ~/.saxsdognetwork\n"
               "  leash -N 1 --http-port 8080\n  leash --url http://127.0.0.1:7780\n"
               "  leash --local ~/data        # local-server mode, until Ctrl-C (queues in sub-folders)\n"
               "  leash --local ~/data/run42 -R work   # a queue on the folder itself, outputs in run42/work",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", help="web leash address, e.g. http://127.0.0.1:7780 (default: the network "
                                 "file's server host and --http-port)")
    p.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT,
                   help=f"HTTP port of the server's web leash (default {DEFAULT_HTTP_PORT}, as saxsdogserver)")
    p.add_argument("--local", metavar="DIR", help="start a private server for DIR on 127.0.0.1 (local-server mode)")
    p.add_argument("--port", type=int, default=0, help="port of the local server (default: any free port)")
    p.add_argument("-t", "--threads", type=int, default=2, help="worker processes of the local server (default 2)")
    p.add_argument("-w", "--watch", action="store_true", help="local server: also watch the queue directory")
    p.add_argument("-R", "--relpath", default="../work",
                   help="local server: output folder relative to each image (default ../work; outputs must stay "
                        "inside DIR, so a queue on DIR itself needs e.g. -R work)")
    p.add_argument("--no-browser", action="store_true", help="print the URL instead of opening a browser")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server (default 10)")
    p.add_argument("-v", "--verbose", action="store_true")
    add_network_arguments(p)
    return p


def _post_json(url: str, body: dict, timeout: float) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    return _open_json(req, timeout)


def _open_json(req, timeout: float) -> dict:
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read().decode("utf-8"))
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read().decode("utf-8"))["data"]["Error"]
        except Exception:
            msg = f"HTTP {exc.code}"
        raise RuntimeError(msg) from None


def request_launch_url(url: str, secret: str, timeout: float = 10.0) -> str:
    """Get a one-time launch code from the web leash at ``url``; return the page URL with it.

    Parameters
    ----------
    url
        Base URL of the web leash, e.g. ``http://127.0.0.1:7780``.
    secret
        The shared secret (used for the HMAC only; never sent).
    timeout
        Seconds to wait for each request.

    Returns
    -------
    str
        ``url/#code=CODE``.
    """
    from saxsdog.protocol.signing import compute_mac

    base = url.rstrip("/")
    nonce = _open_json(urllib.request.Request(base + "/api/challenge"), timeout)["nonce"]
    code = _post_json(base + "/api/launch", {"nonce": nonce, "mac": compute_mac(secret, nonce)}, timeout)["code"]
    return f"{base}/#code={code}"


def _open(url: str, no_browser: bool) -> None:
    if no_browser:
        print(f"leash: open {url}", flush=True)
        return
    import webbrowser

    if not webbrowser.open(url):
        print(f"leash: no browser found; open {url}", flush=True)
    else:
        print("leash: opened the web leash in your browser (the link works once, within 60 s)", flush=True)


def _remote(args) -> int:
    from saxsdog.errors import SaxsdogError
    from saxsdog.protocol.netconf import load_network, select_server, url_host

    try:
        entry = select_server(load_network(args.network), args.serverno)
    except (SaxsdogError, OSError, ValueError) as exc:
        print(f"leash: error: {exc}\n(create a network file with saxsnetconf, or use leash --local DIR)",
              file=sys.stderr)
        return EXIT_USAGE
    if args.url:
        url = args.url.rstrip("/")
    else:
        try:
            host = url_host(entry.get("Server", ""))
        except SaxsdogError as exc:
            print(f"leash: error: {exc}; give the page address with --url", file=sys.stderr)
            return EXIT_USAGE
        if host in ("*", "0.0.0.0"):
            host = "127.0.0.1"
        url = f"http://{'[' + host + ']' if ':' in host else host}:{args.http_port}"
    try:
        page = request_launch_url(url, entry["Secret"], args.timeout)
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        reason = getattr(exc, "reason", None) or exc
        print(f"leash: error: cannot get a launch code from {url}: {reason}\n"
              f"(is saxsdogserver running with its web leash on port {args.http_port}?)", file=sys.stderr)
        return EXIT_FAIL
    _open(page, args.no_browser)
    return EXIT_OK


def _local(args) -> int:
    from saxsdog.errors import SaxsdogError
    from saxsdog.pipeline import QueueOptions
    from saxsdog.server.handler import CommandHandler
    from saxsdog.logfilter import install_repeat_filter
    from saxsdog.server.http import start_http_server

    basedir = Path(args.local).expanduser()
    if not basedir.is_dir():
        print(f"leash: error: {basedir} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    options = QueueOptions(workers=args.threads, keep_curves=True, relpath=args.relpath)
    try:
        handler = CommandHandler(basedir, options, watch=args.watch, rescan_interval=0)
    except SaxsdogError as exc:
        print(f"leash: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    install_repeat_filter()  # a flood of identical log lines is counted, not written
    secret = secrets.token_urlsafe(48)  # this session only; never shown
    try:
        server = start_http_server(handler, secret, "127.0.0.1", args.port)
    except (OSError, RuntimeError) as exc:
        print(f"leash: error: cannot listen on 127.0.0.1:{args.port}: {exc}", file=sys.stderr)
        handler.shutdown()
        return EXIT_USAGE
    del secret
    auth = server.app.state.auth
    stop = threading.Event()

    def _signal(signum, frame):
        stop.set()

    old = {s: signal.signal(s, _signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"leash: local server for {basedir.resolve()} on {server.url} (Ctrl-C to stop)", flush=True)
        _open(f"{server.url}/#code={auth.new_launch_code()}", args.no_browser)
        if sys.stdin is not None and sys.stdin.isatty():
            print("leash: press Enter for a new login link", flush=True)

            def _links() -> None:
                for _ in sys.stdin:
                    if stop.is_set():
                        break
                    print(f"leash: open {server.url}/#code={auth.new_launch_code()}", flush=True)

            threading.Thread(target=_links, name="leash-links", daemon=True).start()
        while not stop.wait(0.5):
            pass
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        server.stop()
        handler.shutdown()
    print("leash: stopped", flush=True)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``leash`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from saxsdog.extras import MissingExtraError, import_optional

    try:
        for module in ("starlette", "uvicorn", "websockets"):
            import_optional(module, "server", "leash")
    except MissingExtraError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE  # 2, as every command whose extra is missing
    if args.local:
        return _local(args)
    return _remote(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
