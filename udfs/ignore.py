"""Which repository files ingest skips: ``.gitignore`` rules plus the ``ingest_exclude`` setting.

Directory names say nothing reliable about what a directory holds (``build/`` is build
output in one repository and a source package in another); the repository's own ignore
files do.  So ingest follows git: the root ``.gitignore``, nested ones (relative to their
directory, deeper files overriding shallower ones), and ``.git/info/exclude``, matched with
``pathspec``'s ``GitIgnoreSpec`` (git's wildmatch rules, negation included).  The setting
``ingest_exclude`` adds gitwildmatch patterns of its own, checked first, so a ``.gitignore``
cannot re-include what the user excluded explicitly.

As in git, an ignored directory is not entered: it is one entry, and nothing inside it can
be re-included.  The decision is made here once per ingest, over one walk of the tree, and
handed to ``sql/ingest_chunk_store.sql`` as data.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pathspec

from udfs.settings import DEFAULT_INGEST_EXCLUDE

logger = logging.getLogger("codeintel.ingest")

#: The ingest_exclude default (udfs/settings.py): tool and dependency directories that hold no
#: code of the repository's own.  Only names no source package plausibly has: ``build``,
#: ``dist``, ``target``, ``vendor``, ``third_party`` and ``venv`` (the standard library's own
#: venv package) are left to the repository's .gitignore.
DEFAULT_EXCLUDE = DEFAULT_INGEST_EXCLUDE

#: DuckDB glob metacharacters: an include glob's directories up to the first one are literal.
_GLOB_CHARACTERS = re.compile(r"[*?\[{]")


class IgnoreSettingError(ValueError):
    """The ``ingest_exclude`` setting is unusable; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class _Rules:
    """One ignore file's (or the setting's) patterns, matched relative to ``base`` (``''`` or ``'dir/'``)."""

    base: str
    spec: pathspec.GitIgnoreSpec
    source: str | None  # the ignore file's uri; None for the ingest_exclude setting

    def decide(self, uri: str) -> tuple[bool, str] | None:
        """``(ignored, status)`` when a pattern here matches ``uri`` (last match wins), else None."""
        result = self.spec.check_file(uri[len(self.base):])
        if result.include is None:
            return None
        pattern = self.spec.patterns[result.index].pattern
        if self.source is None:
            return result.include, f"skipped: ingest_exclude ({pattern})"
        return result.include, f"skipped: .gitignore ({pattern} in {self.source})"


def exclude_rules(value: Any) -> _Rules:
    """The ``ingest_exclude`` setting as rules; anything but a list of valid patterns is refused."""
    example = '["' + '", "'.join(DEFAULT_EXCLUDE[:3]) + '"]'
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise IgnoreSettingError(
            f"ingest: setting ingest_exclude must be a list of gitwildmatch patterns (strings), got {value!r}; "
            f"set it in the catalog's settings.json or with --set 'ingest_exclude={example}' ([] excludes nothing)"
        )
    try:
        spec = pathspec.GitIgnoreSpec.from_lines(value)
    except (ValueError, TypeError) as error:
        raise IgnoreSettingError(
            f"ingest: setting ingest_exclude holds a pattern that is not gitwildmatch syntax ({error}); "
            f"fix it in the catalog's settings.json or --set, e.g. {example}"
        ) from error
    return _Rules("", spec, None)


def _read_rules(path: Path, base: str, source: str) -> _Rules | None:
    """An ignore file's rules; an unreadable file or bad pattern is skipped with a warning, as git does."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        logger.warning("ingest: cannot read %s (%s); its patterns are not applied", source, error)
        return None
    try:
        return _Rules(base, pathspec.GitIgnoreSpec.from_lines(lines), source)
    except (ValueError, TypeError):
        # One bad line must not void the rest of the file: keep every line that compiles.
        good = []
        for line in lines:
            try:
                pathspec.GitIgnoreSpec.from_lines([line])
            except (ValueError, TypeError) as error:
                logger.warning("ingest: %s: pattern %r is not valid (%s); ignoring that line", source, line, error)
            else:
                good.append(line)
        return _Rules(base, pathspec.GitIgnoreSpec.from_lines(good), source)


def include_prefixes(include: Iterable[str]) -> list[str]:
    """The literal leading directories of each include glob (``'src/'`` for ``'src/**/*.py'``)."""
    prefixes = []
    for pattern in include:
        parts = pattern.split("/")[:-1]  # the last part names files, never a directory to walk
        literal = []
        for part in parts:
            if _GLOB_CHARACTERS.search(part):
                break
            literal.append(part + "/")
        prefixes.append("".join(literal))
    return prefixes


@dataclasses.dataclass(frozen=True)
class IgnoreDecision:
    """What one walk found: ignored entries (uri -> status; a directory's uri ends with '/')."""

    ignored: dict[str, str]
    files_seen: int

    def as_parameters(self) -> dict[str, list[str]]:
        """Two aligned lists for the SQL pipeline (DuckDB variables bind lists, not dicts)."""
        uris = sorted(self.ignored)
        return {"ignored_uris": uris, "ignored_statuses": [self.ignored[uri] for uri in uris]}


def decide(root: Path, exclude: Any, include: Sequence[str] = ("**",)) -> IgnoreDecision:
    """Walk ``root`` once (not entering ignored directories) and return every ignored entry.

    Only directories on the way to, or under, an include glob's literal prefix are walked, so
    ``--include 'src/**'`` does not walk the rest of a monorepo.  Symlinked directories are not
    entered, as DuckDB's glob does not enter them either.
    """
    setting = exclude_rules(exclude)
    prefixes = include_prefixes(include)
    # Per directory uri, its own .gitignore rules; info/exclude ranks below the root .gitignore.
    rules_by_base: dict[str, list[_Rules]] = {}
    info_exclude = root / ".git" / "info" / "exclude"
    if info_exclude.is_file():
        rules = _read_rules(info_exclude, "", ".git/info/exclude")
        if rules is not None:
            rules_by_base[""] = [rules]
    ignored: dict[str, str] = {}
    files_seen = 0

    def status_of(uri: str, applicable: list[_Rules]) -> str | None:
        found = setting.decide(uri)
        if found is not None and found[0]:
            return found[1]
        for rules in applicable:  # deepest ignore file first: it overrides the ones above it
            found = rules.decide(uri)
            if found is not None:
                return found[1] if found[0] else None
        return None

    for directory, dirnames, filenames in os.walk(root, topdown=True, followlinks=False):
        relative = Path(directory).relative_to(root).as_posix()
        base = "" if relative == "." else relative + "/"
        if ".gitignore" in filenames:
            rules = _read_rules(Path(directory) / ".gitignore", base, base + ".gitignore")
            if rules is not None:
                # Appended last: within the root, the .gitignore outranks .git/info/exclude.
                rules_by_base.setdefault(base, []).append(rules)
        applicable = []
        ancestors = [""] + [base[: i + 1] for i, character in enumerate(base) if character == "/"]
        for ancestor in reversed(ancestors):
            applicable.extend(reversed(rules_by_base.get(ancestor, [])))
        kept = []
        for name in sorted(dirnames):
            uri = base + name + "/"
            if not any(prefix.startswith(uri) or uri.startswith(prefix) for prefix in prefixes):
                continue
            status = status_of(uri, applicable)
            if status is None:
                kept.append(name)
            else:
                ignored[uri] = status
        dirnames[:] = kept
        for name in filenames:
            files_seen += 1
            uri = base + name
            status = status_of(uri, applicable)
            if status is not None:
                ignored[uri] = status
    return IgnoreDecision(ignored, files_seen)
