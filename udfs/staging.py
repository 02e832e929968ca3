"""Staging directories (``<parent>/.tmp-<uuid>``) that say who owns them, and the cleanup of abandoned ones.

Index builds (``index/versions``) and chunk store writes (``store/versions``) write a new
version into a staging directory and rename it into place only when complete.  A process
killed with SIGKILL runs no cleanup, so its directory (full size: an index, a store) would
stay.  Age cannot tell an abandoned directory from a long build that is still writing, so
each staging directory holds an owner file, written when the directory is made::

    {"pid": 1234, "host": "machine", "boot_id": "...", "created_at": 1767...}

and :func:`remove_abandoned` (run by the next build, ingest and ``gc``) decides per directory:

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

import json
import logging
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any

logger = logging.getLogger("codeintel.staging")

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


def release(staging: Path) -> None:
    """Drop the owner file just before the rename, so a published version holds only its data."""
    (staging / OWNER_FILE).unlink(missing_ok=True)


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
