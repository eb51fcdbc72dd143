#!/usr/bin/python3
"""PyTorch golden references for bitgrad's distillation losses (tests/test_distill.c).

Run with Debian's python3-torch (1.13):
    /usr/bin/python3 tests/reference/make_distill_reference.py

Writes distill.safetensors next to this script:
  kd.student, kd.teacher  logits [N,C] (F32), kd.labels [N] (I32)
  kd.T<T>_a<A>.loss       [1] Hinton KD loss
                          (1-a)*cross_entropy(s, y) + a*T*T*KLDivLoss(batchmean)(
                              log_softmax(s/T), softmax(t/T))
  kd.T<T>_a<A>.dstudent   [N,C] its gradient w.r.t. the student logits
for T in {1, 4} and a in {0, 5, 10} (tenths: alpha 0, 0.5, 1).

The safetensors format is written with struct + json: 8-byte little-endian
header length, a JSON header padded with spaces to a multiple of 8, then the
raw little-endian data. __metadata__ records torch's version and REF_VERSION
(bump it when the contents change; the C test checks it).
"""
import os

import torch
from st_writer import write_safetensors  # noqa: E402
import torch.nn.functional as F

REF_VERSION = "1"
HERE = os.path.dirname(os.path.abspath(__file__))




def kd_loss(s, t, y, T, alpha):
    hard = F.cross_entropy(s, y)
    soft = torch.nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1))
    return (1 - alpha) * hard + alpha * T * T * soft


def main():
    g = torch.Generator().manual_seed(0)
    N, C = 6, 10
    student = torch.randn(N, C, generator=g) * 2.0
    teacher = torch.randn(N, C, generator=g) * 3.0
    labels = torch.randint(0, C, (N,), generator=g)
    items = [("kd.student", student), ("kd.teacher", teacher), ("kd.labels", labels.to(torch.int32))]
    for T in (1, 4):
        for a10 in (0, 5, 10):
            s = student.clone().requires_grad_(True)
            t = teacher.clone().requires_grad_(True)
            loss = kd_loss(s, t.detach(), labels, float(T), a10 / 10.0)
            loss.backward()
            assert t.grad is None
            items.append((f"kd.T{T}_a{a10}.loss", loss.detach().reshape(1)))
            items.append((f"kd.T{T}_a{a10}.dstudent", s.grad))
    write_safetensors(os.path.join(HERE, "distill.safetensors"), items,
                      {"torch": torch.__version__, "version": REF_VERSION,
                       "generator": "tests/reference/make_distill_reference.py"})


if __name__ == "__main__":
    main()
