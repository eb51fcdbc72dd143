#!/usr/bin/python3
"""The PyTorch baseline of `bitgrad lm train`: the same bitnet graph (imported
from tests/reference/make_lm_reference.py), the same recipe and the same
validation windows, for the quality rows and bench/lm_step.

    /usr/bin/python3 bench/torch_lm.py [--steps N] [--bitnet] [--threads N]
        [--time-only N] [--data FILE]
    /usr/bin/python3 bench/torch_lm.py --infer N [--d D --ff F --layers L --heads H] [--threads N]

Recipe (as the quality rows): V 256, d 256, 4 layers, 4 heads, d_ff 768, ctx
128, batch 32, AdamW lr 2e-3, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on
the projection matrices only, 50 warm-up steps then cosine down to 10%,
gradient clipping 1.0, seed 0 (--seed), weights initialised like bitgrad's (PyTorch's
Linear default, embedding N(0, 0.02), norms 1). Training windows are random
(torch's generator: not bitgrad's draws); the validation windows are
bitgrad's fixed set: W = (L-1)//T stride-T windows of the last 10%, M = 16 x
32 of them at offsets T*floor(j*W/M). Prints the validation loss in nats
per byte at the end, and ms per step and tokens/s (median of the timed
steps). --time-only N times N steps after 3 warm-up steps and stops.
--infer N times the eval-mode BitNet forward (no grad) of random weights of
the given shape, for bench/lm_infer: prefill of a 128-token prompt, and
decoding N tokens after a 16-token prompt, each one a forward over the
whole sequence so far (the reference graph keeps no KV cache); medians of 3.
"""
import argparse
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import make_lm_reference as ref  # noqa: E402

PROJ = ref.PROJ


def kjv_path():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.environ.get("HOME", "/tmp"), ".cache")
    return os.path.join(base, "bitgrad", "kjv.txt")


def init(V, D, L, FF, g):
    w = {}
    for name, shape in ref.param_shapes(V, D, L, FF):
        if name.endswith("norm.weight"):
            w[name] = torch.ones(shape)
        elif name == "token_embd.weight":
            w[name] = 0.02 * torch.randn(shape, generator=g)
        else:  # PyTorch's Linear default: U(-1/sqrt(in), 1/sqrt(in))
            w[name] = (torch.rand(shape, generator=g) * 2 - 1) / math.sqrt(shape[1])
    return {n: t.requires_grad_(True) for n, t in w.items()}


def val_windows(data, T, M):
    L = len(data)
    W = (L - 1) // T
    M = min(M, W)
    return [T * (j * W // M) for j in range(M)]


def time_inference(a):
    V, D, L, H, FF = 256, a.d, a.layers, a.heads, a.ff
    w = {n: t.detach() for n, t in init(V, D, L, FF, torch.Generator().manual_seed(5)).items()}
    ids = torch.tensor([[ord("In the beginning God created the heaven "[i % 40]) for i in range(128 + 16)]])
    pf, dc = [], []
    with torch.no_grad():
        for r in range(4):   # the first is a warm-up
            t0 = time.perf_counter()
            ref.forward(w, ids[:, :128], True, L, H)
            t1 = time.perf_counter()
            for n in range(16, 16 + a.infer):
                ref.forward(w, ids[:, :min(n, 128 + 16)], True, L, H)
            t2 = time.perf_counter()
            if r:
                pf.append(128 / (t1 - t0))
                dc.append(a.infer / (t2 - t1))
    print(f"torch infer {torch.__version__}, {a.threads} threads: prefill {sorted(pf)[1]:.1f} tokens/s "
          f"decode {sorted(dc)[1]:.1f} tokens/s")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--bitnet", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--time-only", type=int, default=0)
    ap.add_argument("--data", default=kjv_path())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--infer", type=int, default=0)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--ff", type=int, default=768)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.infer:
        return time_inference(a)
    V, D, L, H, FF, T, B = 256, 256, 4, 4, 768, 128, 32
    raw = torch.tensor(list(open(a.data, "rb").read()), dtype=torch.long)
    n_train = len(raw) * 9 // 10
    train, val = raw[:n_train], raw[n_train:]
    g = torch.Generator().manual_seed(a.seed)
    w = init(V, D, L, FF, g)
    decay = [t for n, t in w.items() if any("." + p + "." in n for p in PROJ)]
    rest = [t for n, t in w.items() if not any("." + p + "." in n for p in PROJ)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=2e-3, betas=(0.9, 0.95), eps=1e-8)
    steps = a.time_only + 3 if a.time_only else a.steps
    warm, total, lo = 50, steps, 0.1

    def lr_at(s):
        if s < warm:
            return 2e-3 * (s + 1) / warm
        p = (s - warm) / max(1, total - warm)
        return 2e-3 * (lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0))))

    times = []
    for s in range(steps):
        for grp in opt.param_groups:
            grp["lr"] = lr_at(s)
        starts = torch.randint(0, len(train) - T - 1, (B,), generator=g)
        batch = torch.stack([train[i:i + T + 1] for i in starts])
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = ref.loss_of(ref.forward(w, batch[:, :T], a.bitnet, L, H), batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(w.values()), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
        if (s + 1) % 50 == 0 and not a.time_only:
            print(f"step {s + 1}: loss {loss.item():.4f}", flush=True)
    timed = sorted(times[3:]) if a.time_only else sorted(times)
    med = timed[len(timed) // 2]
    print(f"torch {torch.__version__}, {a.threads} threads, OPENBLAS_NUM_THREADS="
          f"{os.environ.get('OPENBLAS_NUM_THREADS', '(unset)')}: {'BitNet' if a.bitnet else 'fp32'} "
          f"{med * 1e3:.1f} ms/step (median of {len(timed)}, min {timed[0] * 1e3:.1f}), "
          f"{B * T / med:.0f} tokens/s")
    if a.time_only:
        return
    with torch.no_grad():
        tot, n = 0.0, 0
        offs = val_windows(val, T, 16 * B)
        for i in range(0, len(offs), B):
            xs = torch.stack([val[o:o + T + 1] for o in offs[i:i + B]])
            logits = ref.forward(w, xs[:, :T], a.bitnet, L, H)
            tot += ref.loss_of(logits, xs[:, 1:]).item() * xs[:, 1:].numel()
            n += xs[:, 1:].numel()
    print(f"validation {tot / n:.4f} nats/byte = {tot / n / math.log(2):.4f} bits/byte after {steps} steps")


if __name__ == "__main__":
    main()
