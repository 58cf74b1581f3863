#!/usr/bin/env python3
"""Writes the tensor names and shapes that timm and ultralytics produce for every
efficientnet_b0..b7 and yolov8 n..x, for tests/manifests.rs.

    python tools/make_manifests.py --out tests/fixtures/manifests
"""
import argparse
import json
import os

import timm
import torch
from ultralytics.nn.tasks import DetectionModel


def dump(sd, path):
    rows = {k: list(v.shape) for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    with open(path, "w") as f:
        json.dump(rows, f, indent=0)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for b in range(8):
        m = timm.create_model(f"efficientnet_b{b}", pretrained=False, num_classes=8)
        dump(m.state_dict(), os.path.join(args.out, f"efficientnet_b{b}.json"))
        print("efficientnet_b", b, flush=True)
    for s in "nsmlx":
        m = DetectionModel(f"yolov8{s}.yaml", nc=2, verbose=False)
        dump(m.state_dict(), os.path.join(args.out, f"yolov8{s}.json"))
        print("yolov8", s, flush=True)


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
