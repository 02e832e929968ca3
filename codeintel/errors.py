"""Errors the command line reports as one line, and how DuckDB's messages are shortened to one."""

from __future__ import annotations

import re

import duckdb

from udfs.registry import UdfError
from udfs.settings import SettingError
from udfs.versioned_dir import VersionError


class CatalogError(RuntimeError):
    """The catalog, a script or a view file is unusable; the message says what to do."""


#: Errors whose message already says what to do: the command line prints them without a traceback.
EXPLAINED_ERRORS = (CatalogError, UdfError, SettingError, VersionError, duckdb.Error)


#: Where DuckDB starts the Python stack of an exception raised inside a UDF.
UDF_TRACEBACK_MARKER = re.compile(r"\n\s*At:\n")


def describe_error(error: BaseException) -> str:
    """DuckDB's message on one line, without the UDF wrapper noise and stack, so users read the cause first.

    DuckDB appends the Python stack of a failing UDF ("At:" and a line per frame) to the
    message; that stack is for debugging (``--debug`` logs it), not for users.
    """
    text = str(error)
    for marker in ("UdfError: ", "Invalid Input Error: "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return one_line(text)


def one_line(text: str) -> str:
    """``text`` without a UDF's Python stack, its lines joined: one log line per failure."""
    text = UDF_TRACEBACK_MARKER.split(text, maxsplit=1)[0]
    return " ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def error_line(error: BaseException) -> str:
    """One line for the log: our errors say what to do; anything else is named by its type."""
    if isinstance(error, duckdb.Error):
        return describe_error(error)
    if isinstance(error, EXPLAINED_ERRORS):
        return one_line(str(error))
    text = one_line(str(error))
    return f"{type(error).__name__}: {text}" if text else type(error).__name__

