#!/usr/bin/python3
"""PyTorch golden references for bitgrad's BitNet transformer language model
(layers/lm.c, tests/test_lm.c).

Run with Debian's python3-torch (1.13):
    /usr/bin/python3 tests/reference/make_lm_reference.py

The model is llama.cpp's `bitnet` graph as ../shared/LM.md writes it, with
bitgrad's parameter names (GGUF's tensor names): vocab 256, d 64, 2 layers,
4 heads, d_ff 256, ctx 16, RoPE NEOX theta 10000, RMSNorm eps 1e-5, the
token embedding tied with the output head, no biases. Writes lm.safetensors
next to this script:
  w.<name>             every parameter (fixed, seeded; norms not all 1)
  ids [B, T+1] (I32)   token ids: x = ids[:, :T], y = ids[:, 1:]
  <mode>.logits        [B, T, V] for mode fp32 and bitnet
  <mode>.loss          [1] mean cross-entropy over the B*T positions
  <mode>.g.<name>      the gradient of the loss w.r.t. every parameter
  <mode>.adamw_loss    [10] the losses of 10 AdamW steps from w (lr 2e-3,
                       betas 0.9/0.95, eps 1e-8, weight decay 0.1 on the
                       projection matrices only), the loss before each step
BitNet: every projection is a BitLinear without a norm of its own:
activations int8 per token, s = max(absmax, 1e-5) / 127, round half to even
of x / s clamped to [-128, 127], times s; weights ternary, g = max(mean|W|,
1e-5), clamp(round(W / g), -1, 1) * g; both with the identity
straight-through estimator.
"""
import math
import os

import torch
from st_writer import write_safetensors  # noqa: E402
import torch.nn.functional as F

REF_VERSION = "1"
HERE = os.path.dirname(os.path.abspath(__file__))
V, D, L, H, FF, CTX, B, T = 256, 64, 2, 4, 256, 16, 3, 16
EPS, THETA = 1e-5, 10000.0
PROJ = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]




def param_shapes(V=V, D=D, L=L, FF=FF):
    """bitgrad's parameter order (named_parameters of the module tree)."""
    shapes = [("token_embd.weight", (V, D))]
    for i in range(L):
        p = f"blk.{i}."
        shapes += [(p + "attn_norm.weight", (D,)), (p + "attn_q.weight", (D, D)), (p + "attn_k.weight", (D, D)),
                   (p + "attn_v.weight", (D, D)), (p + "attn_sub_norm.weight", (D,)),
                   (p + "attn_output.weight", (D, D)), (p + "ffn_norm.weight", (D,)),
                   (p + "ffn_gate.weight", (FF, D)), (p + "ffn_up.weight", (FF, D)),
                   (p + "ffn_sub_norm.weight", (FF,)), (p + "ffn_down.weight", (D, FF))]
    shapes.append(("output_norm.weight", (D,)))
    return shapes


def init_weights(g):
    w = {}
    for name, shape in param_shapes():
        if name.endswith("norm.weight"):
            w[name] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif name == "token_embd.weight":
            w[name] = 0.02 * torch.randn(shape, generator=g) * 10
        else:
            w[name] = (torch.rand(shape, generator=g) * 2 - 1) / math.sqrt(shape[1])
    return w


def rmsnorm(x, w):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w


def ste(x, q):
    return x + (q - x).detach()


def act_quant(x):
    s = x.abs().amax(-1, keepdim=True).clamp(min=1e-5) / 127.0
    return ste(x, torch.clamp(torch.round(x / s), -128, 127) * s)


def weight_quant(w):
    g = w.abs().mean().clamp(min=1e-5)
    return ste(w, torch.clamp(torch.round(w / g), -1, 1) * g)


def proj(x, w, bitnet):
    return F.linear(act_quant(x), weight_quant(w)) if bitnet else F.linear(x, w)


def rope(x, theta=THETA):  # x [B, H, T, hd], NEOX: pairs (i, i + hd/2)
    hd = x.shape[-1]
    half = hd // 2
    pos = torch.arange(x.shape[-2], dtype=torch.float64)
    inv = theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / hd)
    ang = pos[:, None] * inv[None, :]
    cos, sin = torch.cos(ang).float(), torch.sin(ang).float()
    a, b = x[..., :half], x[..., half:]
    return torch.cat([a * cos - b * sin, b * cos + a * sin], dim=-1)


def forward(w, ids, bitnet, n_layers=L, n_heads=H):
    """The bitnet graph over the weights w (by bitgrad's names); any sizes."""
    x = w["token_embd.weight"][ids]
    bsz, t, d = x.shape
    hd = d // n_heads
    mask = torch.triu(torch.ones(t, t, dtype=torch.bool), diagonal=1)
    for i in range(n_layers):
        p = f"blk.{i}."
        h = rmsnorm(x, w[p + "attn_norm.weight"])
        q, k, v = (proj(h, w[p + n + ".weight"], bitnet).view(bsz, t, n_heads, hd).transpose(1, 2)
                   for n in ("attn_q", "attn_k", "attn_v"))
        q, k = rope(q), rope(k)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        y = torch.softmax(s.masked_fill(mask, float("-inf")), dim=-1) @ v
        y = y.transpose(1, 2).reshape(bsz, t, d)
        x = x + proj(rmsnorm(y, w[p + "attn_sub_norm.weight"]), w[p + "attn_output.weight"], bitnet)
        f = rmsnorm(x, w[p + "ffn_norm.weight"])
        gu = F.silu(proj(f, w[p + "ffn_gate.weight"], bitnet)) * proj(f, w[p + "ffn_up.weight"], bitnet)
        x = x + proj(rmsnorm(gu, w[p + "ffn_sub_norm.weight"]), w[p + "ffn_down.weight"], bitnet)
    x = rmsnorm(x, w["output_norm.weight"])
    return x @ w["token_embd.weight"].t()


def loss_of(logits, y):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def adamw_losses(w0, x, y, bitnet, steps=10):
    w = {n: t.clone().requires_grad_(True) for n, t in w0.items()}
    decay = [t for n, t in w.items() if any(("." + p + ".") in n for p in PROJ)]
    rest = [t for n, t in w.items() if not any(("." + p + ".") in n for p in PROJ)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=2e-3, betas=(0.9, 0.95), eps=1e-8)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_of(forward(w, x, bitnet), y)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    return torch.tensor(losses, dtype=torch.float32)


def main():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    w = init_weights(g)
    ids = torch.randint(0, V, (B, T + 1), generator=g)
    x, y = ids[:, :T], ids[:, 1:]
    items = [("w." + n, w[n]) for n, _ in param_shapes()] + [("ids", ids.to(torch.int32))]
    for mode in ("fp32", "bitnet"):
        wt = {n: t.clone().requires_grad_(True) for n, t in w.items()}
        logits = forward(wt, x, mode == "bitnet")
        loss = loss_of(logits, y)
        loss.backward()
        items += [(mode + ".logits", logits), (mode + ".loss", loss.detach().reshape(1))]
        items += [(mode + ".g." + n, wt[n].grad) for n, _ in param_shapes()]
        items.append((mode + ".adamw_loss", adamw_losses(w, x, y, mode == "bitnet")))
        print(mode, "loss", loss.item())
    write_safetensors(os.path.join(HERE, "lm.safetensors"), items,
                      {"torch": torch.__version__, "version": REF_VERSION,
                       "generator": "tests/reference/make_lm_reference.py"})


if __name__ == "__main__":
    main()
