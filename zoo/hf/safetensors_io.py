"""Bounded-memory safetensors I/O: read one tensor at a time, write a file piece by piece.

``safetensors.torch.load_file`` returns every tensor at once, and ``save_file`` serializes the whole state dict in
memory before writing. For a 6 GB checkpoint both hold a full copy. Here a reader parses the header and maps one
tensor's bytes when asked, in a mapping of its own that goes away with the tensor (one mapping of the whole file
would keep every page read so far in the process's RSS until the file is closed), and a writer lays out the header
first, then takes each tensor (or a run of its rows) at its offset, in any order. The format is the public one:
8-byte little-endian header length, JSON header, raw data.

Whole small files (a gene's bytes, importance scores, a legacy whole-checkpoint read) go through the reference
implementation, the ``safetensors`` package: :func:`load_file`, :func:`load` and :func:`save` are the one place zoo
calls it.
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..dtypes import DtypeTable

if TYPE_CHECKING:
    import torch

DTYPES = DtypeTable({
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8", "BOOL": "bool",
})
MAX_HEADER = 100 * 2**20  # the format's own limit; a larger length means a damaged or foreign file


def _item_size(dtype: torch.dtype) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


class SafetensorsReader(Mapping[str, "torch.Tensor"]):
    """A read-only mapping over one or more safetensors files; each lookup reads that tensor from disk."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]]):
        self._where: dict[str, tuple[Path, str, list[int], int, int]] = {}
        for path in map(Path, paths):
            with open(path, "rb") as fh:
                raw = fh.read(8)
                if len(raw) != 8:
                    raise ValueError(f"{path} is too short to be safetensors")
                (size,) = struct.unpack("<Q", raw)
                if size > MAX_HEADER:
                    raise ValueError(f"{path} has a {size}-byte header: not a safetensors file")
                header = json.loads(fh.read(size))
            base = 8 + size
            for key, entry in header.items():
                if key == "__metadata__":
                    continue
                if entry["dtype"] not in DTYPES:
                    raise ValueError(f"{path}: tensor '{key}' has dtype {entry['dtype']}, which zoo cannot read")
                begin, end = entry["data_offsets"]
                self._where[key] = (path, entry["dtype"], list(entry["shape"]), base + begin, end - begin)

    def __getitem__(self, key: str) -> torch.Tensor:
        """The tensor, backed by a private (copy-on-write) mapping of its bytes: no copy, no zero-filled buffer.
        Reading a page-cached checkpoint this way costs a fraction of ``pread`` into fresh memory, and writes to
        the tensor never reach the file."""
        import torch

        path, code, shape, offset, nbytes = self._where[key]
        dtype = DTYPES[code]
        itemsize = _item_size(dtype)
        if nbytes != math.prod(shape) * itemsize:
            raise ValueError(f"{path}: tensor '{key}' has {nbytes} bytes for shape {shape} {code}")
        if not nbytes:
            return torch.empty(shape, dtype=dtype)
        with open(path, "rb") as fh:
            if os.fstat(fh.fileno()).st_size < offset + nbytes:  # touching a mapped page past the end is SIGBUS
                raise ValueError(f"{path} ends inside tensor '{key}': the file is truncated")
            start = offset - offset % mmap.ALLOCATIONGRANULARITY
            if (offset - start) % itemsize or dtype == torch.bool:  # unaligned data (or bools): read a copy
                return self._pread(fh.fileno(), shape, dtype, offset, nbytes)
            mapped = mmap.mmap(fh.fileno(), offset + nbytes - start, flags=mmap.MAP_PRIVATE,
                               prot=mmap.PROT_READ | mmap.PROT_WRITE, offset=start)
        if hasattr(mapped, "madvise"):  # read it from disk in big requests now, not page by page on first touch
            mapped.madvise(mmap.MADV_WILLNEED)
        # the tensor holds the mapping; it is unmapped when the last view of the tensor is freed
        return torch.frombuffer(mapped, dtype=dtype, count=nbytes // itemsize, offset=offset - start).view(shape)

    @staticmethod
    def _pread(fd: int, shape: list[int], dtype: torch.dtype, offset: int, nbytes: int) -> torch.Tensor:
        import torch

        out = torch.empty(shape, dtype=dtype)
        view = memoryview(out.reshape(-1).view(torch.uint8).numpy())
        done = 0
        while done < nbytes:  # pread may return less than asked for large reads
            got = os.preadv(fd, [view[done:]], offset + done)
            if got <= 0:
                raise ValueError("the file ended inside a tensor: it is truncated")
            done += got
        return out

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._where[key][2])

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, key: object) -> bool:
        return key in self._where


def load_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors file, read at once (``safetensors.torch.load_file``)."""
    from safetensors.torch import load_file as reference_load_file

    return reference_load_file(str(path))


def load(data: bytes) -> dict[str, torch.Tensor]:
    """The tensors of a whole safetensors file held in ``data``, copied out of it (``safetensors.torch.load``)."""
    from safetensors.torch import load as reference_load

    return reference_load(data)


def save(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """``tensors`` as the bytes of a safetensors file (``safetensors.torch.save``)."""
    from safetensors.torch import save as reference_save

    return reference_save(dict(tensors), metadata=dict(metadata) if metadata is not None else None)


def load_buffer(buffer: bytearray) -> dict[str, torch.Tensor]:
    """The tensors of a whole safetensors file held in ``buffer``, as views of its memory (no copy; they keep it
    alive). Checked as the reference loader checks: a header that parses, known dtypes, and tensors whose byte
    ranges match their shapes and tile the data section exactly. Raises ValueError otherwise."""
    import torch

    if len(buffer) < 8:
        raise ValueError("too short to be safetensors")
    (size,) = struct.unpack_from("<Q", buffer)
    if size > MAX_HEADER or 8 + size > len(buffer):
        raise ValueError(f"a {size}-byte header in {len(buffer)} bytes")
    entries = json.loads(bytes(buffer[8:8 + size]))
    if not isinstance(entries, dict):
        raise ValueError("the header is not a JSON object")
    base, end = 8 + size, 0
    tensors = {}
    try:
        listed = sorted(((k, v) for k, v in entries.items() if k != "__metadata__"),
                        key=lambda kv: kv[1]["data_offsets"][0])
    except (KeyError, TypeError, IndexError) as exc:
        raise ValueError(f"a header entry without data_offsets ({exc!r})") from None
    for key, entry in listed:
        try:
            begin, stop = entry["data_offsets"]
            dtype = DTYPES[entry["dtype"]]
            shape = [int(n) for n in entry["shape"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"tensor '{key}' has a malformed header entry ({exc!r})") from None
        itemsize = _item_size(dtype)
        if begin != end or stop - begin != math.prod(shape) * itemsize or base + stop > len(buffer):
            raise ValueError(f"tensor '{key}' has bytes {begin}:{stop}, which do not fit its shape {shape} or "
                             f"follow the previous tensor")
        end, offset, count = stop, base + begin, math.prod(shape)
        if not count:
            tensors[key] = torch.empty(shape, dtype=dtype)
            continue
        # an unaligned tensor gets memory of its own (a copy is aligned): torch kernels assume aligned elements
        source = buffer if offset % itemsize == 0 else bytearray(buffer[offset:base + stop])
        tensors[key] = torch.frombuffer(source, dtype=dtype, count=count,
                                        offset=offset if source is buffer else 0).view(shape)
    if base + end != len(buffer):
        raise ValueError(f"{len(buffer) - base - end} bytes after the last tensor")
    return tensors


def header(layout: Mapping[str, tuple[torch.dtype, Sequence[int]]], metadata: Mapping[str, str] | None = None
           ) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """The 8-byte length plus JSON header of a safetensors file with this layout, and each tensor's
    ``(offset, nbytes)`` in the data section that follows it."""
    entries: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
    places: dict[str, tuple[int, int]] = {}
    offset = 0
    for key, (dtype, shape) in layout.items():
        nbytes = math.prod(shape) * _item_size(dtype)
        entries[key] = {"dtype": DTYPES.key_of(dtype), "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        places[key] = (offset, nbytes)
        offset += nbytes
    raw = json.dumps(entries, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # align the data to 8 bytes, as the reference writer does
    return struct.pack("<Q", len(raw)) + raw, places


def raw_bytes(tensor: torch.Tensor) -> memoryview:
    """A contiguous CPU tensor's memory, without a copy."""
    import torch

    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy()) if tensor.numel() else memoryview(b"")


class SafetensorsWriter:
    """Writes one safetensors file whose layout (keys, dtypes, shapes) is known up front.

    ``write(key, tensor)`` or ``write_rows(key, start, rows)`` put data at its place in any order; ``close()``
    checks that every byte was written. Memory use is whatever the caller passes in, never the whole file.
    """

    def __init__(self, path: str | os.PathLike[str], layout: Mapping[str, tuple[torch.dtype, Sequence[int]]],
                 metadata: Mapping[str, str] | None = None):
        self.path = Path(path)
        head, places = header(layout, metadata)
        self._entries = {key: (dtype, tuple(shape), *places[key]) for key, (dtype, shape) in layout.items()}
        self._base = len(head)
        self._pending = {key: entry[3] for key, entry in self._entries.items()}
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(self._fd, head)
        os.ftruncate(self._fd, self._base + sum(nbytes for _, nbytes in places.values()))

    @property
    def nbytes(self) -> int:
        return self._base + sum(entry[3] for entry in self._entries.values())

    def write(self, key: str, tensor: torch.Tensor) -> None:
        self.write_rows(key, 0, tensor)

    def write_rows(self, key: str, start: int, rows: torch.Tensor) -> None:
        """Write ``rows`` (the tensor's leading-axis slice ``start:start + len(rows)``), cast to the file's dtype."""
        dtype, shape, offset, _ = self._entries[key]
        row_shape = shape[1:] if shape else ()
        if shape and (tuple(rows.shape[1:]) != row_shape or start < 0 or start + rows.shape[0] > shape[0]):
            raise ValueError(f"rows {tuple(rows.shape)} at {start} do not fit '{key}' of shape {shape}")
        if not shape and rows.numel() != 1:
            raise ValueError(f"'{key}' is a scalar; got shape {tuple(rows.shape)}")
        data = rows.detach().to("cpu", dtype).contiguous()
        row_bytes = math.prod(row_shape) * _item_size(dtype)
        buffer = raw_bytes(data)
        position = self._base + offset + start * row_bytes
        done = 0
        while done < len(buffer):
            done += os.pwrite(self._fd, buffer[done:], position + done)
        self._pending[key] -= len(buffer)

    def close(self) -> None:
        unwritten = sorted(key for key, left in self._pending.items() if left != 0)
        os.fsync(self._fd)
        os.close(self._fd)
        if unwritten:
            raise RuntimeError(f"{self.path}: no data was written for {', '.join(unwritten[:5])}")

    def abort(self) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass
