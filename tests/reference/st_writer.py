"""write_safetensors for the reference generators in this folder: the
safetensors format written with struct + json (8-byte little-endian header
length, a JSON header padded with spaces to a multiple of 8, the raw
little-endian data), atomically (temporary file + rename)."""
import json
import os
import struct

import torch

DTYPES = {torch.float32: "F32", torch.int32: "I32", torch.int8: "I8", torch.uint8: "U8"}


def write_safetensors(path, items, metadata):
    """items: list of (name, tensor), names unique. Data is laid out in the
    listed order, 4-byte types first so that every tensor starts aligned to
    its element size. Returns the file's size."""
    seen = set()
    entries = []
    for name, t in items:
        assert name not in seen, name
        seen.add(name)
        t = t.detach().cpu().contiguous()
        entries.append((name, DTYPES[t.dtype], list(t.shape), t.numpy().tobytes()))
    entries.sort(key=lambda e: 0 if e[1] in ("F32", "I32") else 1)   # stable
    header = {"__metadata__": metadata}
    data = bytearray()
    for name, dt, shape, raw in entries:
        header[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        f.write(data)
    os.replace(tmp, path)
    return 8 + len(text) + len(data)
