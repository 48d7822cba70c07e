"""``saxsfeeder``: announce new image files to saxsdog servers, or simulate a detector."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    from saxsdog.protocol.netconf import add_network_arguments

    p = argparse.ArgumentParser(
        prog="saxsfeeder",
        description='Publish "new file" events ({"command": "new file", "argument": PATH}) '
                    "on a ZeroMQ PUB socket for saxsdog servers to subscribe to. Binds to "
                    "127.0.0.1 (this machine only) unless --public or --bind says otherwise.",
        epilog="Examples:\n"
               "  saxsfeeder --announce /data/run42/img_00001.tif     announce files and exit\n"
               "  ls /data/run42/*.tif | saxsfeeder --announce -      paths from stdin\n"
               "  saxsfeeder --simulate /data/old --rate 20 --loop     replay a directory\n"
               "  saxsfeeder --simulate /data/old --copy-to /data/new  copy one by one, announce copies\n"
               "  saxsfeeder --network ~/.saxsdognetwork -N 1 --public --simulate /data/old\n"
               "\nThe port is that of the Feeder URL of the network file's server -N (the file the "
               "server reads:\n--network FILE, else $SAXSDOG_NETWORK or ~/.saxsdognetwork), or 5555 when "
               "there is no\nnetwork file; --port or --bind override it. saxsfeeder says which it uses.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--simulate", metavar="DIR",
                      help="replay (announce) every image in DIR, recursively, at --rate")
    mode.add_argument("--announce", metavar="PATH", nargs="+",
                      help="announce these files and exit ('-' reads paths from stdin, one a line)")
    where = p.add_argument_group("address")
    where.add_argument("--bind", metavar="URL",
                       help="ZeroMQ address to bind, e.g. tcp://127.0.0.1:5555 or tcp://*:5555")
    where.add_argument("-p", "--port", type=int, metavar="PORT",
                       help="port to bind (default: the network file's Feeder port, else 5555)")
    where.add_argument("--public", action="store_true",
                       help="bind on every network interface, not only 127.0.0.1")
    add_network_arguments(p)
    sim = p.add_argument_group("simulator")
    sim.add_argument("--rate", type=float, default=10.0, metavar="HZ",
                     help="announcements per second (default: 10; 0 = as fast as possible)")
    sim.add_argument("--copy-to", metavar="DEST",
                     help="copy each image into DEST (temporary name, then rename) and announce the copy")
    sim.add_argument("--loop", action="store_true", help="start over after the last image (until Ctrl-C)")
    sim.add_argument("--count", type=int, metavar="N", help="stop after N announcements")
    p.add_argument("--relative-to", metavar="BASEDIR",
                   help="announce paths relative to BASEDIR (the server's base directory)")
    p.add_argument("--wait-subscriber", type=float, default=2.0, metavar="SECONDS",
                   help="first wait up to SECONDS for a server to subscribe, since events sent "
                        "before that are lost (default: 2)")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print each announced path")
    p.add_argument("-v", "--verbose", action="store_true", help="log details")
    return p


def _bind_address(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[str, str]:
    """The address to bind and where it came from (for the user).

    Like the server, the feeder reads the network file (``--network``, else the default
    one) so that both agree on the port without options; only without a network file
    does it use the default port.
    """
    from saxsdog.feeder import DEFAULT_FEEDER_PORT, bind_url
    from saxsdog.protocol.netconf import (
        NetworkConfigError,
        default_network_path,
        server_from_args,
        url_host,
        url_port,
    )

    if args.bind:
        if args.port is not None or args.public:
            parser.error("--bind cannot be combined with --port or --public")
        return args.bind, "--bind"
    if args.port is not None:
        return bind_url(args.port, public=args.public), "--port"
    path = Path(args.network).expanduser() if args.network else default_network_path()
    if args.network is None and not path.exists():
        return (bind_url(DEFAULT_FEEDER_PORT, public=args.public),
                f"the default port: there is no network file {path}")
    try:
        entry = server_from_args(argparse.Namespace(network=str(path), serverno=args.serverno))
    except NetworkConfigError as exc:
        parser.error(f"{exc} (or give --port or --bind)")
    name = f"server {args.serverno} {entry.get('Name', '')!r} of {path}"
    if not entry.get("Feeder"):
        return (bind_url(DEFAULT_FEEDER_PORT, public=args.public),
                f"the default port: {name} has no Feeder URL, so that server subscribes to no feeder")
    try:
        port = url_port(entry["Feeder"])
    except NetworkConfigError as exc:
        parser.error(f"{name}: {exc}")
    source = f"the Feeder URL {entry['Feeder']} of {name}"
    host = url_host(entry["Feeder"])
    if not args.public and host not in ("localhost", "127.0.0.1", "::1"):
        source += f"; the server connects to {host}: add --public unless that is this machine's loopback"
    return bind_url(port, public=args.public), source


def main(argv: list[str] | None = None, *, context=None) -> int:
    """Run ``saxsfeeder``; return the exit code.

    ``context`` (a ZeroMQ context) is for in-process use such as tests; by default the
    feeder has its own, terminated on exit so that every announcement goes out.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="saxsfeeder: %(message)s")
    if args.rate < 0:
        parser.error("--rate must not be negative")
    if args.simulate is None and (args.copy_to or args.loop or args.count is not None):
        parser.error("--copy-to, --loop and --count only apply to --simulate")
    address, source = _bind_address(args, parser)

    from saxsdog.feeder import Feeder, announce_paths, simulate

    show = None if args.quiet else (lambda path: print(path, flush=True))
    try:
        feeder = Feeder(address, context)
    except OSError as exc:
        print(f"saxsfeeder: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"saxsfeeder: publishing on {feeder.endpoint} ({source})", file=sys.stderr, flush=True)
    if address.startswith("tcp://127.0.0.1") and not args.quiet:
        print("saxsfeeder: (this machine only; use --public for servers on other machines)",
              file=sys.stderr, flush=True)
    stop = threading.Event()
    try:
        with feeder:
            if args.wait_subscriber > 0 and not feeder.wait_for_subscriber(args.wait_subscriber):
                print(f"saxsfeeder: no subscriber after {args.wait_subscriber:g} s; "
                      "announcing anyway (events nobody receives are lost)", file=sys.stderr)
            if args.simulate is not None:
                n = simulate(args.simulate, feeder, rate=args.rate, copy_to=args.copy_to,
                             loop=args.loop, count=args.count, relative_to=args.relative_to,
                             stop=stop, on_announce=show)
            else:
                n = 0
                for item in args.announce:
                    if item == "-":
                        n += announce_paths(feeder, _relative(sys.stdin, args.relative_to), show)
                    else:
                        n += announce_paths(feeder, _relative([item], args.relative_to), show)
    except KeyboardInterrupt:
        stop.set()
        print("saxsfeeder: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (FileNotFoundError, ValueError) as exc:
        print(f"saxsfeeder: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"saxsfeeder: {n} file(s) announced", file=sys.stderr)
    return EXIT_OK


def _relative(paths, base: str | None):
    import os

    for p in paths:
        p = p.rstrip("\r\n")
        yield os.path.relpath(p, base) if base and p.strip() else p


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
