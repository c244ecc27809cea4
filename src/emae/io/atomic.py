"""Atomic writes: a result appears whole under its final name, or not at all.

Everything emae writes (TIFFs, zarr stores, CSVs, run folders) is first written to a hidden
temporary sibling in the same folder, then renamed into place with :func:`os.replace`, which is
atomic on POSIX and Windows file systems. An interrupted write leaves the user's existing data
untouched and at most a ``.<name>.tmp-<host>-<pid>-*`` sibling behind; the next write of the
same name removes such leftovers of processes of this host that are no longer running (a
killed run), and nothing else.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors import SafetensorError

from emae.errors import EmaeError


def check_writable(
    path: str | Path,
    *,
    overwrite: bool = False,
    replaceable: Callable[[Path], bool] | None = None,
    kind: str = "emae output",
    probe: bool = True,
) -> Path:
    """Refuse to replace existing data unless asked to, and never replace foreign data.

    Parameters
    ----------
    path
        Destination file or folder.
    overwrite
        Allow replacing an existing destination.
    replaceable
        ``replaceable(path) -> bool`` tells whether an existing, non-empty destination is of the
        kind this writer produces (a zarr store, an emae model folder, ...). When given, anything
        else is refused even with ``overwrite``, so a mistyped path never deletes user data.
    kind
        What ``replaceable`` accepts, for the error message.
    probe
        Also create and remove a file in the folder, so that a read-only mount is refused
        before any work starts. The commands check their outputs this way once; the atomic
        writers below skip it (their own temporary file is the probe), so the many small
        writes of a large run (one record per chunk) cost no extra file operations.

    Returns
    -------
    Path
        The destination as a :class:`~pathlib.Path`.
    """
    path = Path(path)
    empty_dir = path.is_dir() and not any(path.iterdir())
    if path.exists() and not empty_dir:
        if not overwrite:
            raise EmaeError(f"{path} already exists; pass --overwrite to replace it")
        if replaceable is not None and not replaceable(path):
            raise EmaeError(f"{path} exists and is not {kind}; refusing to replace it")
    if not path.parent.exists():
        raise EmaeError(f"cannot write {path}: folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise EmaeError(f"cannot write {path}: folder {path.parent} is not writable")
    if probe:
        _probe(path)
    return path


def _probe(path: Path) -> None:
    """Create and remove a file beside ``path``: catches what ``os.access`` does not (read-only
    mounts, which even root cannot write)."""
    probe = _temporary_sibling(path)
    try:
        probe.touch(exist_ok=False)
        probe.unlink()
    except OSError as exc:
        raise EmaeError(
            f"cannot write {path}: folder {path.parent} is not writable ({exc.strerror})"
        ) from None


def _host() -> str:
    return "".join(c if c.isalnum() else "_" for c in socket.gethostname())[:32] or "host"


def _temporary_sibling(path: Path) -> Path:
    """A fresh hidden name beside ``path``; created by the writer with the usual permissions.

    The name holds the host and process id, so that :func:`_remove_stale` can tell the
    leftovers of a killed writer from the work of a running one.
    """
    return path.with_name(f".{path.name}.tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:12]}")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove_stale(path: Path) -> None:
    """Remove temporaries of ``path`` left by killed processes of this host.

    Only names of the exact form :func:`_temporary_sibling` makes are considered, and only
    those whose process is gone; writers on other hosts and running writers are left alone.
    """
    prefix = f".{path.name}.tmp-{_host()}-"
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        pid, _, rest = entry.name[len(prefix) :].partition("-")
        if pid.isdigit() and len(rest) == 12 and not _running(int(pid)):
            _remove(Path(entry.path))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_file(
    path: str | Path,
    *,
    overwrite: bool = False,
    replaceable: Callable[[Path], bool] | None = None,
    kind: str = "emae output",
    sweep: bool = True,
) -> Iterator[Path]:
    """Yield a temporary file path that is renamed to ``path`` when the block succeeds.

    ``overwrite``, ``replaceable`` and ``kind`` are those of :func:`check_writable`.
    ``sweep`` first removes the temporaries of killed writers of ``path`` (:func:`_remove_stale`),
    which lists the folder: pass False for the many small files of one folder (the done
    markers of a large detect run), where a listing per write would cost time quadratic in
    the number of files.

    Examples
    --------
    >>> with atomic_file("scores.csv") as tmp:  # doctest: +SKIP
    ...     tmp.write_text("image,score\\n")
    """
    path = check_writable(
        path, overwrite=overwrite, replaceable=replaceable, kind=kind, probe=False
    )
    if sweep:
        _remove_stale(path)
    tmp = _temporary_sibling(path)
    try:
        yield tmp
        if path.is_dir():
            _remove(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_dir(
    path: str | Path,
    *,
    overwrite: bool = False,
    replaceable: Callable[[Path], bool] | None = None,
    kind: str = "emae output",
) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``path`` when the block succeeds.

    An existing destination is removed only after the new content is complete; ``overwrite``,
    ``replaceable`` and ``kind`` are those of :func:`check_writable`.
    """
    path = check_writable(
        path, overwrite=overwrite, replaceable=replaceable, kind=kind, probe=False
    )
    _remove_stale(path)
    tmp = _temporary_sibling(path)
    tmp.mkdir()
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            _remove(tmp)


def _write_reason(exc: BaseException) -> str | None:
    """Why a write failed, in words, or None when ``exc`` is no failed write.

    torch's zip writer reports a full disk as a ``RuntimeError`` without errno
    (``[enforce fail at inline_container.cc:...] . unexpected pos ...``), safetensors as a
    ``SafetensorError`` quoting the OS error.
    """
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return "no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return exc.strerror or str(exc)
    text = str(exc)
    if isinstance(exc, SafetensorError) and "I/O error" in text:
        return "no space left on device" if "os error 28" in text else text
    if isinstance(exc, RuntimeError) and re.search(
        r"inline_container|PytorchStreamWriter|file write failed", text
    ):
        return f"the write failed, most likely no space left on device ({text.splitlines()[0]})"
    return None


@contextmanager
def write_errors(path: Path) -> Iterator[None]:
    """Turn a failed write of ``path`` (full disk, quota, lost mount) into one ``EmaeError`` line.

    Wrap an atomic writer (:mod:`emae.io.atomic`) in it: the writer has removed its temporary
    file when the error arrives here, so nothing partial is left under the final name.
    """
    try:
        yield
    except (OSError, SafetensorError, RuntimeError) as exc:
        reason = _write_reason(exc)
        if reason is None:
            raise
        raise EmaeError(f"cannot write {path}: {reason}") from None
