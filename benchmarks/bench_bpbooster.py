"""BP-Booster training: `train_booster` (whole fold on the device, sliced batches) vs a per-sample DataLoader loop.

    python benchmarks/bench_bpbooster.py [--n 20000] [--dim 1536] [--epochs 50] [--device auto|cpu|cuda]
                                         [--attention patch-to-prototype|literal] [--repeat 1] [--threads N]
                                         [--workers 0 [2 ...]] [--diagnostic] [--quick] [--breakdown]

Speed benchmark only, on synthetic data: X (n, dim) float32 standard normal, Y (n, 200) = X W + noise with W a
random linear map (no biology in it; the losses are printed only to show both loops trained the same model
equally far). Model as the paper's default: latent 256, 64 random prototypes, 8 heads, 200 genes, both gates.

Baseline: the straightforward loop, a `Dataset` whose `__getitem__(i)` returns `torch.from_numpy` views of one
row of the numpy arrays, `DataLoader(batch_size=128, shuffle=True, num_workers=W)` with the default collate,
each batch moved to the device, default `torch.optim.Adam`, the same losses (`model.losses`), lr and epochs.
Ours: `stbench.reducers.bpbooster.model.train_booster`, called as the reducer calls it, timed together with
copying the fold to the device. Every loop starts from the same initial weights (same seed). The loops run one
after another, in the same order in each of `--repeat` runs; each epoch is timed. The table gives seconds per
fold as the median over repeats of the sum of a loop's epochs and, more robust to other processes loading a
shared machine for part of a run, as epochs x the loop's median epoch over all repeats.

Prints a table of seconds per fold (all epochs), optimizer steps per second and the ratio baseline / ours,
plus each loop's last-epoch training losses and the losses of the trained model on the whole fold.
Writes a JSON line to benchmarks/out/bpbooster.jsonl. `--breakdown` instead times each part of a step alone.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Iterator

import numpy as np

from _results import append_result  # benchmarks/_results.py (run as python benchmarks/<file>.py)

GENES = 200
BATCH = 128


def make_data(n: int, dim: int, genes: int = GENES, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random X (n, dim) float32 and Y = X W + noise (n, genes): a speed benchmark's data, nothing more."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, dim), dtype=np.float32)
    W = (rng.standard_normal((dim, genes), dtype=np.float32) / np.sqrt(dim)).astype(np.float32)
    Y = X @ W + 0.1 * rng.standard_normal((n, genes), dtype=np.float32)
    return X, Y.astype(np.float32)


def build_model(dim: int, attention: str, device, seed: int):
    import torch

    from stbench.reducers.bpbooster.model import BoosterConfig, BPBoosterModule

    torch.manual_seed(seed)
    cfg = BoosterConfig(in_dim=dim, latent_dim=256, n_genes=GENES, n_prototypes=64, heads=8, attention=attention,
                        prototype_gate=True, dim_gate=True)
    return BPBoosterModule(cfg).to(device)


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def spots_dataset(X: np.ndarray, Y: np.ndarray):
    """Per-sample `Dataset` over the numpy arrays: what a straightforward training script uses."""
    import torch
    from torch.utils.data import Dataset

    class Spots(Dataset):
        def __len__(self) -> int:
            return len(X)

        def __getitem__(self, i):
            return torch.from_numpy(X[i]), torch.from_numpy(Y[i])

    return Spots()


def baseline_epochs(model, X: np.ndarray, Y: np.ndarray, *, epochs: int, lr: float, device, workers: int,
                    seed: int, fused: bool, out: dict) -> Iterator[None]:
    """The loop people write: per-sample Dataset + DataLoader. Yields after each epoch; fills `out` at the end."""
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(spots_dataset(X, Y), batch_size=BATCH, shuffle=True, num_workers=workers,
                        generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr, fused=True if fused else None)
    model.train()
    steps = 0
    for _ in range(epochs):
        tot_rec = tot_reg = 0.0
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            l_rec, l_reg = model.losses(x, y)
            loss = l_rec + l_reg
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot_rec += l_rec.item() * len(x)
            tot_reg += l_reg.item() * len(x)
            steps += 1
        yield
    model.eval()
    out.update(steps=steps, recon=tot_rec / len(X), reg=tot_reg / len(X))


def ours_direct(model, X: np.ndarray, Y: np.ndarray, *, epochs: int, lr: float, device, seed: int,
                out: dict) -> list[float]:
    """`train_booster` called as the reducer calls it (in the main thread); returns the seconds of each epoch,
    the first including copying the fold to the device."""
    import torch

    from stbench.reducers.bpbooster.model import train_booster

    _sync(device)
    marks = [time.perf_counter()]  # on_epoch runs after train_booster has read the epoch's loss (a device sync)
    Xt, Yt = torch.from_numpy(X).to(device), torch.from_numpy(Y).to(device)
    hist = train_booster(model, Xt, Yt, epochs=epochs, batch_size=BATCH, lr=lr, seed=seed,
                         on_epoch=lambda _: marks.append(time.perf_counter()))
    out.update(steps=hist.steps, recon=hist.recon[-1], reg=hist.reg[-1])
    return [b - a for a, b in zip(marks, marks[1:])]


def fold_losses(model, X: np.ndarray, Y: np.ndarray, device) -> tuple[float, float]:
    """Reconstruction and regression MSE of the trained model on the whole fold (the same measure for both)."""
    import torch

    rec = reg = 0.0
    with torch.no_grad():
        for i in range(0, len(X), 4096):
            x, y = torch.from_numpy(X[i : i + 4096]).to(device), torch.from_numpy(Y[i : i + 4096]).to(device)
            l_rec, l_reg = model.losses(x, y)
            rec += float(l_rec) * len(x)
            reg += float(l_reg) * len(x)
    return rec / len(X), reg / len(X)


def breakdown(X: np.ndarray, Y: np.ndarray, *, attention: str, lr: float, device, seed: int, steps: int = 150) -> None:
    """Milliseconds per batch of 128 for each part of a step, each part timed alone (medians of 5 blocks)."""
    import torch
    from torch.utils.data import DataLoader

    Xt, Yt = torch.from_numpy(X).to(device), torch.from_numpy(Y).to(device)
    perm = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed)).to(device)
    nb = min(steps, len(X) // BATCH)
    batches = [perm[i * BATCH : (i + 1) * BATCH] for i in range(nb)]

    def per_batch(fn) -> float:
        fn(min(5, nb))  # warm
        times = []
        for _ in range(5):
            _sync(device)
            t = time.perf_counter()
            fn(nb)
            _sync(device)
            times.append((time.perf_counter() - t) / nb * 1000)
        return statistics.median(times)

    def loader(k: int) -> None:
        it = iter(DataLoader(spots_dataset(X, Y), batch_size=BATCH, shuffle=True, num_workers=0))
        for _ in range(k):
            x, y = next(it)
            x, y = x.to(device), y.to(device)

    def gather(k: int) -> None:
        for idx in batches[:k]:
            Xt[idx], Yt[idx]

    model = build_model(X.shape[1], attention, device, seed)
    xs = [(Xt[idx], Yt[idx]) for idx in batches]

    def forward(k: int) -> None:
        with torch.no_grad():
            for x, y in xs[:k]:
                model.losses(x, y)

    def fwd_bwd(k: int) -> None:
        for x, y in xs[:k]:
            model.zero_grad(set_to_none=True)
            a, b = model.losses(x, y)
            (a + b).backward()

    rows = [("DataLoader per sample (workers=0): next batch + .to(device)", per_batch(loader)),
            ("train_booster: X[idx], Y[idx] from the on-device fold", per_batch(gather)),
            ("forward + both losses (no grad)", per_batch(forward)),
            ("forward + losses + backward", per_batch(fwd_bwd))]
    fwd_bwd(1)  # leave gradients in place for the optimizer steps
    for name, fused in (("Adam step, torch default (for-loop on CPU)", None), ("Adam step, fused=True", True)):
        opt = torch.optim.Adam(model.parameters(), lr=lr, fused=fused)
        rows.append((name, per_batch(lambda k: [opt.step() for _ in range(k)])))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"\nPer-batch breakdown (batch {BATCH}, {X.shape[1]} dims, {n_params} parameters, device {device}, "
          f"{torch.get_num_threads()} threads), ms per batch, median of 5 blocks of {nb}:")
    for name, ms in rows:
        print(f"  {name:<62} {ms:8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000, help="spots in the training fold")
    ap.add_argument("--dim", type=int, default=1536, help="embedding dimension (L1)")
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--attention", default="patch-to-prototype", choices=["patch-to-prototype", "literal"])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--repeat", type=int, default=1, help="alternating runs of each loop; the median is reported")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0],
                    help="DataLoader num_workers of the baseline; one baseline row each (e.g. --workers 0 2)")
    ap.add_argument("--diagnostic", action="store_true",
                    help="add a row: the DataLoader loop (num_workers=0) with fused Adam, to split the gain between "
                         "the data path and the optimizer")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="smoke run: n 2000, 3 epochs")
    ap.add_argument("--breakdown", action="store_true",
                    help="instead of the loops, time each part of one step alone (loader, gather, forward, "
                         "backward, Adam) in ms per batch")
    args = ap.parse_args()
    if args.quick:
        args.n, args.epochs = 2000, 3

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)

    X, Y = make_data(args.n, args.dim)
    if args.breakdown:
        breakdown(X, Y, attention=args.attention, lr=args.lr, device=device, seed=args.seed)
        return
    specs = [(f"baseline: DataLoader per sample, num_workers={w}", w, False) for w in args.workers]
    if args.diagnostic:
        specs.append(("diagnostic: DataLoader, workers=0, fused Adam", 0, True))
    specs.append(("ours: train_booster", None, True))
    labels = [label for label, *_ in specs]

    def sequential(Xs: np.ndarray, Ys: np.ndarray, epochs: int, outs: dict[str, dict]) -> dict[str, list[float]]:
        """Each loop's epochs back to back, loop after loop; the seconds of each epoch of each."""
        times = {}
        for label, w, fused in specs:
            model = build_model(args.dim, args.attention, device, args.seed)
            outs[label] = {"model": model}
            common = dict(epochs=epochs, lr=args.lr, device=device, seed=args.seed, out=outs[label])
            if w is None:
                times[label] = ours_direct(model, Xs, Ys, **common)
                continue
            times[label] = []
            _sync(device)
            t = time.perf_counter()
            for _ in baseline_epochs(model, Xs, Ys, workers=w, fused=fused, **common):
                _sync(device)
                times[label].append(time.perf_counter() - t)
                t = time.perf_counter()
        return times

    # warm-up (allocator, kernels, worker start, cuda context): one short epoch of each loop, not timed
    sequential(X[: BATCH * 4], Y[: BATCH * 4], 1, {})

    load_before = os.getloadavg()
    runs: dict[str, list[dict]] = {label: [] for label in labels}
    for r in range(args.repeat):
        outs: dict[str, dict] = {}
        times = sequential(X, Y, args.epochs, outs)
        for label in labels:
            out = outs[label]
            fold_rec, fold_reg = fold_losses(out.pop("model"), X, Y, device)
            runs[label].append({**out, "fold_recon": fold_rec, "fold_reg": fold_reg, "epochs": times[label],
                                "seconds": sum(times[label])})
            ep = times[label]
            print(f"  [{r + 1}/{args.repeat}] {label}: {sum(ep):.2f} s; epochs {min(ep):.2f}..{max(ep):.2f} s, "
                  f"median {statistics.median(ep):.2f} s", flush=True)
        print(f"  load average (1 min) {os.getloadavg()[0]:.2f}", flush=True)

    # Seconds per fold two ways: the median over repeats of the sum of the epochs, and epochs x the median epoch
    # over all repeats (robust to other processes loading the machine for part of the run).
    def wall(label: str) -> float:
        return statistics.median(run["seconds"] for run in runs[label])

    def by_epoch(label: str) -> float:
        return args.epochs * statistics.median(t for run in runs[label] for t in run["epochs"])

    rows = []
    for label in labels:
        s, se, last = wall(label), by_epoch(label), runs[label][-1]
        rows.append({"loop": label, "seconds_per_fold": round(s, 2),
                     "all_seconds": [round(run["seconds"], 2) for run in runs[label]],
                     "seconds_per_fold_by_median_epoch": round(se, 2),
                     "epoch_seconds": [[round(t, 3) for t in run["epochs"]] for run in runs[label]],
                     "steps": last["steps"], "steps_per_s": round(last["steps"] / s, 1),
                     "ratio_vs_ours": round(s / wall(labels[-1]), 2),
                     "ratio_vs_ours_by_median_epoch": round(se / by_epoch(labels[-1]), 2),
                     "last_epoch_recon": round(last["recon"], 4), "last_epoch_reg": round(last["reg"], 4),
                     "fold_recon": round(last["fold_recon"], 4), "fold_reg": round(last["fold_reg"], 4)})

    print(f"\nBP-Booster training, one fold: n={args.n} x dim={args.dim}, {args.epochs} epochs, batch {BATCH}, "
          f"{args.attention}, device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, median of {args.repeat}")
    print(f"load average (1 min) before the timed runs {load_before[0]:.2f}, after {os.getloadavg()[0]:.2f}")
    head = f"{'loop':<46} {'s/fold':>7} {'steps/s':>7} {'ratio':>6} {'s/fold*':>7} {'ratio*':>6} " \
           f"{'last-ep recon':>13} {'last-ep reg':>11} {'fold recon':>10} {'fold reg':>9}"
    print(head)
    print("-" * len(head))
    for row in rows:
        print(f"{row['loop']:<46} {row['seconds_per_fold']:>7.2f} {row['steps_per_s']:>7.1f} "
              f"{row['ratio_vs_ours']:>5.2f}x {row['seconds_per_fold_by_median_epoch']:>7.2f} "
              f"{row['ratio_vs_ours_by_median_epoch']:>5.2f}x {row['last_epoch_recon']:>13.4f} "
              f"{row['last_epoch_reg']:>11.4f} {row['fold_recon']:>10.4f} {row['fold_reg']:>9.4f}")
    print("s/fold: median over repeats of the wall time of all epochs; s/fold*: epochs x the median epoch over all "
          "repeats;\nratio = baseline seconds / ours seconds (>1: ours is faster)")

    record = {
        "bench": "bpbooster_train", "n": args.n, "dim": args.dim, "epochs": args.epochs, "batch": BATCH,
        "genes": GENES, "attention": args.attention, "lr": args.lr, "device": str(device), "repeat": args.repeat,
        "rows": rows,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d"),
    }
    if device.type == "cuda":
        record["gpu"] = torch.cuda.get_device_name(device)
    append_result("bpbooster", record)


if __name__ == "__main__":
    main()
