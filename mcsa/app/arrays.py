""".npy files and .npz archives of plain arrays, read without trusting them.

One reader for every command that takes arrays (``quality --activations``,
``attention --q/--k/--v``). Only what ``np.save``/``np.savez`` write is read:
format versions 1.0 and 2.0, members stored or deflated, dtypes of numbers, bytes
or text. Anything else, whatever part of the file it is in (an encrypted or
otherwise compressed member, a header that is not a Python literal, a shape or
dtype it cannot mean, object arrays, which would need pickle, a member shorter
or longer than its header says, a CRC mismatch), is :class:`UnreadableArray`
naming the file and the member, before any array of the size a header promises
is allocated.
"""

from __future__ import annotations

import math
import os
import stat
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Callable

import numpy as np

NPY_MAGIC = b"\x93NUMPY"
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
KINDS = "biufcSU"
"""dtype kinds read: bool, integers, floats, complex, bytes, text (no objects, records or times)."""
_FORMAT = "not a readable .npz/.npy"
_DEFLATE_RATIO = 1032
"""The most bytes deflate gives back per byte it stores."""
_PARSE_ERRORS = (ValueError, TypeError, KeyError, IndexError, SyntaxError, tokenize.TokenError, RecursionError,
                 OverflowError, EOFError, NotImplementedError, RuntimeError, OSError, MemoryError,
                 zipfile.BadZipFile, zlib.error, struct.error)
"""What numpy's header parser and zipfile raise on crafted input (checked by the fuzz tests)."""
_STREAM_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError)
"""Of those, the ones about the stream (a CRC, a cut deflate stream), not the header's text."""


class UnreadableArray(ValueError):
    """``{file}[, member {name}]: not a readable .npz/.npy ({reason})``."""

    def __init__(self, path: str, member: str | None, reason: str):
        self.path, self.member, self.reason = path, member, reason
        where = path if member is None else f"{path}, member {member}"
        super().__init__(f"{where}: {_FORMAT} ({reason})")


def sniff(path: str) -> str | None:
    """``"npy"``, ``"npz"`` or None (neither) from the file's first bytes.

    Raises
    ------
    OSError
        If the file cannot be read.
    """
    _check_file(path)
    with open(path, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    return "npy" if head == NPY_MAGIC else "npz" if head[:4] in ZIP_MAGICS else None


def _check_file(path: str) -> None:
    """Refuse a pipe, a FIFO or a device (``<(cat q.npy)``, ``/dev/stdin``): an archive is
    read from its end and an array file twice, so both need a file.

    Raises
    ------
    UnreadableArray
    """
    mode = os.stat(path).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode):
        raise UnreadableArray(str(path), None, "a pipe, FIFO or device, which cannot be read twice: save it to a "
                                               "file and give that")


def _header(f, path: str, member: str | None, available: int):
    """Shape, Fortran order, dtype and data size of the array at ``f``, whose stream
    holds ``available`` bytes; the data must fill exactly the rest."""
    try:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"format version {version[0]}.{version[1]}; 1.0 and 2.0 are read")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
        start = f.tell()
    except _STREAM_ERRORS as err:
        raise UnreadableArray(path, member, f"{err or type(err).__name__}") from None
    except _PARSE_ERRORS as err:
        raise UnreadableArray(path, member, f"header: {_plain(err)}") from None
    if dtype.kind not in KINDS or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
        raise UnreadableArray(path, member, f"dtype {dtype.str!r}: object or record arrays are not read")
    limit = np.iinfo(np.intp).max
    if (dtype.itemsize == 0 or any(type(n) is not int or not 0 <= n <= limit for n in shape)
            or math.prod(n for n in shape if n) * dtype.itemsize > limit):
        raise UnreadableArray(path, member, f"dtype {dtype.str!r} of shape {shape} describes no array")
    size = math.prod(shape) * dtype.itemsize
    if size != available - start:
        what = "holds fewer" if size > available - start else "holds more"
        raise UnreadableArray(path, member, f"its header promises {size:,} bytes of shape {shape} but the "
                              f"{'member' if member else 'file'} {what} ({max(available - start, 0):,})")
    return shape, fortran, dtype, size


def _plain(err: BaseException) -> str:
    """numpy's words for a header it cannot parse, when they are words: its messages may
    quote the header's raw bytes, an ``ast`` object's repr, or advise ``allow_pickle``."""
    text = str(err).split("\n")[0]
    if not text or "<ast." in text or "pickle" in text or not text.isprintable() or len(text) > 120:
        return "not the Python dict literal of shape, fortran_order and descr that np.save writes"
    return text


def _data(f, path: str, member: str | None, shape, fortran: bool, dtype, size: int) -> np.ndarray:
    buffer = bytearray(size)
    try:
        got = f.readinto(buffer)
        extra = f.read(1)  # reaches the end: zipfile checks the member's CRC there
    except _PARSE_ERRORS as err:
        raise UnreadableArray(path, member, f"data: {err or type(err).__name__}") from None
    if got != size or extra:
        raise UnreadableArray(path, member, f"data of {got:,} bytes where the header promises {size:,}")
    flat = np.frombuffer(buffer, dtype)
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def read_npy(path: str) -> np.ndarray:
    """The array of an ``.npy`` file.

    Raises
    ------
    UnreadableArray
        If it is not an ``.npy`` of a plain array, or its header and data disagree.
    OSError
        If the file cannot be read.
    """
    path = str(path)
    _check_file(path)
    with open(path, "rb") as f:
        available = os.fstat(f.fileno()).st_size
        if f.read(len(NPY_MAGIC)) != NPY_MAGIC:
            raise UnreadableArray(path, None, "not an array file")
        f.seek(0)
        return _data(f, path, None, *_header(f, path, None, available))


def read_npz(path: str, names, budget: Callable[[int], None] | None = None) -> tuple[dict, list[str]]:
    """The arrays ``names`` (those present) of an ``.npz`` archive, and the names it holds.

    Parameters
    ----------
    path : str
    names : iterable of str
        Array names (members ``{name}.npy``).
    budget : callable, optional
        Called with the bytes the wanted arrays' headers promise, before any is read;
        it raises to refuse them.

    Raises
    ------
    UnreadableArray
        If the file is not a zip archive, a wanted member is encrypted, compressed
        otherwise than deflated, corrupt, or not a plain ``.npy`` array.
    OSError
        If the file cannot be read.
    """
    path = str(path)
    _check_file(path)
    try:
        archive = zipfile.ZipFile(path)
    except _PARSE_ERRORS as err:
        if isinstance(err, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise UnreadableArray(path, None, f"not a zip archive: {err or type(err).__name__}") from None
    with archive:
        held = [n[: -len(".npy")] for n in archive.namelist() if n.endswith(".npy")]
        wanted = [n for n in dict.fromkeys(names) if n in held]
        sizes = [_open(archive, path, f"{n}.npy", lambda f, where, info: _header(f, path, where, info.file_size)[-1])
                 for n in wanted]
        if budget is not None:
            budget(sum(sizes))
        found = {n: _open(archive, path, f"{n}.npy", lambda f, where, info: _data(
            f, path, where, *_header(f, path, where, info.file_size))) for n in wanted}
    return found, held


def _open(archive: zipfile.ZipFile, path: str, name: str, read):
    """``read(stream, name, info)`` on member ``name``, its errors named as the member's."""
    info = archive.getinfo(name)
    if info.flag_bits & 0x1:
        raise UnreadableArray(path, name, "encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise UnreadableArray(path, name, f"compression method {info.compress_type}; stored and deflated are read")
    most = info.compress_size * (1 if info.compress_type == zipfile.ZIP_STORED else _DEFLATE_RATIO) + 64
    if info.file_size > most:  # before a buffer of that size is allocated for it
        raise UnreadableArray(path, name, f"declares {info.file_size:,} bytes from {info.compress_size:,} stored, "
                              "more than its compression can give")
    try:
        with archive.open(info) as f:
            return read(f, name, info)
    except UnreadableArray:
        raise
    except _PARSE_ERRORS as err:
        raise UnreadableArray(path, name, f"{err or type(err).__name__}") from None
