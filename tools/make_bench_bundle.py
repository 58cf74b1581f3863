#!/usr/bin/env python3
"""A bundle with the original's model shapes, and camera frames for it, for
the load bench (`benches/load.rs`) and `tools/bench_torch.py --pipeline`.

    python tools/make_bench_bundle.py --out /tmp/orig

writes /tmp/orig/orig-shapes.safetensors and /tmp/orig/frames/*.jpg, then:

    PEAR_BENCH_BUNDLE=/tmp/orig/orig-shapes.safetensors PEAR_BENCH_IMAGES=/tmp/orig/frames \\
        cargo bench --bench load
    python tools/bench_torch.py --pipeline /tmp/orig/orig-shapes.safetensors --frames /tmp/orig/frames

The original's weights cannot be had here, so the bundle is made the way a
user converts theirs (tools/convert.py, defaults: classifier input 512, BGR)
from the shipped default detector at letterbox size 320 (it finds the
synthetic pears, so the classifier really runs on every frame) and a timm
efficientnet_b3 with 8 classes and seeded random weights (speed does not
depend on the values; its answers mean nothing). Frames are 640x480
synthetic sorting-line JPEGs (q92) with a pear, as the original measured.
"""
import argparse
import os
import subprocess
import sys

import cv2
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from synth_pears import make_image  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--default-bundle", default=os.path.join(HERE, "..", "weights", "pear-default.safetensors"))
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--seed", type=int, default=500)
    args = ap.parse_args()
    import timm

    os.makedirs(os.path.join(args.out, "frames"), exist_ok=True)
    det, cls = os.path.join(args.out, "det.pt"), os.path.join(args.out, "b3.pth")
    subprocess.run([sys.executable, os.path.join(HERE, "bundle_to_torch.py"), "--bundle", args.default_bundle,
                    "--detector-out", det], check=True)
    torch.manual_seed(args.seed)
    torch.save(timm.create_model("efficientnet_b3", pretrained=False, num_classes=8).eval(), cls)
    bundle = os.path.join(args.out, "orig-shapes.safetensors")
    subprocess.run([sys.executable, os.path.join(HERE, "convert.py"), "--detector", det, "--classifier", cls,
                    "--out", bundle, "--detector-imgsz", "320",
                    "--source", "benchmark: default detector at 320 + random timm efficientnet_b3 at 512"], check=True)
    k = 0
    written = 0
    while written < args.frames:
        img, _, cls_id, _ = make_image(np.random.default_rng([args.seed, k]))
        k += 1
        if cls_id is None:
            continue  # every frame has a pear
        img = cv2.resize(img, (640, 480), interpolation=cv2.INTER_AREA)
        cv2.imwrite(os.path.join(args.out, "frames", f"frame_{written:02d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 92])
        written += 1
    print(f"wrote {bundle} and {written} frames in {os.path.join(args.out, 'frames')}")


if __name__ == "__main__":
    main()
