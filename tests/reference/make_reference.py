#!/usr/bin/python3
"""Golden reference tensors for tests/test_reference.c, from PyTorch.

Run with Debian's python3-torch (1.13):  /usr/bin/python3 tests/reference/make_reference.py

Writes, next to this script:
  ops.safetensors        for every op case: inputs, R, out = f(inputs) and the
                         gradient of sum(out * R) w.r.t. each float input
                         ("<case>.in<i>", "<case>.R", "<case>.out", "<case>.grad<i>").
                         Computed in float64 from float32 inputs, stored as F32.
  mlp_optim.safetensors  the MLP 784-512-512-10 (ReLU) from fixed initial weights,
                         one fixed batch, 10 steps of four optimizers in float32:
                         losses and (sampled) final weights.

Files are safetensors written here with struct + json (the safetensors
package is not needed). __metadata__ records the generator, its version and
torch's version; test_reference.c refuses a file whose version differs from
the one it expects. Bump REF_VERSION whenever the contents change.
"""
import json
import math
import os
import struct
import zlib

import torch
import torch.nn.functional as F

REF_VERSION = "2"
HERE = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------
# safetensors writer


def save_safetensors(path, tensors, metadata):
    """tensors: list of (name, torch tensor). 4-byte dtypes are laid out first
    so every tensor is naturally aligned without holes (the format forbids
    holes). The JSON header is padded with spaces to a multiple of 8."""
    codes = {torch.float32: "F32", torch.int32: "I32", torch.int8: "I8", torch.uint8: "U8"}
    names = [n for n, _ in tensors]
    assert len(set(names)) == len(names), "duplicate tensor names"
    blobs = {}
    for name, t in tensors:
        t = t.detach().contiguous().cpu()
        assert t.dtype in codes, (name, t.dtype)
        blobs[name] = (codes[t.dtype], list(t.shape), t.numpy().tobytes(order="C"))
    order = [n for n in names if blobs[n][0] in ("F32", "I32")] + [n for n in names if blobs[n][0] in ("I8", "U8")]
    offsets, pos = {}, 0
    for n in order:
        offsets[n] = (pos, pos + len(blobs[n][2]))
        pos += len(blobs[n][2])
    header = {"__metadata__": dict(metadata)}
    for n in names:
        header[n] = {"dtype": blobs[n][0], "shape": blobs[n][1], "data_offsets": list(offsets[n])}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for n in order:
            f.write(blobs[n][2])
    os.replace(tmp, path)
    return pos + len(text) + 8


def metadata(contents):
    return {
        "generator": "tests/reference/make_reference.py",
        "version": REF_VERSION,
        "torch": torch.__version__,
        "contents": contents,
    }


# ---------------------------------------------------------------------------
# input generators (float32, seeded per case so cases are independent)


class Gen:
    def __init__(self, name):
        self.g = torch.Generator().manual_seed(zlib.crc32(name.encode()))

    def uniform(self, shape, lo=-1.0, hi=1.0):
        return torch.rand(shape, generator=self.g) * (hi - lo) + lo

    def signed(self, shape, lo, hi):
        """|x| in [lo, hi], random sign: keeps x away from a kink at 0."""
        mag = self.uniform(shape, lo, hi)
        sign = torch.where(torch.rand(shape, generator=self.g) < 0.5, -1.0, 1.0)
        return mag * sign

    def avoid(self, shape, lo, hi, points, margin):
        """Uniform in [lo, hi] but at least margin away from each point."""
        x = self.uniform(shape, lo, hi)
        for p in points:
            near = (x - p).abs() < margin
            x = torch.where(near, torch.where(x < p, x - margin, x + margin), x)
        return x

    def distinct(self, shape, step=0.1):
        """A permutation of evenly spaced values (no ties, gaps of `step`),
        jittered by less than step/4."""
        n = math.prod(shape)
        perm = torch.randperm(n, generator=self.g).float()
        jit = torch.rand(n, generator=self.g) * (step / 4)
        return ((perm - n / 2) * step + jit).reshape(shape)

    def ints(self, shape, lo, hi):
        return torch.randint(lo, hi, shape, generator=self.g, dtype=torch.int64)


# ---------------------------------------------------------------------------
# op cases: name -> (function of torch inputs, list of inputs). The C side
# (tests/test_reference.c) has the same names with the same parameters.


def rmsnorm(x, w, eps):
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * w


def attention(q, k, v, causal):
    d = q.shape[-1]
    s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d)
    if causal:
        tq, tk = s.shape[-2], s.shape[-1]
        mask = torch.ones(tq, tk, dtype=torch.bool).triu(1)
        s = s.masked_fill(mask, float("-inf"))
    return torch.matmul(torch.softmax(s, -1), v)


def mm(a, b, ta, tb):
    if ta:
        a = a.transpose(-1, -2)
    if tb:
        b = b.transpose(-1, -2)
    return torch.matmul(a, b)


def build_cases():
    cases = []

    def case(name, fn, make_inputs):
        g = Gen(name)
        cases.append((name, fn, make_inputs(g)))

    # element-wise
    case("add", lambda a, b: a + b, lambda g: [g.uniform((3, 4)), g.uniform((3, 4))])
    case("add_bcast", lambda a, b: a + b, lambda g: [g.uniform((2, 1, 4)), g.uniform((3, 1))])
    case("sub", lambda a, b: a - b, lambda g: [g.uniform((3, 4)), g.uniform((4,))])
    case("sub_bcast", lambda a, b: a - b, lambda g: [g.uniform((3, 1)), g.uniform((2, 3, 4))])
    case("mul", lambda a, b: a * b, lambda g: [g.uniform((3, 4)), g.uniform((3, 4))])
    case("mul_bcast", lambda a, b: a * b, lambda g: [g.uniform((2, 1, 4)), g.uniform((3, 1))])
    case("div", lambda a, b: a / b, lambda g: [g.uniform((3, 4)), g.signed((3, 4), 0.5, 2.0)])
    case("div_bcast", lambda a, b: a / b, lambda g: [g.uniform((2, 3, 4)), g.signed((1, 4), 0.5, 2.0)])
    case("scale", lambda x: x * -1.7, lambda g: [g.uniform((3, 4))])
    case("neg", lambda x: -x, lambda g: [g.uniform((3, 4))])
    case("exp", torch.exp, lambda g: [g.uniform((3, 4), -2, 2)])
    case("log", torch.log, lambda g: [g.uniform((3, 4), 0.5, 3)])
    case("sqrt", torch.sqrt, lambda g: [g.uniform((3, 4), 0.5, 3)])
    case("abs", torch.abs, lambda g: [g.signed((3, 4), 0.2, 2)])
    case("clamp", lambda x: torch.clamp(x, -0.5, 0.7), lambda g: [g.avoid((4, 5), -1, 1, [-0.5, 0.7], 0.05)])
    case("relu", F.relu, lambda g: [g.signed((3, 4), 0.1, 2)])
    case("leaky_relu", lambda x: F.leaky_relu(x, 0.1), lambda g: [g.signed((3, 4), 0.1, 2)])
    case("gelu", F.gelu, lambda g: [g.uniform((3, 5), -3, 3)])
    case("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), lambda g: [g.uniform((3, 5), -3, 3)])
    case("silu", F.silu, lambda g: [g.uniform((3, 5), -4, 4)])
    case("sigmoid", torch.sigmoid, lambda g: [g.uniform((3, 5), -4, 4)])
    case("tanh", torch.tanh, lambda g: [g.uniform((3, 5), -2, 2)])
    case("dropout_p0", lambda x: F.dropout(x, 0.0, training=True), lambda g: [g.uniform((3, 4))])
    # reductions and losses
    case("sum", lambda x: x.sum(1), lambda g: [g.uniform((2, 3, 4))])
    case("sum_keepdim", lambda x: x.sum(-1, keepdim=True), lambda g: [g.uniform((2, 3, 4))])
    case("sum_all", lambda x: x.sum(), lambda g: [g.uniform((3, 4))])
    case("mean", lambda x: x.mean(0), lambda g: [g.uniform((2, 3, 4))])
    case("mean_keepdim", lambda x: x.mean(1, keepdim=True), lambda g: [g.uniform((2, 3, 4))])
    case("mean_all", lambda x: x.mean(), lambda g: [g.uniform((3, 4))])
    case("max", lambda x: x.max(1).values, lambda g: [g.distinct((2, 5, 3))])
    case("max_keepdim", lambda x: x.max(-1, keepdim=True).values, lambda g: [g.distinct((3, 6))])
    case("max_all", lambda x: x.max(), lambda g: [g.distinct((3, 4))])
    case("softmax", lambda x: torch.softmax(x, -1), lambda g: [g.uniform((3, 5), -2, 2)])
    case("softmax_axis0", lambda x: torch.softmax(x, 0), lambda g: [g.uniform((4, 3), -2, 2)])
    case("log_softmax", lambda x: torch.log_softmax(x, -1), lambda g: [g.uniform((3, 5), -2, 2)])
    case("log_softmax_axis1", lambda x: torch.log_softmax(x, 1), lambda g: [g.uniform((2, 4, 3), -2, 2)])
    case("cross_entropy", lambda x, y: F.cross_entropy(x, y),
         lambda g: [g.uniform((6, 5), -2, 2), g.ints((6,), 0, 5)])
    case("cross_entropy_smooth_ignore", lambda x, y: F.cross_entropy(x, y, ignore_index=2, label_smoothing=0.1),
         lambda g: [g.uniform((8, 5), -2, 2), torch.tensor([0, 2, 4, 1, 2, 3, 0, 4])])
    case("mse", F.mse_loss, lambda g: [g.uniform((3, 4)), g.uniform((3, 4))])
    # shapes
    case("reshape", lambda x: x.reshape(4, 6), lambda g: [g.uniform((2, 3, 4))])
    case("permute", lambda x: x.permute(2, 0, 1), lambda g: [g.uniform((2, 3, 4))])
    case("transpose", lambda x: x.transpose(0, 2), lambda g: [g.uniform((2, 3, 4))])
    case("concat", lambda a, b, c: torch.cat([a, b, c], 1),
         lambda g: [g.uniform((2, 3)), g.uniform((2, 1)), g.uniform((2, 2))])
    case("concat_axis0", lambda a, b: torch.cat([a, b], 0), lambda g: [g.uniform((1, 2, 3)), g.uniform((2, 2, 3))])
    case("slice", lambda x: x.narrow(1, 1, 2), lambda g: [g.uniform((3, 4))])
    case("embedding", lambda w, ids: F.embedding(ids, w),
         lambda g: [g.uniform((5, 3)), torch.tensor([[0, 3, 3], [4, 1, 0]])])
    # products
    case("matmul", lambda a, b: mm(a, b, False, False), lambda g: [g.uniform((3, 4)), g.uniform((4, 5))])
    case("matmul_ta", lambda a, b: mm(a, b, True, False), lambda g: [g.uniform((4, 3)), g.uniform((4, 5))])
    case("matmul_tb", lambda a, b: mm(a, b, False, True), lambda g: [g.uniform((3, 4)), g.uniform((5, 4))])
    case("matmul_batched", lambda a, b: mm(a, b, False, False),
         lambda g: [g.uniform((2, 3, 4)), g.uniform((2, 4, 5))])
    case("matmul_batched_tatb", lambda a, b: mm(a, b, True, True),
         lambda g: [g.uniform((2, 4, 3)), g.uniform((2, 5, 4))])
    case("matmul_shared_b", lambda a, b: mm(a, b, False, True),
         lambda g: [g.uniform((2, 2, 3, 4)), g.uniform((5, 4))])
    case("linear", F.linear, lambda g: [g.uniform((3, 4)), g.uniform((5, 4)), g.uniform((5,))])
    case("linear_nobias", lambda x, w: F.linear(x, w), lambda g: [g.uniform((3, 4)), g.uniform((5, 4))])
    case("linear_3d", F.linear, lambda g: [g.uniform((2, 3, 4)), g.uniform((5, 4)), g.uniform((5,))])
    # norms
    case("layernorm", lambda x, w, b: F.layer_norm(x, (6,), w, b, 1e-5),
         lambda g: [g.uniform((3, 6), -2, 2), g.uniform((6,), 0.5, 1.5), g.uniform((6,))])
    case("rmsnorm", lambda x, w: rmsnorm(x, w, 1e-6), lambda g: [g.uniform((3, 6), -2, 2), g.uniform((6,), 0.5, 1.5)])
    # convolution and pooling
    case("conv2d", lambda x, w, b: F.conv2d(x, w, b),
         lambda g: [g.uniform((2, 3, 5, 5)), g.uniform((4, 3, 3, 3)), g.uniform((4,))])
    case("conv2d_stride_pad", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1),
         lambda g: [g.uniform((2, 3, 6, 5)), g.uniform((4, 3, 3, 3)), g.uniform((4,))])
    case("conv2d_dilation", lambda x, w: F.conv2d(x, w, None, padding=2, dilation=2),
         lambda g: [g.uniform((1, 2, 6, 6)), g.uniform((3, 2, 3, 3))])
    case("conv2d_groups", lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=(1, 0), groups=2),
         lambda g: [g.uniform((2, 4, 5, 5)), g.uniform((6, 2, 3, 2)), g.uniform((6,))])
    case("max_pool2d", lambda x: F.max_pool2d(x, 2, 2, 0), lambda g: [g.distinct((2, 2, 4, 6))])
    case("max_pool2d_pad", lambda x: F.max_pool2d(x, 3, 2, 1), lambda g: [g.distinct((1, 2, 5, 5))])
    case("avg_pool2d", lambda x: F.avg_pool2d(x, 2, 2, 0), lambda g: [g.uniform((2, 2, 4, 6))])
    case("avg_pool2d_pad", lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=True),
         lambda g: [g.uniform((1, 2, 5, 5))])
    # composites
    case("attention", lambda q, k, v: attention(q, k, v, False),
         lambda g: [g.uniform((2, 3, 4)), g.uniform((2, 5, 4)), g.uniform((2, 5, 4))])
    case("attention_causal", lambda q, k, v: attention(q, k, v, True),
         lambda g: [g.uniform((2, 4, 4)), g.uniform((2, 4, 4)), g.uniform((2, 4, 4))])
    case("attention_4d_causal", lambda q, k, v: attention(q, k, v, True),
         lambda g: [g.uniform((1, 2, 3, 4)), g.uniform((1, 2, 3, 4)), g.uniform((1, 2, 3, 4))])

    # Larger shapes: SIMD bodies and tails (lengths not multiples of 8/16),
    # rows longer than a vector, and matmul/conv shapes big enough for the
    # BLAS/oneDNN backends.
    n = 1031
    case("add_big", lambda a, b: a + b, lambda g: [g.uniform((37, 67)), g.uniform((67,))])
    case("mul_big", lambda a, b: a * b, lambda g: [g.uniform((5, 1, 67)), g.uniform((3, 67))])
    case("div_big", lambda a, b: a / b, lambda g: [g.uniform((37, 67)), g.signed((37, 1), 0.5, 2.0)])
    case("exp_big", torch.exp, lambda g: [g.uniform((n,), -2, 2)])
    case("log_big", torch.log, lambda g: [g.uniform((n,), 0.5, 3)])
    case("sqrt_big", torch.sqrt, lambda g: [g.uniform((n,), 0.5, 3)])
    case("abs_big", torch.abs, lambda g: [g.signed((n,), 0.05, 2)])
    case("clamp_big", lambda x: torch.clamp(x, -0.5, 0.7), lambda g: [g.avoid((n,), -1, 1, [-0.5, 0.7], 0.01)])
    case("relu_big", F.relu, lambda g: [g.signed((n,), 0.05, 2)])
    case("leaky_relu_big", lambda x: F.leaky_relu(x, 0.1), lambda g: [g.signed((n,), 0.05, 2)])
    case("gelu_big", F.gelu, lambda g: [g.uniform((n,), -5, 5)])
    case("gelu_tanh_big", lambda x: F.gelu(x, approximate="tanh"), lambda g: [g.uniform((n,), -5, 5)])
    case("silu_big", F.silu, lambda g: [g.uniform((n,), -8, 8)])
    case("sigmoid_big", torch.sigmoid, lambda g: [g.uniform((n,), -8, 8)])
    case("tanh_big", torch.tanh, lambda g: [g.uniform((n,), -4, 4)])
    case("sum_big", lambda x: x.sum(-1), lambda g: [g.uniform((13, 129))])
    case("mean_big", lambda x: x.mean(0), lambda g: [g.uniform((129, 7))])
    case("max_big", lambda x: x.max(1).values, lambda g: [g.distinct((11, 65), 0.01)])
    case("sum_all_big", lambda x: x.sum(), lambda g: [g.uniform((n,))])
    case("mean_all_big", lambda x: x.mean(), lambda g: [g.uniform((n,))])
    case("max_all_big", lambda x: x.max(), lambda g: [g.distinct((n,), 0.01)])
    case("softmax_big", lambda x: torch.softmax(x, -1), lambda g: [g.uniform((7, 131), -4, 4)])
    case("softmax_big_axis0", lambda x: torch.softmax(x, 0), lambda g: [g.uniform((131, 7), -4, 4)])
    case("log_softmax_big", lambda x: torch.log_softmax(x, -1), lambda g: [g.uniform((5, 100), -4, 4)])
    case("cross_entropy_big", lambda x, y: F.cross_entropy(x, y),
         lambda g: [g.uniform((64, 10), -3, 3), g.ints((64,), 0, 10)])
    case("cross_entropy_big_smooth_ignore", lambda x, y: F.cross_entropy(x, y, ignore_index=5, label_smoothing=0.2),
         lambda g: [g.uniform((37, 100), -3, 3), g.ints((37,), 0, 10)])
    case("mse_big", F.mse_loss, lambda g: [g.uniform((37, 67)), g.uniform((37, 67))])
    case("permute_big", lambda x: x.permute(3, 1, 0, 2), lambda g: [g.uniform((5, 6, 7, 8))])
    case("slice_big", lambda x: x.narrow(1, 3, 47), lambda g: [g.uniform((37, 67))])
    case("embedding_big", lambda w, ids: F.embedding(ids, w), lambda g: [g.uniform((50, 33)), g.ints((4, 17), 0, 50)])
    case("layernorm_big", lambda x, w, b: F.layer_norm(x, (70,), w, b, 1e-5),
         lambda g: [g.uniform((9, 70), -2, 2), g.uniform((70,), 0.5, 1.5), g.uniform((70,))])
    case("rmsnorm_big", lambda x, w: rmsnorm(x, w, 1e-6), lambda g: [g.uniform((9, 70), -2, 2), g.uniform((70,), 0.5, 1.5)])
    case("matmul_big", lambda a, b: mm(a, b, False, False), lambda g: [g.uniform((33, 70)), g.uniform((70, 40))])
    case("matmul_big_batched_tatb", lambda a, b: mm(a, b, True, True),
         lambda g: [g.uniform((2, 70, 33)), g.uniform((2, 40, 70))])
    case("linear_big", F.linear, lambda g: [g.uniform((64, 100)), g.uniform((48, 100)), g.uniform((48,))])
    case("conv2d_big", lambda x, w, b: F.conv2d(x, w, b, padding=1),
         lambda g: [g.uniform((2, 8, 12, 12)), g.uniform((16, 8, 3, 3)), g.uniform((16,))])
    case("conv2d_big_groups", lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, groups=4),
         lambda g: [g.uniform((2, 8, 10, 10)), g.uniform((16, 2, 3, 3)), g.uniform((16,))])
    case("max_pool2d_big", lambda x: F.max_pool2d(x, 2, 2, 0), lambda g: [g.distinct((2, 8, 12, 12), 0.01)])
    case("avg_pool2d_big", lambda x: F.avg_pool2d(x, 3, 2, 1, count_include_pad=True),
         lambda g: [g.uniform((2, 8, 12, 12))])
    case("attention_big_causal", lambda q, k, v: attention(q, k, v, True),
         lambda g: [g.uniform((2, 16, 32)), g.uniform((2, 16, 32)), g.uniform((2, 16, 32))])
    case("attention_big_cross", lambda q, k, v: attention(q, k, v, False),
         lambda g: [g.uniform((2, 2, 9, 32)), g.uniform((2, 2, 40, 32)), g.uniform((2, 2, 40, 32))])
    return cases


def make_ops():
    tensors = []
    for name, fn, inputs in build_cases():
        g = Gen(name + ".R")
        xs = []
        for i, x in enumerate(inputs):
            if x.dtype == torch.int64:
                tensors.append((f"{name}.in{i}", x.to(torch.int32)))
                xs.append(x)
            else:
                x = x.float()
                tensors.append((f"{name}.in{i}", x))
                xs.append(x.double().requires_grad_(True))
        out = fn(*xs)
        r = g.uniform(tuple(out.shape)).float()
        (out * r.double()).sum().backward()
        tensors.append((f"{name}.R", r))
        tensors.append((f"{name}.out", out.detach().float()))
        for i, x in enumerate(xs):
            if x.dtype == torch.float64:
                tensors.append((f"{name}.grad{i}", x.grad.float()))
    path = os.path.join(HERE, "ops.safetensors")
    n = save_safetensors(path, tensors, metadata("op cases: <case>.in<i>, .R, .out, .grad<i>; float64 math"))
    print(f"{path}: {len(tensors)} tensors, {n} bytes")


# ---------------------------------------------------------------------------
# MLP optimizer trajectories

MLP_SIZES = [784, 512, 512, 10]
STEPS = 10
BATCH = 32
SAMPLE_STRIDE = 61  # large weights: final values stored at flat indices 0, 61, 122, ...
OPTIMIZERS = {
    "sgd_momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    "sgd_nesterov_wd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=0.01),
}


def make_mlp(dtype=torch.float32):
    layers = []
    for i in range(len(MLP_SIZES) - 1):
        layers.append(torch.nn.Linear(MLP_SIZES[i], MLP_SIZES[i + 1]))
        if i < len(MLP_SIZES) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).to(dtype)


def initial_weights():
    """PyTorch's default init (seed 0), snapped to int8 codes times a float32
    scale per tensor so the file stays small: weight = float(code) * scale
    exactly, in float32 on both sides."""
    torch.manual_seed(0)
    model = make_mlp()
    init = {}
    for name, p in model.named_parameters():
        fan_in = p.shape[1] if p.dim() == 2 else MLP_SIZES[int(name.split(".")[0]) // 2]
        scale = torch.tensor(1.0 / math.sqrt(fan_in) / 127.0, dtype=torch.float32)
        codes = torch.round(p.detach() / scale).clamp(-127, 127).to(torch.int8)
        init[name] = (codes, scale)
    return init


def run_trajectory(opt_name, init, x, y, dtype):
    model = make_mlp(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            codes, scale = init[name]
            p.copy_((codes.to(torch.float32) * scale).to(dtype))
    opt = OPTIMIZERS[opt_name](model.parameters())
    losses = []
    for _ in range(STEPS):
        opt.zero_grad()
        loss = F.cross_entropy(model(x.to(dtype)), y)
        losses.append(loss.item())
        loss.backward()
        opt.step()
    return losses, dict(model.named_parameters())


def make_mlp_optim():
    init = initial_weights()
    g = torch.Generator().manual_seed(1234)
    x_u8 = torch.randint(0, 256, (BATCH, MLP_SIZES[0]), generator=g, dtype=torch.int64).to(torch.uint8)
    y = torch.randint(0, 10, (BATCH,), generator=g, dtype=torch.int64)
    x = x_u8.to(torch.float32) / 255.0  # as the Fashion-MNIST loader scales pixels
    tensors = [("x_u8", x_u8), ("labels", y.to(torch.int32))]
    for name, (codes, scale) in init.items():
        tensors.append((f"init.{name}.codes", codes))
        tensors.append((f"init.{name}.scale", scale.reshape(1)))
    for opt_name in OPTIMIZERS:
        losses, params = run_trajectory(opt_name, init, x, y, torch.float32)
        losses64, params64 = run_trajectory(opt_name, init, x, y, torch.float64)
        rel = max(abs(a - b) / abs(b) for a, b in zip(losses, losses64))
        wdev = max(((params[n].double() - params64[n]).abs().max().item()) for n in params)
        print(f"{opt_name:16s} losses {losses[0]:.6f} .. {losses[-1]:.6f}; "
              f"float32 vs float64: loss rel {rel:.2e}, weight abs {wdev:.2e}")
        tensors.append((f"{opt_name}.losses", torch.tensor(losses, dtype=torch.float32)))
        for name, p in params.items():
            flat = p.detach().reshape(-1)
            if flat.numel() > 8192:
                tensors.append((f"{opt_name}.final.{name}.sample", flat[::SAMPLE_STRIDE].clone()))
            else:
                tensors.append((f"{opt_name}.final.{name}", p.detach().clone()))
    path = os.path.join(HERE, "mlp_optim.safetensors")
    meta = metadata("MLP 784-512-512-10 ReLU; init.<param>.codes * scale; x = x_u8/255; "
                    "<opt>.losses (10 steps, loss before each step); <opt>.final.<param>[.sample]")
    meta["sample_stride"] = str(SAMPLE_STRIDE)
    meta["optimizers"] = ("sgd_momentum: SGD(lr=0.05, momentum=0.9); "
                          "sgd_nesterov_wd: SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01); "
                          "adam: Adam(lr=1e-3); adamw: AdamW(lr=1e-3, weight_decay=0.01)")
    n = save_safetensors(path, tensors, meta)
    print(f"{path}: {len(tensors)} tensors, {n} bytes")


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    make_ops()
    make_mlp_optim()
