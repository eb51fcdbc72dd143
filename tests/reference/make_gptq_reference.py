#!/usr/bin/python3
"""numpy golden references for bitgrad's GPTQ rounding (tests/test_gptq.c,
quant/gptq.c's bg_gptq_quantize).

Run with Debian's python3-numpy (1.24) and python3-torch (1.13):
    /usr/bin/python3 tests/reference/make_gptq_reference.py

Writes gptq.safetensors next to this script. GPTQ (Frantar et al. 2022) in
float64, one column at a time: dead inputs (H_jj == 0) get H_jj = 1 and
weights 0, percdamp * mean(diag H) is added to the diagonal, U = the upper
Cholesky factor of H^-1 (LAPACK, through numpy), and for each column j and
row r: q = clip(round_half_even(W[r,j] / scale[r]), qmin, qmax) * scale[r],
W[r,k] -= (W[r,j] - q) / U[j,j] * U[j,k] for k > j. A second
implementation, torch's transcription of the paper's lazy-batch update
(blocks of 8 columns), must agree to 1e-9 before anything is written.

The C reader takes F32 / I32 / I8 / U8 only, so H is stored as F32 and the
reference itself runs on that float32 H (widened to float64): the C test
passes exactly the H used here. Cases:
  gptq.<case>.w        [rows, cols] F32 weights
  gptq.<case>.X        [n, cols] F32 calibration inputs (H = 2/n X^T X)
  gptq.<case>.H        [cols, cols] F32, float32(2/n X^T X computed in float64)
  gptq.<case>.scale    [rows] F32, per row (a per-tensor scale repeated)
  gptq.<case>.qrange   I32 [qmin, qmax]
  gptq.<case>.percdamp F32 [1] (the algorithm uses this float32 widened)
  gptq.<case>.wq       [rows, cols] F32, the dequantized GPTQ result
  gptq.<case>.wq_rtn   [rows, cols] F32, plain round to nearest
case names: int4_rows (16x24, int4, scale max|w_row|/7, correlated inputs),
ternary_dead (8x32, [-1, 1], per-tensor scale mean|w|, input 5 always 0),
int8 (4x64, [-128, 127], per-row absmax/127, mixed inputs).

The safetensors format is written with struct + json by st_writer.py.
__metadata__ records the generator, numpy's and torch's versions and
REF_VERSION (bump it when the contents change; the C test checks it).
"""
import os

import numpy as np
import torch
from st_writer import write_safetensors  # noqa: E402

REF_VERSION = "1"
HERE = os.path.dirname(os.path.abspath(__file__))
GENERATOR = "tests/reference/make_gptq_reference.py"


def quantize(v, s, qmin, qmax):
    return float(np.clip(np.round(v / s), qmin, qmax)) * s   # np.round: half to even


def gptq_numpy(w, H, scale, qmin, qmax, percdamp):
    """The paper's algorithm with straightforward loops, in float64."""
    rows, cols = w.shape
    W = w.astype(np.float64).copy()
    H = H.astype(np.float64).copy()
    for j in range(cols):
        if H[j, j] == 0.0:
            H[j, j] = 1.0
            W[:, j] = 0.0
    damp = percdamp * np.mean(np.diag(H))
    for j in range(cols):
        H[j, j] += damp
    L = np.linalg.cholesky(H)
    Linv = np.linalg.inv(L)
    Hinv = Linv.T @ Linv
    U = np.linalg.cholesky(Hinv).T
    Q = np.zeros_like(W)
    for j in range(cols):
        for r in range(rows):
            q = quantize(W[r, j], float(scale[r]), qmin, qmax)
            Q[r, j] = q
            err = (W[r, j] - q) / U[j, j]
            for k in range(j + 1, cols):
                W[r, k] -= err * U[j, k]
    return Q


def gptq_torch_blocked(w, H, scale, qmin, qmax, percdamp, block=8):
    """GPTQ's fasterquant (lazy batch updates), float64, as an independent check."""
    W = torch.tensor(w, dtype=torch.float64)
    H = torch.tensor(H, dtype=torch.float64)
    s = torch.tensor(scale, dtype=torch.float64).unsqueeze(1)
    cols = W.shape[1]
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += torch.eye(cols, dtype=torch.float64) * (percdamp * torch.mean(torch.diag(H)))
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    Q = torch.zeros_like(W)
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1, Hinv1 = W[:, i1:i2].clone(), Hinv[i1:i2, i1:i2]
        Err1 = torch.zeros_like(W1)
        for i in range(i2 - i1):
            q = torch.clamp(torch.round(W1[:, i:i + 1] / s), qmin, qmax) * s
            Q[:, i1 + i] = q[:, 0]
            err = (W1[:, i] - q[:, 0]) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q.numpy()


def rtn(w, scale, qmin, qmax):
    s = scale.astype(np.float64)[:, None]
    return np.clip(np.round(w.astype(np.float64) / s), qmin, qmax) * s


def make_case(rng, name, rows, cols, n, qmin, qmax, scale_rule, mix, dead=()):
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    X = rng.standard_normal((n, cols)) @ mix(rng, cols)
    X[:, list(dead)] = 0.0
    X = X.astype(np.float32)
    X64 = X.astype(np.float64)
    H = (2.0 / n * (X64.T @ X64)).astype(np.float32)
    scale = scale_rule(w).astype(np.float32)
    percdamp = np.float32(0.01)
    H64, pd = H.astype(np.float64), float(percdamp)
    wq = gptq_numpy(w, H64, scale, qmin, qmax, pd)
    check = gptq_torch_blocked(w, H64, scale, qmin, qmax, pd)
    diff = np.abs(wq - check).max()
    assert diff < 1e-9, (name, diff)
    wr = rtn(w, scale, qmin, qmax)
    err_g, err_r = np.linalg.norm((w - wq) @ X64.T), np.linalg.norm((w - wr) @ X64.T)
    print(f"{name}: {rows}x{cols} [{qmin}, {qmax}], blocked torch differs by {diff:.2e}, "
          f"|(W - Wq) X^T| gptq {err_g:.6g} rtn {err_r:.6g}")
    p = "gptq." + name
    t = torch.from_numpy
    return [(p + ".w", t(w)), (p + ".X", t(X)), (p + ".H", t(H)), (p + ".scale", t(scale)),
            (p + ".qrange", torch.tensor([qmin, qmax], dtype=torch.int32)),
            (p + ".percdamp", torch.tensor([percdamp], dtype=torch.float32)),
            (p + ".wq", t(wq.astype(np.float32))), (p + ".wq_rtn", t(wr.astype(np.float32)))]


def correlated(rng, cols):
    """Identity plus a few columns that mostly copy a neighbour."""
    M = np.eye(cols)
    for j in range(1, cols, 3):
        M[j - 1, j] = 0.9
        M[j, j] = 0.3
    return M


def mixed(rng, cols):
    return np.eye(cols) + 0.3 * rng.standard_normal((cols, cols))


def main():
    rng = np.random.default_rng(20221031)
    items = []
    items += make_case(rng, "int4_rows", 16, 24, 64, -8, 7, lambda w: np.abs(w).max(axis=1) / 7, correlated)
    items += make_case(rng, "ternary_dead", 8, 32, 64, -1, 1,
                       lambda w: np.full(w.shape[0], np.abs(w).mean()), mixed, dead=(5,))
    items += make_case(rng, "int8", 4, 64, 128, -128, 127, lambda w: np.abs(w).max(axis=1) / 127, mixed)
    meta = {"generator": GENERATOR, "version": REF_VERSION, "numpy": np.__version__, "torch": torch.__version__}
    path = os.path.join(HERE, "gptq.safetensors")
    size = write_safetensors(path, items, meta)
    print(f"{path}: {len(items)} tensors, {size} bytes")


if __name__ == "__main__":
    main()
