"""`dimalign` (the console script) and `python -m dimalign`: the CLI behind a guard that
imports nothing heavy itself, so that what happens before `cli.main` has its own error
handling in place (importing torch takes seconds) still ends in one line:

- Ctrl-C while the command is starting: "dimalign: interrupted", exit 130.
- The reader of stdout left (`dimalign runs | head -1`): no traceback, exit 141 (128 + SIGPIPE,
  what a shell reports for a program the pipe stopped).
"""

import os
import sys

INTERRUPTED, BROKEN_PIPE = 130, 141


def entry() -> int | str | None:
    try:
        try:
            from dimalign.cli import main

            code = main()
        except SystemExit as exit_:  # argparse's --help and usage errors end this way
            code = exit_.code
        sys.stdout.flush()  # a closed pipe shows here, inside the guard
        return code
    except KeyboardInterrupt:
        print("\ndimalign: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # stdout's reader is gone: point stdout at /dev/null, or the interpreter's own flush
        # at exit fails on the pipe again and prints a warning
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return BROKEN_PIPE


if __name__ == "__main__":  # `python -m dimalign`; importing this module runs nothing
    raise SystemExit(entry())
