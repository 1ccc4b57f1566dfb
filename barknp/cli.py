"""The ``barknp`` command line.

    barknp convert suno/bark-small ./bark-small     # hub repo id or local directory -> barknp layout

Errors print one line, ``barknp: error: ...``, on stderr and exit non-zero; never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from .errors import BarkError


def _cmd_convert(args) -> int:
    from .convert import convert

    convert(args.src, args.out, offline=True if args.offline else None, progress=not args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="barknp", description="Suno's Bark text-to-audio in NumPy.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    p = sub.add_parser(
        "convert",
        help="convert a Bark checkpoint into barknp's layout",
        description="Convert a transformers-layout Bark checkpoint (a Hugging Face repo id such as "
        "suno/bark-small, or a local directory) into barknp's layout at OUT.",
    )
    p.add_argument("src", metavar="SRC", help="hub repo id (suno/bark-small, suno/bark) or local directory")
    p.add_argument("out", metavar="OUT", help="directory to write (replaced if it is a barknp model)")
    p.add_argument("--offline", action="store_true", help="use only the Hugging Face cache (as HF_HUB_OFFLINE=1)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    p.set_defaults(func=_cmd_convert)
    return ap


def main(argv=None) -> int:
    """Run the command line; returns the exit code (0 on success)."""
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 with a usage line on bad arguments
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("barknp: error: interrupted", file=sys.stderr)
        return 130
    except (BarkError, OSError) as e:
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"barknp: error: {msg}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
