"""``saxsnetconf``: write the network file (server URL, feeder URL, strong shared secret)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    from saxsdog.protocol.netconf import DEFAULT_FEEDER_URL, DEFAULT_SERVER_URL

    p = argparse.ArgumentParser(
        prog="saxsnetconf",
        description="Create or extend the saxsdog network file: a list of servers, each with "
                    "its command URL, feeder URL and a freshly generated shared secret "
                    "(64 random characters). The file is written with mode 0600; copy it to "
                    "every computer of the network and keep it private.",
        epilog="Examples:\n"
               "  saxsnetconf                                   ask on the terminal\n"
               "  saxsnetconf --server tcp://localhost:7777 --feeder tcp://localhost:5555 --name Pilatus1M\n"
               "  saxsnetconf --append --name WAXS --server tcp://node2:7778 --feeder tcp://node2:5556\n"
               "  saxsnetconf --network ./lab.saxsdognetwork --replace --non-interactive\n"
               "  saxsnetconf --list                            show the servers (secrets hidden)",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", metavar="URL",
                   help=f"the saxsdog server's command URL (default: {DEFAULT_SERVER_URL})")
    p.add_argument("--feeder", metavar="URL",
                   help=f"the feeder's URL (default: {DEFAULT_FEEDER_URL})")
    p.add_argument("--name", metavar="NAME", help="a name for this server (default: saxsdog)")
    p.add_argument("--network", metavar="FILE", default=None,
                   help="the network file to write (default: $SAXSDOG_NETWORK or ~/.saxsdognetwork)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--append", action="store_true",
                     help="add the server to the servers already in the file")
    how.add_argument("--replace", action="store_true", help="overwrite an existing file")
    how.add_argument("--list", action="store_true", help="print the servers in the file and exit")
    p.add_argument("--non-interactive", action="store_true",
                   help="never ask; use the defaults for what is not given")
    return p


def _ask(prompt: str, default: str, read: Callable[[str], str]) -> str:
    answer = read(f"{prompt} [{default}]: ").strip()
    return answer or default


def main(argv: list[str] | None = None, *, stdin: TextIO | None = None,
         read: Callable[[str], str] | None = None) -> int:
    """Run ``saxsnetconf``; return the exit code.

    ``stdin`` and ``read`` (a prompt function like :func:`input`) may be replaced in tests.
    """
    from saxsdog.protocol.netconf import (DEFAULT_FEEDER_URL, DEFAULT_SERVER_URL,
                                          NetworkConfigError, default_network_path, load_network,
                                          make_entry, write_network)

    parser = build_parser()
    args = parser.parse_args(argv)
    stdin = stdin or sys.stdin
    read = read or input
    path = default_network_path() if args.network is None else Path(args.network).expanduser()

    if args.list:
        try:
            entries = load_network(path)
        except NetworkConfigError as exc:
            print(f"saxsnetconf: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print(f"{path}:")
        for i, e in enumerate(entries):
            print(f"  {i}: {e.get('Name', '')!s:<16} server {e.get('Server', '-')}   "
                  f"feeder {e.get('Feeder', '-')}   secret <hidden, {len(e.get('Secret', ''))} chars>")
        return EXIT_OK

    interactive = not args.non_interactive and stdin.isatty()
    server, feeder, name = args.server, args.feeder, args.name
    try:
        if interactive and (server is None or feeder is None or name is None):
            print("saxsnetconf: new entry of the saxsdog network file", file=sys.stderr)
            name = name if name is not None else _ask("Name", "saxsdog", read)
            server = server if server is not None else _ask("Saxsdog server URL", DEFAULT_SERVER_URL, read)
            feeder = feeder if feeder is not None else _ask("Feeder URL", DEFAULT_FEEDER_URL, read)
        entry = make_entry(server or DEFAULT_SERVER_URL, feeder or DEFAULT_FEEDER_URL,
                           name if name is not None else "saxsdog")
    except NetworkConfigError as exc:
        print(f"saxsnetconf: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (EOFError, KeyboardInterrupt):
        print("\nsaxsnetconf: cancelled, nothing written", file=sys.stderr)
        return EXIT_USAGE

    append = args.append
    if path.exists() and not (args.append or args.replace):
        if not interactive:
            print(f"saxsnetconf: {path} exists; use --append to add a server or --replace to "
                  "overwrite it", file=sys.stderr)
            return EXIT_USAGE
        try:
            choice = read(f"{path} exists: [a]ppend, [r]eplace or [c]ancel? ").strip().lower()
        except (EOFError, KeyboardInterrupt):
            choice = "c"
        if choice.startswith("a"):
            append = True
        elif not choice.startswith("r"):
            print("saxsnetconf: cancelled, nothing written", file=sys.stderr)
            return EXIT_USAGE

    try:
        entries = load_network(path) if append and path.exists() else []
        entries.append(entry)
        written = write_network(entries, path)
    except NetworkConfigError as exc:
        print(f"saxsnetconf: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:
        print(f"saxsnetconf: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    print(f"saxsnetconf: wrote {written} (mode 0600) with {len(entries)} server(s); "
          f"server number {len(entries) - 1} is {entry['Name']!r}: server {entry['Server']}, "
          f"feeder {entry['Feeder']}, new secret of {len(entry['Secret'])} characters.")
    print("saxsnetconf: copy this file to every computer of this saxsdog network "
          "and keep it private (chmod 600).")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
