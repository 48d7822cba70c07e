"""``saxsdogserver``: the processing daemon (ZeroMQ command service + feeder subscription)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from urllib.parse import urlparse

EXIT_OK, EXIT_USAGE = 0, 2


def build_parser() -> argparse.ArgumentParser:
    from saxsdog.protocol.netconf import add_network_arguments

    p = argparse.ArgumentParser(
        prog="saxsdogserver",
        description="Serve leash commands for BASEDIR: receive calibrations ('new'), integrate the images the "
                    "feeder announces (or that appear), and report progress. Never reads or lists anything "
                    "outside BASEDIR.",
        epilog="Example:\n  saxsnetconf --server tcp://localhost:7777 --feeder tcp://localhost:5555\n"
               "  saxsdogserver -t 2 /data\n  saxsleash new cal.json mask.msk run42",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("basedir", help="base directory of all data the server may touch")
    p.add_argument("-p", "--port", type=int, help="command service port (default: the network file's, else 7777)")
    p.add_argument("--bind", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: only this machine; use 0.0.0.0 for all)")
    p.add_argument("--http-port", type=int, default=7780, metavar="PORT",
                   help="web leash (HTTP/WebSocket) port on the --bind address (default 7780; 0: any free port)")
    p.add_argument("--no-http", action="store_true", help="do not serve the web leash")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="another host name the web leash answers to (repeatable; the --bind address, "
                        "localhost, this machine's names and the network file's server are accepted)")
    p.add_argument("-t", "--threads", type=int, default=2, help="worker processes (default 2)")
    p.add_argument("-f", "--feeder", action="append", metavar="URL",
                   help="feeder URL to subscribe to (repeatable; default: the network file's Feeder)")
    p.add_argument("--no-feeder", action="store_true", help="do not subscribe to any feeder")
    p.add_argument("-w", "--watch", action="store_true", help="also watch the queue directory for new files")
    p.add_argument("-R", "--relpath", default="../work", help="output directory relative to each image")
    p.add_argument("-o", "--out", help="single output directory (inside or outside BASEDIR)")
    p.add_argument("-d", "--daemon", action="store_true", help="run in the background (log in the state dir)")
    p.add_argument("--state-dir", help="ledger and saved queue (default BASEDIR/.saxsdog)")
    p.add_argument("--rescan", type=float, default=30.0, metavar="SECONDS",
                   help="reconciliation scan interval for images without events (0: off; default 30)")
    p.add_argument("--retry-timeout", type=float, default=30.0, metavar="SECONDS",
                   help="keep retrying incomplete images this long (default 30)")
    p.add_argument("--task-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="a worker with no result for this long on one image (stopped, blocked) is killed and "
                        "replaced, the image retried; 3 times: reported failed (default 60; 0: no limit)")
    p.add_argument("--max-message-bytes", type=int, default=64 * 1024 * 1024,
                   help="largest accepted request (default 64 MiB)")
    p.add_argument("--window", type=float, default=900.0, help="accepted request clock skew, seconds (default 900)")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the workers on a Dask cluster: its scheduler address (tcp://host:8786), or 'local' "
                        "for a local Dask cluster of -t processes (needs dask[distributed])")
    p.add_argument("--format", choices=["chi", "nxcansas", "nxcansas-run"], default="chi",
                   help="output format: chi (default), nxcansas (one NXcanSAS .h5 per image) or nxcansas-run "
                        "(one NXcanSAS file per queue, <directory name>.h5 in the output folder, closed when "
                        "the queue closes; a restarted or new queue on the same directory starts "
                        "<name>_001.h5 ...)")
    p.add_argument("--chi-drop-empty", action="store_true",
                   help="leave empty bins out of the .chi files (default: 0 rows, as the original wrote them)")
    p.add_argument("-v", "--verbose", action="store_true")
    add_network_arguments(p)
    return p


def _daemonize(logfile: Path) -> None:
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    logfile.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)


def _raise_fd_limit() -> None:
    """Use the hard limit of open files: many idle web clients must not starve the command port."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > 65536:
            hard = 65536
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ImportError, ValueError, OSError):  # pragma: no cover - not POSIX, or not allowed
        pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _raise_fd_limit()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from saxsdog.logfilter import install_repeat_filter

    install_repeat_filter()  # an attack must not fill the disk through the log
    from saxsdog.errors import SaxsdogError
    from saxsdog.pipeline import QueueOptions
    from saxsdog.pipeline.queue import limit_malloc_arenas

    limit_malloc_arenas()  # before the command service's and feeder's threads start
    from saxsdog.protocol.netconf import load_network, select_server
    from saxsdog.server.handler import CommandHandler
    from saxsdog.server.zmq_service import CommandService, FeederSubscriber

    basedir = Path(args.basedir)
    if not basedir.is_dir():
        print(f"saxsdogserver: error: {basedir} is not a directory", file=sys.stderr)
        return EXIT_USAGE
    try:
        entry = select_server(load_network(args.network), args.serverno)
    except (SaxsdogError, OSError, ValueError) as exc:
        print(f"saxsdogserver: error: {exc}\n(create a network file with saxsnetconf)", file=sys.stderr)
        return EXIT_USAGE
    port = args.port or urlparse(entry.get("Server", "")).port or 7777
    feeders = [] if args.no_feeder else (args.feeder or ([entry["Feeder"]] if entry.get("Feeder") else []))
    state_dir = Path(args.state_dir) if args.state_dir else basedir / ".saxsdog"
    if args.daemon:
        _daemonize(state_dir / "server.log")

    options = QueueOptions(workers=args.threads, out_dir=Path(args.out).resolve() if args.out else None,
                           relpath=args.relpath, retry_timeout=args.retry_timeout, keep_curves=True,
                           task_timeout=args.task_timeout,
                           output_format=args.format, chi_drop_empty=args.chi_drop_empty)
    pool_factory, cluster = None, None
    if args.scheduler:
        try:
            from saxsdog.pipeline.dask_pool import dask_pool_factory
        except ImportError as exc:
            print(f"saxsdogserver: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if not args.verbose:  # distributed logs every connection at INFO
            logging.getLogger("distributed").setLevel(logging.WARNING)
        address = args.scheduler
        if address == "local":  # one cluster for every queue, not one per 'new'
            from distributed import LocalCluster

            cluster = LocalCluster(n_workers=args.threads, threads_per_worker=1, processes=True,
                                   dashboard_address=":0")
            address = cluster.scheduler_address
        pool_factory = dask_pool_factory(address)
    try:
        handler = CommandHandler(basedir, options, state_dir=state_dir, watch=args.watch,
                                 rescan_interval=args.rescan, pool_factory=pool_factory)
    except SaxsdogError as exc:
        print(f"saxsdogserver: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        from saxsdog.protocol.signing import PersistentReplayCache

        replay = PersistentReplayCache(state_dir / "nonces.sqlite", window=args.window)
        service = CommandService(handler, entry["Secret"], bind=f"tcp://{args.bind}:{port}",
                                 max_bytes=args.max_message_bytes, window=args.window, replay=replay)
    except Exception as exc:
        print(f"saxsdogserver: error: cannot listen on {args.bind}:{port}: {exc}", file=sys.stderr)
        handler.shutdown()
        return EXIT_USAGE

    http = None
    if not args.no_http:
        try:
            from saxsdog.protocol.netconf import url_host
            from saxsdog.server.http import start_http_server

            names = list(args.allow_host)
            with contextlib.suppress(SaxsdogError):
                names.append(url_host(entry.get("Server", "")))
            http = start_http_server(handler, entry["Secret"], args.bind, args.http_port, allowed_hosts=names,
                                     max_body_bytes=args.max_message_bytes)
        except ImportError as exc:
            from saxsdog.extras import missing_extra_message

            print(f"saxsdogserver: error: {missing_extra_message(exc.name or 'starlette', 'server', 'the web leash')}"
                  ", or start with --no-http", file=sys.stderr)
        except (OSError, RuntimeError) as exc:
            print(f"saxsdogserver: error: cannot serve the web leash on {args.bind}:{args.http_port}: {exc} "
                  "(choose --http-port, or --no-http)", file=sys.stderr)
        if http is None:
            service.stop()
            service.socket.close(0)
            handler.shutdown()
            return EXIT_USAGE

    def on_path(path: str) -> str | None:
        session = handler.session
        if session is None:
            return "no queue is running"
        return session.feeder_event(path)

    subscriber = FeederSubscriber(feeders, on_path).start() if feeders else None
    resumed = handler.restore()
    stop = threading.Event()

    def _signal(signum, frame):
        stop.set()
        service.stop()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    print(f"saxsdogserver: serving {basedir.resolve()} on {service.endpoint}"
          + (f", web leash {http.url}" if http is not None else "")
          + (f", feeder {', '.join(feeders)}" if feeders else "")
          + ("; resumed the saved queue" if resumed else ""), flush=True)
    try:
        service.serve_forever()
    finally:
        if subscriber is not None:
            subscriber.stop()
        if http is not None:
            http.stop()
        handler.shutdown()
        if cluster is not None:
            cluster.close()
    print("saxsdogserver: stopped", flush=True)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
