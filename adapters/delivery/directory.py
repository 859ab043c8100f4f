"""Directory drop: statements written into a local or mounted directory a partner tool watches.

The contract is the SFTP adapter's, on a file system: the partner's tool only ever sees
complete files under their final, deterministic name (``adapters.delivery.naming``). Each
file is written to a temporary name in the same directory, flushed and ``fsync``-ed, then
``os.replace``-d over the final name (atomic on POSIX and on Windows within one volume); the
directory itself is then ``fsync``-ed so the rename survives a power cut.

A redelivery finds its statement's file already there (the name is the statement's own:
its id and its statement key) and leaves it alone, so a tool that reacts to new or
modified files does not import it twice. Only a file of that name with another size,
which no delivery of ours wrote, is replaced.

Classification: a directory that is missing or not writable is retried, since the usual
cause is a network share that is briefly unmounted or remounted read-only, and a full disk
or an I/O error is retried too. A path that exists but is not a directory can only be fixed
by an operator, so it is permanent.

File-system calls block, so they run in a worker thread (``asyncio.to_thread``) and the
event loop keeps serving the other connectors.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
from pathlib import Path

from adapters.delivery.naming import FileToWrite, files_for, temporary_name
from adapters.delivery.port import DeliveryResult, DirectoryEndpoint
from events.schemas import StatementPartnerDelivery


def _describe(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def write_atomically(directory: Path, name: str, content: bytes) -> None:
    """Write ``directory/name`` so that readers see the old file or the new one, whole."""
    tmp = directory / temporary_name(name)
    # O_EXCL: a fresh file of our own; mode 0o666 minus the umask, like any new file, so a
    # partner tool running as another user can read it (mkstemp would make it 0600).
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fsync_directory(directory: Path) -> None:
    """Persist the directory entry of a rename; a no-op where the platform cannot do it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def already_delivered(directory: Path, file: FileToWrite) -> bool:
    """Whether ``file`` is in ``directory`` already, as a delivery of ours left it."""
    try:
        found = os.stat(directory / file.name)
    except OSError:
        return False
    return stat.S_ISREG(found.st_mode) and found.st_size == len(file.content)


def write_files(directory: Path, files: list[FileToWrite]) -> DeliveryResult:
    """Write the files in order and classify any failure; blocking."""
    try:
        mode = os.stat(directory).st_mode
    except FileNotFoundError:
        return DeliveryResult.retry(
            f"drop directory {directory} does not exist (an unmounted share?)"
        )
    except NotADirectoryError:
        return DeliveryResult.permanent(
            f"drop directory {directory}: a parent of it is a file, not a directory"
        )
    except OSError as exc:
        return DeliveryResult.retry(f"drop directory {directory}: {_describe(exc)}")
    if not stat.S_ISDIR(mode):
        return DeliveryResult.permanent(f"drop path {directory} exists but is not a directory")
    if already_delivered(directory, files[-1]):
        return DeliveryResult.delivered(
            f"{files[-1].name} is in {directory} already (a redelivery): left as it is"
        )
    try:
        for file in files:
            write_atomically(directory, file.name, file.content)
        fsync_directory(directory)
    except (IsADirectoryError, NotADirectoryError) as exc:
        return DeliveryResult.permanent(
            f"cannot write {files[-1].name} in {directory}: {_describe(exc)}"
        )
    except PermissionError as exc:
        return DeliveryResult.retry(
            f"drop directory {directory} is not writable ({_describe(exc)}); "
            "a share remounted read-only?"
        )
    except OSError as exc:
        return DeliveryResult.retry(
            f"writing {files[-1].name} in {directory} failed: {_describe(exc)}"
        )
    return DeliveryResult.delivered(f"wrote {files[-1].name} in {directory}")


class DirectoryDeliverer:
    """Delivers by writing into ``endpoint.path``; holds no resources."""

    def __init__(self, endpoint: DirectoryEndpoint) -> None:
        self._endpoint = endpoint

    def __repr__(self) -> str:
        return f"DirectoryDeliverer({str(self._endpoint.path)!r})"

    async def deliver(self, delivery: StatementPartnerDelivery) -> DeliveryResult:
        files = files_for(delivery, sidecar=self._endpoint.metadata_sidecar)
        return await asyncio.to_thread(write_files, self._endpoint.path, files)

    async def close(self) -> None:
        """Nothing to release: every delivery opens and closes its own files."""
