"""PyTorch side of bench/conv_bench: conv2d forward + backward on the shapes
that conv_bench passes, with the reference kit's thread and malloc rules.
Prints one `RESULT {json}` line per shape. Run with /usr/bin/python3."""
import argparse
import json
import os
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kit", required=True, help="path to shared/bench/pytorch (ref_common.py)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shapes", required=True,
                    help="name:N,C,H,W,OC,K,stride,pad,need_dx;... as conv_bench prints them")
    ap.add_argument("--min-sec", type=float, default=1.0)
    args = ap.parse_args()
    sys.path.insert(0, args.kit)
    import ref_common as rc  # noqa: E402
    import torch  # noqa: E402

    malloc = "tuned" if rc.tune_malloc() else "default"
    rc.set_threads(args.threads, 1)
    print(rc.env_line(args.threads, 1, malloc), flush=True)
    env = rc.env_fields(args.threads, 1, malloc)
    torch.manual_seed(0)
    for spec in args.shapes.split(";"):
        name, dims = spec.split(":")
        n, c, h, w, oc, k, s, p, need_dx = (int(v) for v in dims.split(","))
        x = torch.randn(n, c, h, w, requires_grad=bool(need_dx))
        conv = torch.nn.Conv2d(c, oc, k, stride=s, padding=p, bias=False)

        def step():
            conv.weight.grad = None
            if x.grad is not None:
                x.grad = None
            y = conv(x)
            y.backward(gy)

        with torch.no_grad():
            gy = torch.randn_like(conv(x))
        for _ in range(3):
            step()
        ts, end = [], time.perf_counter() + args.min_sec
        while len(ts) < 10 or time.perf_counter() < end:
            t0 = time.perf_counter()
            step()
            ts.append(time.perf_counter() - t0)
        med = statistics.median(ts)
        oh, ow = gy.shape[2], gy.shape[3]
        macs = n * oc * oh * ow * c * k * k
        flops = 2 * macs * (3 if need_dx else 2)
        row = {"bench": "conv_fwd_bwd", "name": name, "ms": round(med * 1e3, 4),
               "gflops": round(flops / med / 1e9, 2), "runs": len(ts)}
        row.update(env)
        print("RESULT " + json.dumps(row, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
