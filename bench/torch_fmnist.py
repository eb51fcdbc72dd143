#!/usr/bin/python3
"""torch_fmnist.py - the PyTorch baseline for examples/fmnist_mlp.c and
examples/fmnist_cnn.c: the same models, trained with the same settings
(pixels/255, batch 128, Adam lr 1e-3, shuffled every epoch, mean
cross-entropy, PyTorch's default initialisation) on the same gzipped IDX
files, read with gzip + numpy. Prints per-epoch train loss, test accuracy and
seconds, and the process's peak RSS.

Run it with Debian's python (python3-torch 1.13, python3-numpy):

    /usr/bin/python3 bench/torch_fmnist.py --model mlp --epochs 5
    /usr/bin/python3 bench/torch_fmnist.py --model cnn --epochs 3
    /usr/bin/python3 bench/torch_fmnist.py --model mlp --best   # fastest thread setting
    /usr/bin/python3 bench/torch_fmnist.py --model cnn --best-args   # its flags, e.g. "--threads 2"

Threads. By default PyTorch on this machine runs its OpenMP pool and
OpenBLAS's pthread pool side by side and they spin against each other on the
2 cores. --threads N sets torch.set_num_threads(N); --blas-threads N sets
OPENBLAS_NUM_THREADS; --passive sets OMP_WAIT_POLICY=PASSIVE. --best times a
few training steps under each setting in a child process and then trains with
the fastest, so the comparison is with PyTorch at its best, not its default.
"""
import argparse
import gzip
import os
import resource
import subprocess
import sys
import time

DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"

# name -> (torch threads, OPENBLAS_NUM_THREADS, OMP_WAIT_POLICY); None = unset
SETTINGS = {
    "default": (None, None, None),
    "torch2": (2, None, None),
    "torch2-passive": (2, None, "PASSIVE"),
    "torch1-blas2": (1, 2, None),
    "torch2-blas1": (2, 1, None),
    "torch1-blas1": (1, 1, None),
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["mlp", "cnn"], default="mlp")
    p.add_argument("--epochs", type=int, default=None, help="default: 5 (mlp), 3 (cnn)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optim", choices=["adam", "adamw", "sgd"], default="adam",
                   help="sgd uses momentum 0.9, as the C examples do")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--blas-threads", type=int, default=None, help="OPENBLAS_NUM_THREADS")
    p.add_argument("--passive", action="store_true", help="OMP_WAIT_POLICY=PASSIVE")
    p.add_argument("--data", default=os.environ.get("BG_FMNIST_DIR") or DEFAULT_DIR)
    p.add_argument("--best", action="store_true",
                   help="probe the thread settings, then train with the fastest")
    p.add_argument("--best-args", action="store_true",
                   help="probe the thread settings, print the fastest one's flags and exit")
    p.add_argument("--probe-steps", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.epochs is None:
        a.epochs = 5 if a.model == "mlp" else 3
    return a


def apply_env(a):
    # Must happen before torch (and its OpenBLAS) is loaded.
    if a.blas_threads is not None:
        os.environ["OPENBLAS_NUM_THREADS"] = str(a.blas_threads)
    if a.passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def read_idx(path, magic, header_len):
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        sys.exit(f"torch_fmnist: cannot open {path}; install the Debian package dataset-fashion-mnist")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        sys.exit(f"torch_fmnist: {path}: magic 0x{got:08x}, want 0x{magic:08x}")
    return raw, header_len


def load_split(np, data_dir, prefix):
    raw, h = read_idx(f"{data_dir}/{prefix}-images-idx3-ubyte.gz", 0x803, 16)
    n, rows, cols = (int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(3))
    images = np.frombuffer(raw, dtype=np.uint8, offset=h).reshape(n, rows * cols)
    raw, h = read_idx(f"{data_dir}/{prefix}-labels-idx1-ubyte.gz", 0x801, 8)
    labels = np.frombuffer(raw, dtype=np.uint8, offset=h)
    assert len(labels) == n, "image and label counts differ"
    # pixels/255 in float32, exactly as bitgrad's batcher (and ToTensor) does.
    return images.astype(np.float32) / np.float32(255), labels.astype(np.int64)


def build(nn, model):
    if model == "mlp":
        return nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                             nn.Linear(512, 10))
    return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))


def make_optim(torch, params, a):
    if a.optim == "sgd":
        return torch.optim.SGD(params, lr=a.lr, momentum=0.9)
    if a.optim == "adamw":
        return torch.optim.AdamW(params, lr=a.lr)
    return torch.optim.Adam(params, lr=a.lr)


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train(a):
    apply_env(a)
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    if a.threads is not None:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    xtr, ytr = load_split(np, a.data, "train")
    xte, yte = load_split(np, a.data, "t10k")
    shape = (-1, 784) if a.model == "mlp" else (-1, 1, 28, 28)
    xtr, ytr = torch.from_numpy(xtr).reshape(shape), torch.from_numpy(ytr)
    xte, yte = torch.from_numpy(xte).reshape(shape), torch.from_numpy(yte)
    model = build(nn, a.model)
    opt = make_optim(torch, model.parameters(), a)
    gen = torch.Generator().manual_seed(a.seed)
    n = xtr.shape[0]

    def step(idx):
        loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
        opt.zero_grad(set_to_none=False)
        loss.backward()
        opt.step()
        return loss

    if a.probe_steps:
        # Timing probe for --best: median step time after a warm-up.
        perm = torch.randperm(n, generator=gen)
        times = []
        for i in range(10 + a.probe_steps):
            idx = perm[(i * a.batch) % (n - a.batch):][:a.batch]
            t0 = time.perf_counter()
            step(idx)
            times.append(time.perf_counter() - t0)
        times = sorted(times[10:])
        print(f"probe_ms {1e3 * times[len(times) // 2]:.3f}")
        return

    nparams = sum(p.numel() for p in model.parameters())
    print(f"torch_fmnist: {a.model}, {nparams} parameters; {a.optim} lr {a.lr:g}, batch {a.batch}, "
          f"seed {a.seed}; torch {torch.__version__}, {torch.get_num_threads()} torch threads, "
          f"OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}", flush=True)
    acc = 0.0
    for epoch in range(a.epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, generator=gen)
        loss_sum = 0.0
        for i in range(0, n, a.batch):
            idx = perm[i:i + a.batch]
            loss = step(idx)
            loss_sum += loss.item() * len(idx)
        t1 = time.perf_counter()
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, xte.shape[0], 1000):
                correct += (model(xte[i:i + 1000]).argmax(1) == yte[i:i + 1000]).sum().item()
        t2 = time.perf_counter()
        acc = correct / xte.shape[0]
        print(f"epoch {epoch + 1}/{a.epochs}  train loss {loss_sum / n:.4f}  test acc {100 * acc:.2f}%  "
              f"{t2 - t0:.2f} s (train {t1 - t0:.2f} s, test {t2 - t1:.2f} s)", flush=True)
    print(f"final test accuracy {100 * acc:.2f}%; peak RSS {peak_rss_mib():.1f} MiB")


def setting_args(name):
    threads, blas, policy = SETTINGS[name]
    out = []
    if threads is not None:
        out += ["--threads", str(threads)]
    if blas is not None:
        out += ["--blas-threads", str(blas)]
    if policy is not None:
        out += ["--passive"]
    return out


def best(a, argv):
    # Drop the flags that --best chooses itself, then probe each setting.
    base, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in ("--threads", "--blas-threads"):
            skip = True
            continue
        if arg in ("--best", "--best-args", "--passive") or arg.startswith(("--threads=", "--blas-threads=")):
            continue
        base.append(arg)
    # Two passes over the settings, each keeping its faster probe: one probe
    # can land on a moment of noise.
    results = {}
    for _ in range(2):
        for name in SETTINGS:
            cmd = [sys.executable, os.path.abspath(__file__)] + base + setting_args(name) + ["--probe-steps", "60"]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            ms = float(out.split("probe_ms")[1].split()[0])
            results[name] = min(ms, results.get(name, ms))
    for name, ms in results.items():
        print(f"probe {name:14s} {ms:8.2f} ms/step", flush=True, file=sys.stderr if a.best_args else sys.stdout)
    fastest = min(results, key=results.get)
    print(f"fastest setting: {fastest} ({results[fastest]:.2f} ms/step; default "
          f"{results['default']:.2f} ms/step)", flush=True, file=sys.stderr if a.best_args else sys.stdout)
    if a.best_args:
        print(" ".join(setting_args(fastest)))
        return
    cmd = [sys.executable, os.path.abspath(__file__)] + base + setting_args(fastest)
    sys.exit(subprocess.run(cmd).returncode)


def main():
    argv = sys.argv[1:]
    a = parse_args(argv)
    if a.best or a.best_args:
        best(a, argv)
    else:
        train(a)


if __name__ == "__main__":
    main()
