"""One versioned directory: stage a version, publish it by an atomic ``CURRENT`` flip, roll back, gc.

The chunk store (``store/``) and the FAISS index (``index/``) are both a
:class:`VersionedDir`::

    <root>/CURRENT -> versions/<version>      a relative symlink, replaced atomically
    <root>/versions/<version>/                complete versions (they hold ``marker``)
    <root>/versions/.tmp-<uuid>/              a version being written, with an owner file

A writer fills a staging directory and :meth:`Staging.commit` renames it into
``versions/`` (fsync'd), then :meth:`VersionedDir.publish` flips ``CURRENT`` (fsync'd).  A
reader resolves ``CURRENT`` once and keeps its version; a failure or a kill at any point
leaves ``CURRENT`` on the last good version.  Version names start with a UTC timestamp, so
they sort oldest first.

Staging directories say who owns them.  A process killed with SIGKILL runs no cleanup, so
its directory (full size: an index, a store) would stay.  Age cannot tell an abandoned
directory from a long build that is still writing, so each staging directory holds an owner
file, written when the directory is made::

    {"pid": 1234, "host": "machine", "boot_id": "...", "created_at": 1767...}

and :meth:`VersionedDir.remove_abandoned` (run by every new stage and by ``gc``) decides per
directory:

* owner on this host and this boot, pid alive (``os.kill(pid, 0)`` succeeds or is refused
  with PermissionError): kept.  A pid reused by another process also counts as alive: a
  directory kept too long costs disk, one removed under a live build corrupts it.
* owner on this host and this boot, pid gone (ProcessLookupError): removed.
* owner on this host, another boot: removed (no process survives a reboot).
* owner on another host (a catalog on a shared file system): its pids mean nothing here,
  so kept unless nothing in it changed for :data:`FOREIGN_STALE_SECONDS`.
* no or unreadable owner file (a directory of an older version of this code, or one made
  a moment ago whose owner file is not written yet): the same age rule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from udfs.registry import UdfError

logger = logging.getLogger("codeintel.versions")

PREFIX = ".tmp-"
OWNER_FILE = ".owner.json"
#: A staging directory whose owner cannot be checked here (another host, or no owner file) is
#: removed only when nothing in it changed for this long: a day, far beyond the seconds between
#: making a directory and writing its owner file, and beyond any pause of a build still writing.
FOREIGN_STALE_SECONDS = 24 * 3600
_BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")


def _boot_id() -> str | None:
    try:
        return _BOOT_ID_FILE.read_text().strip()
    except OSError:  # not Linux: the host name and pid alone decide
        return None


def owner_record() -> dict[str, Any]:
    """Who this process is, as written into every staging directory it makes."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": _boot_id(), "created_at": time.time()}


def create(parent: Path) -> Path:
    """Make ``parent/.tmp-<uuid>`` owned by this process; the caller renames it away or removes it."""
    parent.mkdir(parents=True, exist_ok=True)
    staging = parent / f"{PREFIX}{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        (staging / OWNER_FILE).write_text(json.dumps(owner_record()))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return staging


def _read_owner(staging: Path) -> dict[str, Any] | None:
    try:
        owner = json.loads((staging / OWNER_FILE).read_text())
    except (OSError, ValueError):
        return None
    pid = owner.get("pid") if isinstance(owner, dict) else None
    # pid 0 or below would signal a process group: such a record is unreadable, not a live owner.
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not isinstance(owner.get("host"), str):
        return None
    return owner


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _last_change(staging: Path) -> float:
    """The newest modification time of the directory and its direct entries (a build writing keeps it fresh)."""
    newest = staging.stat().st_mtime
    for entry in staging.iterdir():
        try:
            newest = max(newest, entry.lstat().st_mtime)
        except FileNotFoundError:
            continue
    return newest


def abandonment(staging: Path) -> str | None:
    """Why ``staging`` is abandoned (a sentence for the log), or None when it may still be in use."""
    owner = _read_owner(staging)
    if owner is not None and owner["host"] == socket.gethostname():
        recorded_boot, boot = owner.get("boot_id"), _boot_id()
        if recorded_boot and boot and recorded_boot != boot:
            return f"its owner (pid {owner['pid']} on {owner['host']}) ran before this host rebooted"
        if not _pid_alive(owner["pid"]):
            return f"its owner (pid {owner['pid']} on {owner['host']}) is no longer running"
        return None
    idle = time.time() - _last_change(staging)
    if idle <= FOREIGN_STALE_SECONDS:
        return None
    who = f"its owner is on host {owner['host']}" if owner is not None else "it has no owner file"
    return f"{who} and nothing in it changed for {idle / 3600:.0f} h"


def remove_abandoned(parent: Path) -> list[str]:
    """Remove every ``.tmp-*`` directory under ``parent`` whose owner is gone; return their names."""
    if not parent.is_dir():
        return []
    removed = []
    for entry in sorted(parent.iterdir()):
        if not entry.name.startswith(PREFIX) or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            reason = abandonment(entry)
        except FileNotFoundError:  # its owner renamed or removed it meanwhile
            continue
        if reason is None:
            logger.debug("staging directory %s kept: its owner may still be writing it", entry)
            continue
        shutil.rmtree(entry, ignore_errors=True)
        logger.info("removed abandoned staging directory %s: %s", entry, reason)
        removed.append(entry.name)
    return removed


# --------------------------------------------------------------------------- the versioned directory


class VersionError(UdfError):
    """A version operation was refused; the message names the operation, the version and the fix.

    A :class:`UdfError`, so the CLI and SQL report it as one clean error like any refused input.
    """


def fsync(path: Path) -> None:
    """Flush a file or directory entry to disk so a published version survives a power cut."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def fsync_tree(directory: Path) -> None:
    """fsync every file in ``directory`` (one level), then the directory itself."""
    for entry in directory.iterdir():
        if entry.is_file():
            fsync(entry)
    fsync(directory)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON whole or not at all (temp file, fsync, ``os.replace``): readers see old or new."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with temporary.open("w") as handle:
            handle.write(json.dumps(data, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def new_version_name() -> str:
    """A UTC timestamp (sorts oldest first) and a random suffix (two writers in one microsecond)."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{uuid.uuid4().hex[:6]}"


@dataclasses.dataclass
class Staging:
    """A version being written: fill :attr:`path`, then :meth:`commit` it under a new version name."""

    owner: VersionedDir
    path: Path
    version: str | None = None

    def commit(self, version: str | None = None) -> str:
        """Rename the complete directory to ``versions/<version>`` (fsync'd); CURRENT is not touched."""
        if not (self.path / self.owner.marker).is_file():
            raise VersionError(f"{self.owner.what}: a version must hold {self.owner.marker} before it is committed")
        version = version or new_version_name()
        (self.path / OWNER_FILE).unlink(missing_ok=True)  # a published version holds its data only
        fsync_tree(self.path)
        self.path.rename(self.owner.versions / version)
        fsync(self.owner.versions)
        self.version = version
        return version


@dataclasses.dataclass(frozen=True)
class VersionedDir:
    """``root`` with ``versions/`` and a ``CURRENT`` symlink; ``marker`` is the file a complete version holds.

    ``what`` names the directory in messages ("index", "store").
    """

    root: Path
    marker: str
    what: str

    @property
    def versions(self) -> Path:
        return self.root / "versions"

    @property
    def current_link(self) -> Path:
        return self.root / "CURRENT"

    @functools.cached_property
    def _current_link_text(self) -> str:
        # Every search call reads CURRENT: pathlib's joins cost more than the readlink.
        return os.fspath(self.current_link)

    def path(self, version: str) -> Path:
        return self.versions / version

    def current(self) -> str | None:
        """The published version (one readlink: cheap enough per UDF call), or None."""
        try:
            return os.path.basename(os.readlink(self._current_link_text))
        except FileNotFoundError:
            return None
        except OSError as error:
            raise VersionError(
                f"{self.what}: {self.current_link} must be a symlink to versions/<version> ({error}); "
                f"remove it and publish a version"
            ) from error

    def current_path(self) -> Path | None:
        version = self.current()
        return None if version is None else self.path(version)

    def complete_versions(self) -> list[str]:
        """Version names holding the marker, oldest first."""
        if not self.versions.is_dir():
            return []
        return sorted(
            entry.name for entry in self.versions.iterdir()
            if not entry.name.startswith(".") and (entry / self.marker).is_file()
        )

    @contextlib.contextmanager
    def stage(self) -> Iterator[Staging]:
        """A staging directory owned by this process, removed on exit unless committed.

        It starts by removing the staging directories of earlier killed writers.  A process
        killed inside this block runs no cleanup; its owner file lets the next writer or
        :meth:`gc` remove what it left.
        """
        self.remove_abandoned()
        staging = Staging(self, create(self.versions))
        try:
            yield staging
        finally:
            if staging.version is None:
                shutil.rmtree(staging.path, ignore_errors=True)

    def publish(self, version: str) -> dict[str, str | None]:
        """Point CURRENT at a complete version; return ``{"current", "previous"}``.

        Publishing the version CURRENT already names changes nothing, so a script that
        repeats ``rollback --to V`` after a failure cannot move CURRENT twice.
        """
        if version not in self.complete_versions():
            available = ", ".join(self.complete_versions()) or "none"
            raise VersionError(
                f"publish: {version!r} is not a complete {self.what} version in {self.versions}; available: {available}"
            )
        previous = self.current()
        if previous == version:
            logger.info("%s version %s is already published; CURRENT unchanged", self.what, version)
            return {"current": version, "previous": previous}
        temporary = self.root / f".CURRENT-{uuid.uuid4().hex}"
        os.symlink(f"versions/{version}", temporary)
        try:
            os.replace(temporary, self.current_link)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        fsync(self.root)
        logger.info("published %s version %s (was %s)", self.what, version, previous)
        return {"current": version, "previous": previous}

    def rollback(self, to: str | None = None) -> dict[str, str | None]:
        """Publish ``to``, or by default the newest complete version older than CURRENT."""
        if to is not None:
            return self.publish(to)
        current = self.current()
        if current is None:
            raise VersionError(f"rollback: no {self.what} version is published in {self.root}")
        older = [version for version in self.complete_versions() if version < current]
        if not older:
            raise VersionError(
                f"rollback: no {self.what} version older than {current} in {self.versions}; "
                "pass --to <version> or rebuild"
            )
        return self.publish(older[-1])

    def gc(self, keep: int) -> dict[str, Any]:
        """Remove all but the ``keep`` newest versions, never CURRENT, and abandoned staging directories.

        Readers of a removed version keep working on Linux: open and memory-mapped files
        stay alive after unlink.
        """
        if keep < 1:
            raise VersionError(f"gc: keep must be at least 1, got {keep}")
        current = self.current()
        versions = self.complete_versions()
        kept = set(versions[-keep:]) | ({current} if current else set())
        removed = []
        for version in versions:
            if version not in kept:
                shutil.rmtree(self.path(version), ignore_errors=True)
                removed.append(version)
        removed += self.remove_abandoned()
        logger.info("%s gc: removed %s, kept %s", self.what, removed or "nothing", sorted(kept))
        return {"current": current, "kept": sorted(kept), "removed": removed}

    def remove_abandoned(self) -> list[str]:
        """Remove the staging directories whose owner process is gone; return their names."""
        return remove_abandoned(self.versions)
