"""PyTorch side of bench/fake_quant_bench: fake-quant forward + backward
(torch.fake_quantize_per_tensor_affine / _per_channel_affine, the STE) on the
cases that fake_quant_bench passes, with the reference kit's thread and
malloc rules. Prints one `RESULT {json}` line per case. Run with
/usr/bin/python3."""
import argparse
import json
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kit", required=True, help="path to shared/bench/pytorch (ref_common.py)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", required=True, help="name:N,C,H,W,per_channel;... as fake_quant_bench prints them")
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
    for spec in args.cases.split(";"):
        name, dims = spec.split(":")
        n, c, h, w, per_channel = (int(v) for v in dims.split(","))
        x = torch.randn(n, c, h, w, requires_grad=True)
        gy = torch.randn(n, c, h, w)
        if per_channel:
            scale = torch.full((n,), 0.02)
            zp = torch.zeros(n, dtype=torch.int32)

            def fq():
                return torch.fake_quantize_per_channel_affine(x, scale, zp, 0, -128, 127)
        else:
            def fq():
                return torch.fake_quantize_per_tensor_affine(x, 0.02, 128, 0, 255)

        def step():
            x.grad = None
            fq().backward(gy)

        for _ in range(3):
            step()
        ts, end = [], time.perf_counter() + args.min_sec
        while len(ts) < 10 or time.perf_counter() < end:
            t0 = time.perf_counter()
            step()
            ts.append(time.perf_counter() - t0)
        med = statistics.median(ts)
        row = {"bench": "fake_quant_fwd_bwd", "name": name, "ms": round(med * 1e3, 4),
               "gelem_per_s": round(x.numel() / med / 1e9, 3), "runs": len(ts)}
        row.update(env)
        print("RESULT " + json.dumps(row, separators=(",", ":")), flush=True)


if __name__ == "__main__":
    main()
