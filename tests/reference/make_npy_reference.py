#!/usr/bin/python3
"""make_npy_reference.py — small .npy files written by Debian's numpy
(/usr/bin/python3, python3-numpy) for tests/test_npy.c and the seed corpus of
tests/fuzz/fuzz_npy.c: one file of every dtype the reader takes, version 2.0
and 3.0 headers, the files it must refuse (Fortran order, big-endian, an
unsupported dtype) and damaged copies (truncated, bad magic, bad header).

    /usr/bin/python3 tests/reference/make_npy_reference.py

The values are fixed (no randomness): the C test checks them exactly."""
import io
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "npy")


def save(name, a, version=None):
    with open(os.path.join(OUT, name), "wb") as f:
        if version is None:
            np.save(f, a)
        else:
            np.lib.format.write_array(f, a, version=version)


def save_raw(name, data):
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)


def npy_bytes(a):
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def main():
    os.makedirs(OUT, exist_ok=True)
    f4 = np.array([[0.0, -1.5, 3.25], [1e-7, 65504.0, -(2.0 ** -130)]], dtype=np.float32)
    save("f4.npy", f4)
    save("f8.npy", np.array([0.1, -2.5, 1e300, 3.0], dtype=np.float64))
    save("u1.npy", (np.arange(12, dtype=np.int64) * 23 % 256).astype(np.uint8).reshape(2, 2, 3))
    save("i4.npy", np.array([0, -1, 7, 2 ** 31 - 1, -(2 ** 31)], dtype=np.int32))
    save("i8.npy", np.array([[0, -1], [2 ** 31 - 1, -(2 ** 31)], [7, 9]], dtype=np.int64))
    save("i8_big.npy", np.array([1, 2 ** 40], dtype=np.int64))
    save("scalar.npy", np.array(2.5, dtype=np.float32))
    save("empty.npy", np.zeros((0, 3), dtype=np.float32))
    save("v2.npy", f4, version=(2, 0))
    save("v3.npy", np.arange(6, dtype=np.int32).reshape(3, 2), version=(3, 0))
    # '<u1' (numpy writes '|u1'; other writers may say '<u1').
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(b, {"descr": "<u1", "fortran_order": False, "shape": (3,)})
    save_raw("u1_le.npy", b.getvalue() + bytes([1, 2, 255]))
    # Refused.
    save("fortran.npy", np.asfortranarray(f4))
    save("big_endian.npy", f4.astype(">f4"))
    save("f2.npy", np.array([1.0, 2.0], dtype=np.float16))
    good = npy_bytes(f4)
    save_raw("truncated.npy", good[:-4])
    save_raw("bad_magic.npy", b"\x93NUMPZ" + good[6:])
    save_raw("bad_header.npy", good.replace(b"'shape': (2, 3)", b"'shape': [2, 3]"))
    # A dataset: u8 images [6,1,2,2] with int64 labels, f32 features [5,3] with int32 labels.
    save("x_u8.npy", (np.arange(24, dtype=np.int64) * 11 % 256).astype(np.uint8).reshape(6, 1, 2, 2))
    save("y_i8.npy", np.array([0, 1, 2, 1, 0, 3], dtype=np.int64))
    save("x_f4.npy", (np.arange(15, dtype=np.float32) / 4 - 1).reshape(5, 3))
    save("y_i4.npy", np.array([1, 0, 1, 1, 0], dtype=np.int32))


if __name__ == "__main__":
    main()
