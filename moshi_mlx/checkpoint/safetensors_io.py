"""Memory-lean safetensors I/O: lazy reading, header-first streaming writing, sharding.

The one writer of LM weights: `loading.save_lm` and `cli.py quantize` both go through
`write_weights` (one file, or shards plus `model.safetensors.index.json`).

Reading uses `mx.load`, which for safetensors is lazy in MLX: it returns arrays backed by a load
primitive, so nothing is read until an array is evaluated, and then only that tensor. Shapes and
dtypes are known up front without I/O.

Writing: `mx.save_safetensors` (and mlx-lm's `save_model`) need every tensor of a shard evaluated at
once, i.e. a whole shard in memory. Our writer instead computes the header from the lazy arrays'
shapes and dtypes, writes it, then evaluates and appends one tensor at a time, releasing each before
the next. Peak memory is then about one source tensor plus its converted form, independent of the
shard size. The file format (8-byte little-endian header length, JSON header padded with spaces to a
multiple of 8, then the raw little-endian data in header order) is the one `mx.load`, `safetensors`
and PyTorch read.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Iterable
from pathlib import Path

import mlx.core as mx
import numpy as np

from .layout import INDEX_FILE, known_lm_files, shard_name

_DTYPES = {
    mx.bfloat16: "BF16", mx.float16: "F16", mx.float32: "F32", mx.uint32: "U32",
    mx.int32: "I32", mx.uint8: "U8", mx.int8: "I8", mx.int64: "I64", mx.uint16: "U16",
    mx.int16: "I16", mx.uint64: "U64", mx.bool_: "BOOL",
}
# numpy has no bfloat16: such tensors are written through a uint16 view of the same bits.
_VIEW_AS = {mx.bfloat16: mx.uint16}


def read_header(path: str | Path) -> dict[str, dict]:
    """Tensor names -> {dtype, shape, data_offsets} of a safetensors file, reading only its header."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


def load_lazy(paths: Iterable[str | Path]) -> dict[str, mx.array]:
    """Lazily load all tensors of one or more safetensors files (duplicate names are an error)."""
    out: dict[str, mx.array] = {}
    for p in paths:
        part = mx.load(str(p))
        dup = sorted(set(part) & set(out))
        if dup:
            raise ValueError(f"{p}: tensors also present in another shard: {dup[:5]}")
        out.update(part)
    return out


def nbytes(a: mx.array) -> int:
    return int(a.size) * a.dtype.size


def make_shards(names: list[str], sizes: dict[str, int], max_bytes: int | None) -> list[list[str]]:
    """Split tensor names into consecutive shards of at most `max_bytes` (a lone big tensor stays
    whole), like mlx-lm's `make_shards` but on names so nothing is evaluated."""
    shards: list[list[str]] = []
    size = 0
    for name in names:
        if not shards or (max_bytes is not None and size + sizes[name] > max_bytes and shards[-1]):
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += sizes[name]
    return shards


def stream_save(
    path: str | Path,
    tensors: dict[str, mx.array],
    names: list[str] | None = None,
    metadata: dict[str, str] | None = None,
    on_tensor: Callable[[str, int], None] | None = None,
) -> int:
    """Write `tensors[names]` (lazy arrays) to `path`, evaluating and releasing one at a time.

    Entries are popped from `tensors` as they are written so that the caller's dict does not keep
    evaluated data alive. Returns the file size in bytes.
    """
    names = list(tensors) if names is None else names
    header: dict[str, dict] = {}
    offset = 0
    for name in names:
        a = tensors[name]
        if a.dtype not in _DTYPES:
            raise ValueError(f"{name}: dtype {a.dtype} cannot be stored in safetensors")
        n = nbytes(a)
        header[name] = {"dtype": _DTYPES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header = {"__metadata__": dict(metadata), **header}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in names:
            a = tensors.pop(name)
            mx.eval(a)
            if a.dtype in _VIEW_AS:
                a = a.view(_VIEW_AS[a.dtype])
            buf = np.ascontiguousarray(np.asarray(a))
            f.write(memoryview(buf).cast("B"))
            del a, buf
            mx.clear_cache()  # return freed buffers to the OS: peak RSS is what we promise
            if on_tensor is not None:
                on_tensor(name, header[name]["data_offsets"][1] - header[name]["data_offsets"][0])
    return 8 + len(raw) + offset


def write_weights(
    out_dir: str | Path,
    tensors: dict[str, mx.array],
    filename: str,
    order: list[str] | None = None,
    max_shard_bytes: int | None = None,
    metadata: dict[str, str] | None = None,
    on_tensor: Callable[[str, int], None] | None = None,
) -> list[Path]:
    """Write LM weights into `out_dir`: `filename` if they fit in one shard, else
    `model-0000i-of-0000N.safetensors` plus `model.safetensors.index.json`.

    LM weight files already in `out_dir` (any family's names, shards, index) are removed first, so
    the directory never holds two LM checkpoints (which the resolver would reject). `tensors` is
    consumed as in `stream_save`. Returns the written files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    order = list(tensors) if order is None else order
    sizes = {n: nbytes(tensors[n]) for n in order}
    shards = make_shards(order, sizes, max_shard_bytes)
    stale = [out / n for n in (*known_lm_files(), INDEX_FILE)] + list(out.glob("model-*-of-*.safetensors"))
    for f in stale:
        f.unlink(missing_ok=True)
    names = [filename] if len(shards) == 1 else [shard_name(i, len(shards)) for i in range(len(shards))]
    files = []
    for shard, name in zip(shards, names, strict=True):
        stream_save(out / name, tensors, shard, metadata, on_tensor)
        files.append(out / name)
    if len(shards) > 1:
        weight_map = {n: name for shard, name in zip(shards, names, strict=True) for n in shard}
        (out / INDEX_FILE).write_text(json.dumps(
            {"metadata": {"total_size": sum(sizes.values())},
             "weight_map": dict(sorted(weight_map.items()))}, indent=2))
    return files
