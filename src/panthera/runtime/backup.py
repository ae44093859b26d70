"""Logical backups of every service's database, and restoring them.

PostgreSQL: ``pg_dump --format=custom`` per database, restored with ``pg_restore
--clean --single-transaction`` (a failed restore leaves the database as it was).
SQLite (the embedded shape): SQLite's online backup API, which copies a consistent
snapshot while the platform keeps running. A ``manifest.json`` records what was
taken, when, and each file's SHA-256, which restoring checks first.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sqlite3
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from panthera.kernel.settings import Settings
from panthera.runtime.registry import SERVICE_NAMES

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


class BackupError(Exception):
    """A backup or restore could not be done; the message says why."""


@dataclass(frozen=True)
class Taken:
    service: str
    file: str
    kind: str
    sha256: str
    bytes: int


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def libpq_url(sqlalchemy_url: str) -> str:
    """The ``postgresql://`` URL pg_dump and pg_restore take, from the platform's URL."""
    url = make_url(sqlalchemy_url)
    query = dict(url.query)
    # asyncpg's ``ssl=`` is libpq's ``sslmode=``.
    if "ssl" in query:
        query["sslmode"] = query.pop("ssl")
    return url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)


def _kind(url: str) -> str:
    backend = make_url(url).get_backend_name()
    if backend not in ("postgresql", "sqlite"):
        raise BackupError(f"cannot back up a {backend} database")
    return backend


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is required (Debian: apt-get install -y postgresql-client)")
    return found


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603
    if done.returncode != 0:
        raise BackupError(f"{what} failed: {done.stderr.strip() or done.stdout.strip()}")


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database:
        raise BackupError("an in-memory SQLite database cannot be backed up")
    return Path(database)


def backup(
    settings: Settings, target: Path, services: Sequence[str] = SERVICE_NAMES
) -> list[Taken]:
    """Dump every service's database into ``target`` (a new or empty directory)."""
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} is not empty; back up into a new directory")
    target.mkdir(parents=True, exist_ok=True)
    taken: list[Taken] = []
    for service in services:
        url = settings.database_url_for(service)
        kind = _kind(url)
        if kind == "postgresql":
            file = target / f"{service}.dump"
            _run(
                [
                    _tool("pg_dump"),
                    "--format=custom",
                    "--no-owner",
                    "--no-privileges",
                    f"--file={file}",
                    f"--dbname={libpq_url(url)}",
                ],
                f"pg_dump of {service}",
            )
        else:
            file = target / f"{service}.sqlite3"
            source_path = _sqlite_path(url)
            if not source_path.exists():
                raise BackupError(f"{service}'s database {source_path} does not exist")
            source = sqlite3.connect(f"file:{source_path}?mode=ro", uri=True)
            copy = sqlite3.connect(file)
            try:
                source.backup(copy)
            finally:
                copy.close()
                source.close()
        taken.append(Taken(service, file.name, kind, _sha256(file), file.stat().st_size))
    manifest = {
        "format": FORMAT_VERSION,
        "created_at": datetime.now(UTC).isoformat(),
        "services": [taken_.__dict__ for taken_ in taken],
    }
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return taken


def read_manifest(source: Path) -> dict[str, Any]:
    """The backup's manifest, after checking that every file is whole."""
    path = source / MANIFEST
    if not path.exists():
        raise BackupError(f"{source} holds no {MANIFEST}: not a Panthera backup")
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise BackupError(f"unknown backup format {manifest.get('format')!r}")
    for entry in manifest["services"]:
        file = source / entry["file"]
        if not file.exists() or _sha256(file) != entry["sha256"]:
            raise BackupError(f"{file} is missing or damaged (its SHA-256 does not match)")
    return manifest


def restore(settings: Settings, source: Path, services: Sequence[str] | None = None) -> list[str]:
    """Put every backed-up service's database back as it was; the services restored.

    The databases must exist (empty, or holding data that is to be replaced); the
    services should be stopped, so nothing writes while their data is replaced.
    """
    manifest = read_manifest(source)
    entries = {entry["service"]: entry for entry in manifest["services"]}
    wanted = list(services) if services is not None else list(entries)
    missing = [name for name in wanted if name not in entries]
    if missing:
        raise BackupError(f"the backup holds no database of {', '.join(missing)}")
    for service in wanted:
        entry = entries[service]
        url = settings.database_url_for(service)
        kind = _kind(url)
        if kind != entry["kind"]:
            raise BackupError(
                f"{service}: the backup is of a {entry['kind']} database, the target is {kind}"
            )
        file = source / entry["file"]
        if kind == "postgresql":
            _run(
                [
                    _tool("pg_restore"),
                    "--clean",
                    "--if-exists",
                    "--no-owner",
                    "--no-privileges",
                    "--single-transaction",
                    "--exit-on-error",
                    f"--dbname={libpq_url(url)}",
                    str(file),
                ],
                f"pg_restore of {service}",
            )
        else:
            target_path = _sqlite_path(url)
            target_path.parent.mkdir(parents=True, exist_ok=True)
            backup_copy = sqlite3.connect(f"file:{file}?mode=ro", uri=True)
            live = sqlite3.connect(target_path)
            try:
                backup_copy.backup(live)
            finally:
                live.close()
                backup_copy.close()
    return wanted
