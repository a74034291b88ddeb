"""`omniserve up | gateway | worker | bench` — each subcommand lives in its tier's package.

A tier module provides ``add_arguments(parser)`` and ``run(args) -> int``; this file only wires
them, so the gateway never imports the engine. Every process started here (and every child it
starts) creates its files 0600 and folders 0700: the data folder holds tokens, voices and
recordings.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

PRIVATE_UMASK = 0o077

COMMANDS = {
    "up": ("omniserve.launcher", "start N local workers and the gateway, print the URL, keep them running"),
    "gateway": ("omniserve.gateway.main", "run the gateway (HTTPS :8006, queue, proxy, pages)"),
    "worker": ("omniserve.worker.main", "run one worker (engine behind HTTP/WebSocket)"),
}


def main(argv: list[str] | None = None) -> int:
    os.umask(PRIVATE_UMASK)
    parser = argparse.ArgumentParser(prog="omniserve", description="Self-hosted real-time omni-modal assistant server")
    parser.add_argument("--version", action="version", version=f"omniserve {__import__('omniserve').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    argv = sys.argv[1:] if argv is None else argv
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--config", help="YAML settings file (also OMNISERVE_CONFIG)")
        # import a tier module only when it is the one asked for (or for --help listings)
        if name == wanted:
            importlib.import_module(module).add_arguments(p)
    args = parser.parse_args(argv)
    args.argv = argv  # the command line as given: `gateway --processes N` starts its members with it
    return importlib.import_module(COMMANDS[args.command][0]).run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
