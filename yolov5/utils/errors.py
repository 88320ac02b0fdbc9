"""The error type for mistakes a user can fix (bad file, bad option, missing device).

Command-line front ends catch `UserError` and print its message as one line, then exit
with code 2, so a user never sees a bare traceback for their own mistake.
"""


class UserError(Exception):
    """A problem with the user's input: the message says what, where, and what to do."""


def exit_on_user_error(main):
    """Decorator for CLI entry points: print a UserError as one line and exit 2."""
    import functools
    import sys

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as e:
            from utils.printable import printable
            print(printable(f"ERROR: {e}"), file=sys.stderr)
            raise SystemExit(2)

    return wrapper
