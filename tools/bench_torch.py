#!/usr/bin/env python3
"""Times in PyTorch (CPU) the work that `cargo bench --bench model` times in candle.

    python tools/bench_torch.py [--threads 2] [--bundle-classifier CLS.pth]

yolov8n at 320x256 (a 640x480 frame letterboxed at 320, conv+bn fused as
ultralytics predict does) and efficientnet_b3 at 512x740 with random weights.
Reports the median of 10 runs after 2 warm-ups, in milliseconds.
"""
import argparse
import statistics
import time

import timm
import torch
from ultralytics.nn.tasks import DetectionModel


def timeit(fn, n=10, warm=2):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return statistics.median(ts)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    det = DetectionModel("yolov8n.yaml", nc=2, verbose=False).eval().fuse(verbose=False)
    x = torch.rand(1, 3, 256, 320)
    print(f"yolov8n_320x256: {timeit(lambda: det(x)):.1f} ms")
    b3 = timm.create_model("efficientnet_b3", pretrained=False, num_classes=8).eval()
    x = torch.randn(1, 3, 740, 512)
    print(f"efficientnet_b3_512x740: {timeit(lambda: b3(x)):.1f} ms")


if __name__ == "__main__":
    main()
