"""The ``aekit`` entry point: parse, set up logging and threads, run the command, map errors to exit codes.

Errors are one line on stderr (``aekit: error: ...``) naming the flag, config key or file at
fault, and a non-zero exit code: 2 for a bad command line (argparse's errors, and option or config
values that aekit refuses: :class:`~aekit.errors.ConfigurationError`), 1 for anything else (data,
model files, a diverged run, ...); ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence

from ..errors import AekitError, ConfigurationError
from .errors import UsageError, explain, one_line
from .parser import build_parser

__all__ = ["main"]


def _setup_logging(verbose: int) -> Callable[[], None]:
    """Send aekit's logs and warnings to stderr, one line each; return a function that undoes it."""
    level = logging.WARNING if verbose <= 0 else logging.INFO if verbose == 1 else logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("aekit: %(levelname)s: %(message)s"))
    root = logging.getLogger("aekit")
    saved = (root.handlers[:], root.level, root.propagate, warnings.showwarning)
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False

    def show(message, category, filename, lineno, file=None, line=None):
        # One line per warning, not Python's two-line source dump.
        print(f"aekit: warning: {one_line(message)}", file=sys.stderr)

    warnings.showwarning = show

    def restore() -> None:
        root.handlers[:], level_, root.propagate, warnings.showwarning = saved[0], saved[1], saved[2], saved[3]
        root.setLevel(level_)

    return restore


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (0 ok, 1 error, 2 usage, 130 interrupted).

    Exit code 2 means the command line is wrong: argparse's errors and option or config values
    aekit refuses (:class:`~aekit.errors.ConfigurationError`).  1 is every other error: data,
    model files, a diverged run, the file system.
    """
    parser = build_parser()
    debug = "--debug" in (sys.argv[1:] if argv is None else argv)
    args: argparse.Namespace | None = None
    undo: list[Callable[[], None]] = []  # main() leaves the process as it found it (tests call it)
    try:
        args = parser.parse_args(argv)
        debug = args.debug
        undo.append(_setup_logging(args.verbose))
        threads = args.threads
        if threads is None and args.command == "demo":
            threads = 1  # the demo's tiny model gains nothing from more; on a busy machine they spin
        if threads is not None:
            if threads < 1:
                raise UsageError(f"--threads must be >= 1, got {threads}")
            import torch

            before = torch.get_num_threads()
            torch.set_num_threads(threads)
            undo.append(lambda: torch.set_num_threads(before))
        return int(args.func(args) or 0)
    except UsageError as error:
        print(f"aekit: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aekit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`aekit info m.aekit | head`): no message; silence the final flush too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (AekitError, OSError) as error:
        if debug:
            raise
        if isinstance(error, OSError) and error.filename is not None:
            message = f"{error.strerror or error}: {error.filename!r}"
        else:
            message = explain(error, args)
        print(f"aekit: error: {one_line(message)}", file=sys.stderr)
        return 2 if isinstance(error, ConfigurationError) else 1
    except Exception as error:  # noqa: BLE001 - the CLI never shows a raw traceback
        if debug:
            raise
        print(
            f"aekit: error: unexpected {type(error).__name__}: {one_line(error)} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        for step in reversed(undo):
            step()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
