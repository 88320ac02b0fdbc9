"""Text safe to show for file names that are not valid UTF-8.

Linux file names are bytes; Python turns the bytes of a non-UTF-8 name (GBK or latin-1 names, say)
into lone surrogates (surrogateescape), so the str still opens the file. Such a str cannot be
encoded for a console, a UTF-8 file or JSON, and OpenCV's text and path arguments crash the
process on it. Everything shown or stored as text goes through `printable`; file access keeps the
original str.
"""


def printable(text) -> str:
    """`text` (a path or any str) with each undecodable byte of a file name shown as U+FFFD."""
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def escaped(text) -> str:
    """`text` with each undecodable file-name byte written as \\xNN: unique and reversible, for keys that
    name files (two names differing only in such bytes must not share a key)."""
    return str(text).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def is_printable(text) -> bool:
    """True when `text` holds no undecodable file-name bytes (OpenCV may take it as it is)."""
    try:
        str(text).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False
