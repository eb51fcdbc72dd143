#!/usr/bin/python3
"""PyTorch golden references for the language-model ops of tests/test_ops_lm.c:
RoPE (NEOX mode), causal attention with as many or fewer queries than keys,
and a tied embedding / output head.

Run with Debian's python3-torch (1.13):
    /usr/bin/python3 tests/reference/make_lm_ops_reference.py

Writes lm_ops.safetensors next to this script. Every case is computed in
float64 from its float32 inputs and stored as F32:
  <case>.in<i>    the inputs (rope: x; attention: q, k, v)
  <case>.R        a fixed random tensor shaped like the output
  <case>.out      the output
  <case>.grad<i>  d sum(out * R) / d in<i>
rope cases: x [..., T, hd], positions pos0 + t along dim -2, pairs
(i, i + hd/2), angle = (pos0 + t) * theta^(-2i/hd) (llama.cpp's NEOX mode);
"<case>.pos0" (I32 [1]) and "<case>.theta" (F32 [1]) give the parameters.
attention cases: softmax(q k^T * scale + M) v written out (no fused torch
op), M = -inf where key j > i + (Tk - Tq); "<case>.scale" (F32 [1]).
tied: logits = rmsnorm(E[ids]; w, eps 1e-5) E^T, mean cross-entropy against
labels: tied.E [V, d], tied.w [d], tied.ids and tied.labels (I32), tied.loss
[1], tied.gradE and tied.gradw.

The safetensors format is written with struct + json: 8-byte little-endian
header length, a JSON header padded with spaces to a multiple of 8, then the
raw little-endian data. __metadata__ records the generator, torch's version
and REF_VERSION (bump it when the contents change; the C test checks it).
"""
import math
import os
import struct
import zlib

import torch
from st_writer import write_safetensors  # noqa: E402

REF_VERSION = "1"
HERE = os.path.dirname(os.path.abspath(__file__))




def gen(name):
    return torch.Generator().manual_seed(zlib.crc32(name.encode()))


def uniform(g, shape, lo=-1.0, hi=1.0):
    return torch.rand(shape, generator=g) * (hi - lo) + lo


def f32(x):
    """x rounded to float32, as a Python float (the C side passes floats)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def rope(x, pos0, theta):
    """NEOX RoPE over the last dim of x [..., T, hd], time along dim -2."""
    T, hd = x.shape[-2], x.shape[-1]
    half = hd // 2
    inv = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    ang = torch.outer(torch.arange(pos0, pos0 + T, dtype=torch.float64), inv)  # [T, half]
    c, s = torch.cos(ang), torch.sin(ang)
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * c - b * s, b * c + a * s], dim=-1)


def causal_attention(q, k, v, scale):
    tq, tk = q.shape[-2], k.shape[-2]
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    j = torch.arange(tk).reshape(1, tk)
    i = torch.arange(tq).reshape(tq, 1)
    s = s.masked_fill(j > i + (tk - tq), float("-inf"))
    return torch.matmul(torch.softmax(s, dim=-1), v)


# name -> (x shape, pos0, theta)
ROPE_CASES = [
    ("rope_bhtd", (2, 3, 7, 8), 0, 10000.0),           # [B, H, T, hd]
    ("rope_far", (1, 2, 9, 16), 4087, 10000.0),        # positions 4087 .. 4095
    ("rope_2d", (6, 64), 123, 500000.0),               # [T, hd], another theta
    ("rope_long", (2048, 4), 2048, 10000.0),           # every position 2048 .. 4095
]

# name -> (q shape, k shape, v shape, scale or None for 1/sqrt(D) in float32)
ATTN_CASES = [
    ("attn_equal", (2, 3, 6, 8), (2, 3, 6, 8), (2, 3, 6, 8), None),          # Tq == Tk, [B, H, T, D]
    ("attn_fewer_q", (2, 2, 3, 8), (2, 2, 7, 8), (2, 2, 7, 8), None),        # Tq < Tk
    ("attn_blocks", (1, 2, 37, 16), (1, 2, 50, 16), (1, 2, 50, 12), None),   # 2 row blocks, Dv != D
    ("attn_folded", (4, 33, 8), (4, 33, 8), (4, 33, 8), None),               # heads folded: [B*H, T, D]
    ("attn_one_q", (3, 1, 4), (3, 9, 4), (3, 9, 4), None),                   # one query over 9 keys
    ("attn_scale", (2, 5, 6), (2, 5, 6), (2, 5, 6), 0.3),                    # an explicit scale
]

TIED_V, TIED_D, TIED_B, TIED_T = 11, 6, 2, 5


def add_case(items, name, fn, inputs):
    xs = []
    for i, x in enumerate(inputs):
        items.append((f"{name}.in{i}", x))
        xs.append(x.double().requires_grad_(True))
    out = fn(*xs)
    r = uniform(gen(name + ".R"), tuple(out.shape))
    (out * r.double()).sum().backward()
    items.append((f"{name}.R", r))
    items.append((f"{name}.out", out.detach().float()))
    for i, x in enumerate(xs):
        items.append((f"{name}.grad{i}", x.grad.float()))


def main():
    torch.set_num_threads(1)
    items = []
    for name, shape, pos0, theta in ROPE_CASES:
        g = gen(name)
        add_case(items, name, lambda x, p=pos0, t=theta: rope(x, p, t), [uniform(g, shape)])
        items.append((f"{name}.pos0", torch.tensor([pos0], dtype=torch.int32)))
        items.append((f"{name}.theta", torch.tensor([theta], dtype=torch.float32)))
    for name, sq, sk, sv, scale in ATTN_CASES:
        g = gen(name)
        if scale is None:
            scale = 1.0 / math.sqrt(sq[-1])
        scale = f32(scale)
        qkv = [uniform(g, sq, -2, 2), uniform(g, sk, -2, 2), uniform(g, sv)]
        add_case(items, name, lambda q, k, v, s=scale: causal_attention(q, k, v, s), qkv)
        items.append((f"{name}.scale", torch.tensor([scale], dtype=torch.float32)))

    # tied embedding + output head
    g = gen("tied")
    E = uniform(g, (TIED_V, TIED_D))
    w = uniform(g, (TIED_D,), 0.5, 1.5)
    ids = torch.randint(0, TIED_V, (TIED_B, TIED_T), generator=g)
    labels = torch.randint(0, TIED_V, (TIED_B * TIED_T,), generator=g)
    E64, w64 = E.double().requires_grad_(True), w.double().requires_grad_(True)
    h = E64[ids.reshape(-1)]
    h = h / torch.sqrt((h * h).mean(-1, keepdim=True) + 1e-5) * w64
    loss = torch.nn.functional.cross_entropy(h @ E64.t(), labels)
    loss.backward()
    items += [("tied.E", E), ("tied.w", w), ("tied.ids", ids.to(torch.int32)),
              ("tied.labels", labels.to(torch.int32)), ("tied.loss", loss.detach().float().reshape(1)),
              ("tied.gradE", E64.grad.float()), ("tied.gradw", w64.grad.float())]

    path = os.path.join(HERE, "lm_ops.safetensors")
    meta = {"generator": "tests/reference/make_lm_ops_reference.py", "version": REF_VERSION,
            "torch": torch.__version__,
            "contents": "rope_* and attn_* cases: <case>.in<i>, .R, .out, .grad<i> (float64 math), "
                        "rope: .pos0 .theta, attention: .scale; tied.*: tied embedding + head"}
    n = write_safetensors(path, items, meta)
    print(f"{path}: {len(items)} tensors, {n} bytes")


if __name__ == "__main__":
    main()
