"""Benchmark of mgplvm.control against scipy (CPU, float64, same thread count for both).

Prints four tables, all measured in this one run:

1. forward time vs scipy for n ∈ {16, 64, 256, 512} (unbatched, default backend; target ≤ 1.2×),
2. backward / forward cost (reverse-mode pass vs the forward pass with autograd on; ≤ 1.5×),
3. batch throughput for 1024 systems of n = 16 vs a scipy loop (target ≥ 5× faster),
4. the stacked small products of the batched iterations: numpy's matmul (what they use on CPU for
   real matrices) vs ``torch.matmul``.

Timings are medians over repetitions with the two contenders interleaved, so that load from other
processes sharing the CPU hits both alike; they still move by ±20 % between runs on a shared
machine.  Usage: ``python benchmarks/solvers.py [--quick] [--full] [--threads N]`` (``--quick``:
fewer repetitions; ``--full`` adds the n = 512 Riccati solves, which take scipy ≈ 20 s each).

Threads: torch and the BLAS under scipy both get ``--threads`` (default 1, through threadpoolctl
when it is installed).  On a shared, oversubscribed CPU a multi-threaded OpenBLAS makes even
4 × 4 LAPACK calls milliseconds slow, which would swamp every ratio below.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np
import scipy.linalg as sla
import torch

import mgplvm.control as ctl
from mgplvm.control import _functions as _fn
from mgplvm.control import _iterative as _it
from mgplvm.control._functions import _chunked

Setup = Callable[[int, int], tuple[Callable[[], object], Callable[[], torch.Tensor], list]]


def _stable(rng: np.random.Generator, n: int, shift: float = 0.5) -> np.ndarray:
    A = rng.standard_normal((n, n)) / np.sqrt(n)
    return A - (np.max(np.linalg.eigvals(A).real) + shift) * np.eye(n)


def _problem(kind: str, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    A = _stable(rng, n)
    Q = rng.standard_normal((n, n))
    Q = Q @ Q.T / n + np.eye(n)
    if kind == "sylvester":
        return {"A": A, "B": _stable(rng, n), "Q": rng.standard_normal((n, n))}
    if kind == "clyap":
        return {"A": A, "Q": Q}
    if kind == "dlyap":
        return {"A": A / (np.max(np.abs(np.linalg.eigvals(A))) * 1.1), "Q": Q}
    m = max(1, n // 4)
    B = rng.standard_normal((n, m))
    R = np.eye(m)
    if kind == "care":
        return {"A": A + 0.5 * np.eye(n), "B": B, "Q": Q, "R": R}
    Ad = A / (np.max(np.abs(np.linalg.eigvals(A))) * 0.9)  # mildly unstable, stabilisable
    return {"A": Ad, "B": B, "Q": Q, "R": R}


SCIPY = {
    "sylvester": lambda p: sla.solve_sylvester(p["A"], p["B"], p["Q"]),
    "clyap": lambda p: sla.solve_continuous_lyapunov(p["A"], p["Q"]),
    "dlyap": lambda p: sla.solve_discrete_lyapunov(p["A"], p["Q"]),
    "care": lambda p: sla.solve_continuous_are(p["A"], p["B"], p["Q"], p["R"]),
    "dare": lambda p: sla.solve_discrete_are(p["A"], p["B"], p["Q"], p["R"]),
}
OURS = {
    "sylvester": lambda p: ctl.solve_sylvester(p["A"], p["B"], p["Q"]),
    "clyap": lambda p: ctl.solve_continuous_lyapunov(p["A"], p["Q"]),
    "dlyap": lambda p: ctl.solve_discrete_lyapunov(p["A"], p["Q"]),
    "care": lambda p: ctl.solve_continuous_are(p["A"], p["B"], p["Q"], p["R"]),
    "dare": lambda p: ctl.solve_discrete_are(p["A"], p["B"], p["Q"], p["R"]),
}
LABEL = {
    "sylvester": "Sylvester AX+XB=Q",
    "clyap": "Lyapunov AX+XAᴴ=Q",
    "dlyap": "Stein AXAᴴ−X+Q=0",
    "care": "CARE",
    "dare": "DARE",
}


def _reps(n: int, quick: bool) -> int:
    r = {16: 300, 64: 60, 256: 5, 512: 3}.get(n, 3)
    return max(2, r // 5) if quick else r


def _timed(f: Callable[[], object]) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def _interleaved(fs: list[Callable[[], object]], reps: int) -> list[float]:
    """Median time of each function, the functions run alternately ``reps`` times."""
    for f in fs:  # warm up
        f()
    times: list[list[float]] = [[] for _ in fs]
    for _ in range(reps):
        for i, f in enumerate(fs):
            times[i].append(_timed(f))
    return [statistics.median(t) for t in times]


def forward_table(kinds: list[str], sizes: list[int], quick: bool, full: bool) -> list[tuple]:
    rows = []
    for kind in kinds:
        for n in sizes:
            if kind in ("care", "dare") and n >= 512 and not full:
                continue
            p = _problem(kind, n)
            pt = {k: torch.tensor(v) for k, v in p.items()}
            ts, to = _interleaved(
                [lambda p=p, kind=kind: SCIPY[kind](p), lambda pt=pt, kind=kind: OURS[kind](pt)],
                _reps(n, quick),
            )
            rows.append((kind, n, ts, to))
            print(
                f"  {LABEL[kind]:<20} n={n:<4} scipy {ts * 1e3:9.3f} ms   ours {to * 1e3:9.3f} ms"
                f"   ratio {to / ts:5.2f}",
                flush=True,
            )
    return rows


def backward_table(kinds: list[str], sizes: list[int], quick: bool, full: bool) -> list[tuple]:
    rows = []
    for kind in kinds:
        for n in sizes:
            if kind in ("care", "dare") and n >= 512 and not full:
                continue
            p = _problem(kind, n)
            pt = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
            G = torch.randn(n, n, dtype=torch.float64)
            state: dict[str, torch.Tensor] = {}

            def fwd(pt=pt, kind=kind, state=state) -> None:
                state["X"] = OURS[kind](pt)

            def bwd(pt=pt, G=G, state=state) -> None:
                (state["X"] * G).sum().backward()
                for v in pt.values():
                    v.grad = None

            reps = _reps(n, quick)
            fwd()
            bwd()
            tf, tb = [], []
            for _ in range(reps):
                tf.append(_timed(fwd))
                tb.append(_timed(bwd))
            f, b = statistics.median(tf), statistics.median(tb)
            rows.append((kind, n, f, b))
            print(
                f"  {LABEL[kind]:<20} n={n:<4} forward {f * 1e3:9.3f} ms   backward "
                f"{b * 1e3:9.3f} ms   backward/forward {b / f:5.2f}",
                flush=True,
            )
    return rows


def _batch(
    kind: str, count: int, n: int
) -> tuple[list[dict[str, np.ndarray]], dict[str, torch.Tensor]]:
    """``count`` problems (seeds 0, 1, ...) as a list for the scipy loop and stacked for ours."""
    probs = [_problem(kind, n, seed=s) for s in range(count)]
    return probs, {k: torch.tensor(np.stack([p[k] for p in probs])) for k in probs[0]}


def batch_table(kinds: list[str], count: int, n: int, quick: bool) -> list[tuple]:
    rows = []
    for kind in kinds:
        probs, stacked = _batch(kind, count, n)

        def loop(probs=probs, kind=kind) -> None:
            for p in probs:
                SCIPY[kind](p)

        def ours(stacked=stacked, kind=kind) -> None:
            OURS[kind](stacked)

        fs = [loop, ours]
        if kind in SIGN:  # the Newton sign iteration the Cayley–Smith doubling replaced
            fs.append(lambda stacked=stacked, kind=kind: SIGN[kind](stacked))
        reps = 2 if quick else 5
        ts, to, *tsign = _interleaved(fs, reps)
        _, info = _with_info(kind, stacked)
        rows.append((kind, ts, to, info.backend))
        print(
            f"  {LABEL[kind]:<20} scipy loop {ts * 1e3:8.1f} ms   ours ({info.backend}, "
            f"{info.iterations} it) {to * 1e3:7.1f} ms   speed-up {ts / to:5.1f}×",
            flush=True,
        )
        if tsign:
            print(
                f"  {'':<20} Newton sign iteration (chunked alike) {tsign[0] * 1e3:7.1f} ms: "
                f"Cayley–Smith {tsign[0] / to:4.2f}× faster",
                flush=True,
            )
    return rows


def product_table(quick: bool) -> None:
    """The stacked small products of the torch iterations: ``_iterative._mm`` (numpy's matmul on
    CPU for real matrices of side ≤ 64) against ``torch.matmul``, interleaved."""
    for n, count in ((4, 2048), (16, 128), (64, 8)):
        for dtype in (torch.float32, torch.float64):
            g = torch.Generator().manual_seed(n)
            a = torch.randn(count, n, n, generator=g, dtype=dtype)
            b = torch.randn(count, n, n, generator=g, dtype=dtype)

            def many(f: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a=a, b=b) -> None:
                for _ in range(20):
                    f(a, b)

            tn, tt = _interleaved([lambda: many(_it._mm), lambda: many(torch.matmul)],
                                  5 if quick else 25)
            print(
                f"  {count:>5} × ({n:>2}×{n:<2}) {str(dtype).replace('torch.', ''):<8} "
                f"numpy {tn / 20 * 1e6:7.1f} µs   torch {tt / 20 * 1e6:7.1f} µs   "
                f"torch/numpy {tt / tn:4.1f}×",
                flush=True,
            )


def chunk_table(kinds: list[str], count: int, n: int, sizes: list[int], quick: bool) -> None:
    """The batched torch path at several chunk sizes (systems per chunk), interleaved, against
    the scipy loop: how ``_functions._CHUNK_ELEMS`` was chosen."""
    default = _fn._CHUNK_ELEMS
    for kind in kinds:
        probs, stacked = _batch(kind, count, n)

        def run(systems: int, stacked=stacked, kind=kind) -> None:
            _fn._CHUNK_ELEMS = systems * n * n
            try:
                OURS[kind](stacked)
            finally:
                _fn._CHUNK_ELEMS = default

        fs = [lambda c=c: run(c) for c in sizes]
        fs.append(lambda probs=probs, kind=kind: [SCIPY[kind](p) for p in probs])
        *ts, tloop = _interleaved(fs, 3 if quick else 10)
        cells = "  ".join(
            f"{c}: {t * 1e3:.1f} ms ({tloop / t:.1f}×)" for c, t in zip(sizes, ts, strict=True)
        )
        print(f"  {LABEL[kind]:<20} {cells}", flush=True)


def _sign_chunked(fn: Callable[..., tuple], tensors: list[torch.Tensor]) -> None:
    """The sign iteration on the same cache-sized chunks as the library's torch path."""
    n = tensors[0].shape[-1]
    _chunked(fn, tensors, tensors[0].shape[:-2], n)


SIGN = {
    "clyap": lambda p: _sign_chunked(_it.sign_lyapunov, [p["A"], p["Q"]]),
    "sylvester": lambda p: _sign_chunked(_it.sign_sylvester, [p["A"], p["B"], p["Q"]]),
}


def _with_info(kind: str, p: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ctl.SolveInfo]:
    fn = {
        "sylvester": lambda: ctl.solve_sylvester(p["A"], p["B"], p["Q"], return_info=True),
        "clyap": lambda: ctl.solve_continuous_lyapunov(p["A"], p["Q"], return_info=True),
        "dlyap": lambda: ctl.solve_discrete_lyapunov(p["A"], p["Q"], return_info=True),
        "care": lambda: ctl.solve_continuous_are(p["A"], p["B"], p["Q"], p["R"], return_info=True),
        "dare": lambda: ctl.solve_discrete_are(p["A"], p["B"], p["Q"], p["R"], return_info=True),
    }[kind]
    return fn()


def _limit_threads(n: int) -> str:
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "BLAS threads not limited (threadpoolctl missing)"
    threadpool_limits(n, user_api="blas")
    return f"{n} BLAS thread(s)"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    ap.add_argument("--full", action="store_true", help="include n=512 Riccati solves")
    ap.add_argument("--threads", type=int, default=1, help="torch and BLAS threads")
    ap.add_argument("--kinds", default="clyap,dlyap,sylvester,care,dare")
    ap.add_argument("--sizes", default="16,64,256,512")
    ap.add_argument(
        "--chunk-sizes",
        default="",
        help="only time the batch of section 3 at these systems-per-chunk sizes, e.g. "
        "64,128,256,512,1024",
    )
    args = ap.parse_args(argv)
    blas = _limit_threads(args.threads)
    kinds = args.kinds.split(",")
    sizes = [int(s) for s in args.sizes.split(",")]
    print(
        f"mgplvm.control benchmark — torch {torch.__version__}, {torch.get_num_threads()} torch "
        f"thread(s), {blas}, float64, CPU."
    )
    print("NOTE: other processes may share this CPU; ratios are medians of interleaved runs.\n")
    if args.chunk_sizes:
        print("batch of 1024 systems of n = 16 by systems per chunk: time (speed-up vs scipy loop)")
        chunk_table(kinds, 1024, 16, [int(c) for c in args.chunk_sizes.split(",")], args.quick)
        return

    print("1) forward time vs scipy (unbatched, backend='auto'; target ratio ≤ 1.2)")
    fw = forward_table(kinds, sizes, args.quick, args.full)
    print("\n2) backward/forward cost (reverse pass vs forward pass with grad; target ≤ 1.5)")
    bw = backward_table(kinds, sizes, args.quick, args.full)
    print("\n3) batch throughput, 1024 systems of n = 16 vs a scipy loop (target ≥ 5×)")
    bt = batch_table(kinds, 1024, 16, args.quick)
    print("\n4) stacked products inside the torch iterations: numpy matmul (used on CPU) vs torch")
    product_table(args.quick)

    print("\nSummary")
    print(f"  {'equation':<20} {'n':>4} {'fwd/scipy':>10} {'bwd/fwd':>8}")
    bwd = {(k, n): b / f for k, n, f, b in bw}
    for k, n, ts, to in fw:
        ok = "ok" if to / ts <= 1.2 else "MISS"
        okb = "ok" if bwd.get((k, n), 0) <= 1.5 else "MISS"
        print(
            f"  {LABEL[k]:<20} {n:>4} {to / ts:>8.2f}{ok:>4} {bwd.get((k, n), float('nan')):>6.2f}"
            f"{okb:>4}"
        )
    print(f"  {'equation':<20} {'batch speed-up (1024 × n=16)':>30}")
    for k, ts, to, be in bt:
        ok = "ok" if ts / to >= 5 else "MISS"
        print(f"  {LABEL[k]:<20} {ts / to:>10.1f}× ({be}) {ok}")


if __name__ == "__main__":
    main(sys.argv[1:])
