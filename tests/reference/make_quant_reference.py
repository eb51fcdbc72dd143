#!/usr/bin/python3
"""PyTorch golden references for bitgrad's fake quantization (tests/test_fake_quant.c).

Run with Debian's python3-torch (1.13):
    /usr/bin/python3 tests/reference/make_quant_reference.py

Writes quant.safetensors next to this script:
  pt.<case>.*   torch.fake_quantize_per_tensor_affine: x, y, mask (= dy/dx for
                dy = 1), codes (the integers behind y), and the case's scale,
                zero point, qmin, qmax. Inputs hold exact .5 ties of x/s,
                near-ties (s not a power of two), out-of-range values, +-0.
  pc.<case>.*   torch.fake_quantize_per_channel_affine (axis 0 and the last
                axis): x, scale [C], zp [C] (I32), y, mask, codes.
  lq.<case>.*   torch._fake_quantize_learnable_per_tensor_affine: x, dy,
                scale, zero point (a float; non-integer and tie values), qmin,
                qmax, grad_factor, y and the gradients dx, dscale, dzp for dy.
  obs.<case>.*  torch.ao observers after a few batches (MinMax, moving
                average, per channel): the batches and the scale / zero point.

The safetensors format is written here with struct + json: 8-byte little-endian
header length, a JSON header padded with spaces to a multiple of 8, then the
raw little-endian data. __metadata__ records torch's version and REF_VERSION
(bump it when the contents change; the C test checks it).
"""
import math
import os

import torch
from st_writer import write_safetensors  # noqa: E402

REF_VERSION = "1"
HERE = os.path.dirname(os.path.abspath(__file__))




def f32(v):
    return torch.tensor(v, dtype=torch.float32)


def inputs(s, qmin, qmax, n_rand, gen):
    """Exact ties (k + 1/2)*s over and beyond the code range, halves k/2*s, random
    values, values far out of range, and both zeros."""
    span = qmax - qmin
    k = torch.arange(qmin - 6, qmax + 6, dtype=torch.float32)
    k = k[torch.linspace(0, len(k) - 1, min(len(k), 48)).long()]
    ties = (k + 0.5) * s
    halves = (torch.arange(-12, 13, dtype=torch.float32) / 2) * s
    rnd = (torch.rand(n_rand, generator=gen) * (span + 20) + qmin - 10) * s
    far = f32([(qmax + 1000) * s, (qmin - 1000) * s, 0.0, -0.0])
    x = torch.cat([ties, halves, rnd, far]).to(torch.float32)
    return x[torch.randperm(len(x), generator=gen)]


def codes_of(y, s, zp):
    """The integer code behind each dequantized value: y = (code - zp)*s exactly up to
    the product's rounding, so round(y/s) in double recovers it."""
    return (torch.round(y.double() / float(s)) + zp).to(torch.int32)


def mask_of(fn, x):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    y.backward(torch.ones_like(y))
    return y.detach(), (x.grad != 0).to(torch.uint8)


def main():
    gen = torch.Generator().manual_seed(1234)
    items = []

    # --- per tensor -------------------------------------------------------
    # (name, scale, zero point, qmin, qmax); s = 0.1 and 1/3 give near-ties.
    per_tensor = [
        ("int8_sym", 0.25, 0, -128, 127),
        ("uint8_zp", 0.1, 3, 0, 255),
        ("int4", 0.0625, 0, -8, 7),
        ("int8_third", 1.0 / 3.0, -2, -128, 127),
        ("int2", 0.5, 0, -2, 1),
        ("uint4_zp", 0.2, 7, 0, 15),
    ]
    for name, s, zp, qmin, qmax in per_tensor:
        s = float(torch.tensor(s, dtype=torch.float32))   # the float32 the C side uses
        x = inputs(s, qmin, qmax, 96, gen)
        y, mask = mask_of(lambda t: torch.fake_quantize_per_tensor_affine(t, s, zp, qmin, qmax), x)
        p = "pt." + name
        items += [(p + ".x", x), (p + ".y", y), (p + ".mask", mask), (p + ".codes", codes_of(y, s, zp)),
                  (p + ".scale", f32([s])), (p + ".zp", torch.tensor([zp], dtype=torch.int32)),
                  (p + ".qrange", torch.tensor([qmin, qmax], dtype=torch.int32))]
        if qmax - qmin == 255:   # torch's own quantizer, a second source for the codes
            dtype = torch.qint8 if qmin < 0 else torch.quint8
            q = torch.quantize_per_tensor(x, s, zp, dtype).int_repr().to(torch.int32)
            assert torch.equal(q, codes_of(y, s, zp)), name

    # --- per channel --------------------------------------------------------
    per_channel = [
        # (name, shape, axis, scales, zps, qmin, qmax)
        ("axis0", (3, 2, 37), 0, [0.25, 0.1, 0.05], [0, 3, -4], -128, 127),
        ("last", (29, 4), 1, [0.5, 0.125, 1.0 / 3.0, 0.02], [0, 1, 2, 10], 0, 255),
        ("int4_mid", (2, 5, 9), 1, [0.25, 0.5, 0.125, 0.2, 0.0625], [0, 0, 0, 0, 0], -8, 7),
    ]
    for name, shape, axis, scales, zps, qmin, qmax in per_channel:
        sc = f32(scales)
        zp = torch.tensor(zps, dtype=torch.int32)
        # per-channel inputs: ties at each channel's own scale
        C = shape[axis]
        n = math.prod(shape)
        x = torch.empty(shape)
        xm = x.movedim(axis, -1)
        for c in range(C):
            v = inputs(float(sc[c]), qmin, qmax, 64, gen)
            idx = torch.randint(0, len(v), (n // C,), generator=gen)
            xm[..., c] = v[idx].reshape(xm[..., c].shape)
        y, mask = mask_of(lambda t: torch.fake_quantize_per_channel_affine(t, sc, zp, axis, qmin, qmax), x)
        bshape = [1] * len(shape)
        bshape[axis] = C
        codes = (torch.round(y.double() / sc.double().reshape(bshape)) + zp.reshape(bshape)).to(torch.int32)
        p = "pc." + name
        items += [(p + ".x", x), (p + ".y", y), (p + ".mask", mask), (p + ".codes", codes),
                  (p + ".scale", sc), (p + ".zp", zp),
                  (p + ".qrange", torch.tensor([qmin, qmax], dtype=torch.int32)),
                  (p + ".axis", torch.tensor([axis], dtype=torch.int32))]

    # --- learnable per tensor (LSQ, LSQ+) --------------------------------------
    learnable = [
        # (name, scale, zero point (float), qmin, qmax, grad_factor or None = 1/sqrt(N*qmax))
        ("lsq_int4", 0.25, 0.0, -8, 7, None),
        ("lsqp_uint4", 0.2, 2.7, 0, 15, None),
        ("lsqp_int4_neg", 0.125, -1.6, -8, 7, 0.5),   # forward z = -2, backward trunc(-1.1) = -1
        ("lsqp_tie", 0.25, 2.5, 0, 15, 1.0),          # forward z = 2 (even), backward 3
        ("lsq_int8", 0.05, 0.0, -128, 127, None),
    ]
    for name, s, z, qmin, qmax, gf in learnable:
        x = inputs(s, qmin, qmax, 80, gen)
        n = x.numel()
        if gf is None:
            gf = 1.0 / math.sqrt(n * qmax)
        dy = torch.randn(n, generator=gen)
        xr = x.clone().requires_grad_(True)
        st = f32([s]).requires_grad_(True)
        zt = f32([z]).requires_grad_(True)
        y = torch._fake_quantize_learnable_per_tensor_affine(xr, st, zt, qmin, qmax, gf)
        y.backward(dy)
        zf = min(max(round(z), qmin), qmax)   # the forward zero point: nearbyint (Python rounds half to even)
        p = "lq." + name
        items += [(p + ".x", x), (p + ".dy", dy), (p + ".scale", f32([s])), (p + ".zp", f32([z])),
                  (p + ".qrange", torch.tensor([qmin, qmax], dtype=torch.int32)),
                  (p + ".grad_factor", f32([gf])), (p + ".y", y.detach()),
                  (p + ".codes", codes_of(y.detach(), float(st), zf)),
                  (p + ".dx", xr.grad), (p + ".dscale", st.grad), (p + ".dzp", zt.grad)]

    # --- observers ----------------------------------------------------------------
    from torch.ao.quantization.observer import (MinMaxObserver, MovingAverageMinMaxObserver,
                                                PerChannelMinMaxObserver)
    observers = [
        ("minmax_sym", lambda: MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric), (40,)),
        ("minmax_affine", lambda: MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine), (40,)),
        ("moving_affine", lambda: MovingAverageMinMaxObserver(averaging_constant=0.01, dtype=torch.quint8,
                                                              qscheme=torch.per_tensor_affine), (40,)),
        ("perchannel_sym", lambda: PerChannelMinMaxObserver(ch_axis=0, dtype=torch.qint8,
                                                            qscheme=torch.per_channel_symmetric), (3, 20)),
        ("zeros_affine", lambda: MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine), (8,)),
    ]
    for name, make, shape in observers:
        obs = make()
        batches = []
        for b in range(3):
            if name.startswith("zeros"):
                x = torch.zeros(shape)
            else:
                x = torch.randn(shape, generator=gen) * (1.0 + b) + 0.3 * b
            obs(x)
            batches.append(x)
        s, z = obs.calculate_qparams()
        p = "obs." + name
        items += [(p + ".batches", torch.stack(batches)), (p + ".scale", s.to(torch.float32).reshape(-1)),
                  (p + ".zp", z.to(torch.int32).reshape(-1))]

    meta = {"generator": "make_quant_reference.py", "version": REF_VERSION, "torch": torch.__version__}
    write_safetensors(os.path.join(HERE, "quant.safetensors"), items, meta)
    print("wrote %d tensors to quant.safetensors (torch %s)" % (len(items), torch.__version__))


if __name__ == "__main__":
    main()
