#!/usr/bin/env python3
"""Trains the shipped default model on synthetic pears, end to end.

One command (about an hour and a half on a 2-core CPU):

    pip install -r tools/requirements.txt
    python tools/train_default.py --work /tmp/pear-train --out weights/pear-default.safetensors

Stages, each skipped when its output already exists in --work:
  1. data     synthetic images (tools/synth_pears.py): seeds 1 (detector train), 2 (detector val),
              3-6 (classifier sets a-d)
  2. det      ultralytics YOLOv8n, 2 classes (0 pear, 1 leaf), trained from scratch
  3. cls      timm EfficientNet (width 0.5, depth 0.5 of b0) on crops of the labelled fruit,
              fed exactly as the server's pipeline feeds it: integer crop, shorter side
              resized to --cls-size with PIL bilinear, RGB, ImageNet normalisation
  4. bundle   tools/convert.py writes the .safetensors bundle the server loads

Held-out evaluation is not here on purpose: it runs through the Rust pipeline
(`cargo run --release --bin pear-eval`), on a seed never used for training.
"""
import argparse
import csv
import os
import random
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from synth_pears import CLASS_NAMES, DET_NAMES  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def run(cmd):
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def stage_data(work, n_train, n_val, n_extra, n_extra2):
    for name, n, seed in (("det_train", n_train, 1), ("det_val", n_val, 2), ("cls_a", n_extra, 3), ("cls_b", n_extra, 4),
                          ("cls_c", n_extra2, 5), ("cls_d", n_extra2, 6)):
        out = os.path.join(work, name)
        if os.path.exists(os.path.join(out, "labels.csv")):
            continue
        run([sys.executable, os.path.join(HERE, "synth_pears.py"), "--out", out, "--n", str(n), "--seed", str(seed)])


def stage_det(work, epochs, imgsz):
    best = os.path.join(work, "det", "weights", "best.pt")
    if os.path.exists(best):
        return best
    from ultralytics import YOLO

    yaml_path = os.path.join(work, "pears.yaml")
    with open(yaml_path, "w") as f:
        f.write(f"path: {work}\ntrain: det_train/images\nval: det_val/images\nnames:\n")
        for i, n in enumerate(DET_NAMES):
            f.write(f"  {i}: {n}\n")
    model = YOLO("yolov8n.yaml")
    model.train(data=yaml_path, imgsz=imgsz, epochs=epochs, batch=16, workers=2, device="cpu", plots=False,
                amp=False, pretrained=False, project=work, name="det", exist_ok=True, seed=0, deterministic=True,
                cache="ram", close_mosaic=3, patience=100, verbose=False)
    return best


def crop_for_classifier(img_bgr, box, size, rng, jitter):
    """Crop as the pipeline does (integer pixels), RGB, shorter side -> size (PIL bilinear)."""
    from PIL import Image

    h, w = img_bgr.shape[:2]
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    if jitter:
        x1 += rng.uniform(-jitter, jitter) * bw
        x2 += rng.uniform(-jitter, jitter) * bw
        y1 += rng.uniform(-jitter, jitter) * bh
        y2 += rng.uniform(-jitter, jitter) * bh
    x1, y1 = int(max(0, x1)), int(max(0, y1))
    x2, y2 = int(min(w, x2)), int(min(h, y2))
    if x2 - x1 < 4 or y2 - y1 < 4:
        return None
    crop = img_bgr[y1:y2, x1:x2, ::-1]
    ch, cw = crop.shape[:2]
    if cw <= ch:
        nw, nh = size, int(size * ch / cw)
    else:
        nh, nw = size, int(size * cw / ch)
    return np.asarray(Image.fromarray(np.ascontiguousarray(crop)).resize((nw, nh), Image.BILINEAR))


def load_crops(work, size, copies, seed):
    import cv2

    rng = np.random.default_rng(seed)
    items = []
    for name in ("cls_a", "cls_b", "cls_c", "cls_d"):
        root = os.path.join(work, name)
        with open(os.path.join(root, "labels.csv")) as f:
            for row in csv.DictReader(f):
                if int(row["class"]) < 0:
                    continue
                img = cv2.imread(os.path.join(root, "images", row["file"]))
                box = tuple(float(row[k]) for k in ("x1", "y1", "x2", "y2"))
                for c in range(copies):
                    crop = crop_for_classifier(img, box, size, rng, 0.05)
                    if crop is not None:
                        items.append((crop, int(row["class"])))
    return items


def fit_long_side(a, long, rng, train):
    """Bring the long side to `long`: random (train) or centred crop, or edge padding."""
    h, w = a.shape[:2]
    portrait = h >= w
    L = h if portrait else w
    if L > long:
        off = int(rng.integers(0, L - long + 1)) if train else (L - long) // 2
        a = a[off:off + long] if portrait else a[:, off:off + long]
    elif L < long:
        p = long - L
        pad = ((p // 2, p - p // 2), (0, 0), (0, 0)) if portrait else ((0, 0), (p // 2, p - p // 2), (0, 0))
        a = np.pad(a, pad, mode="edge")
    return a, portrait


def stage_cls(work, epochs, size, finetune_epochs, finetune_size):
    """Phase 1: OneCycle from scratch at `size`. Phase 2: low, cosine-decayed LR at
    `finetune_size` (the network is fully convolutional; thin cracks and scratches
    gain pixels), which is the size the bundle then declares."""
    out = os.path.join(work, "classifier.pth")
    phase1 = os.path.join(work, "classifier_phase1.pth")
    if os.path.exists(out):
        return out
    import torch
    import torch.nn.functional as F
    from timm.models.efficientnet import _gen_efficientnet

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 2)
    rng = np.random.default_rng(0)
    t0 = time.time()
    state = {}

    def use_size(sz):
        items = load_crops(work, sz, 1, 0)
        random.Random(0).shuffle(items)
        n_val = max(200, len(items) // 20)
        state.update(val=items[:n_val], train=items[n_val:], long=int(sz * 3 / 2))
        print(f"classifier crops at {sz}: {len(items) - n_val} train, {n_val} val ({time.time() - t0:.0f}s)", flush=True)

    def batches(data, bs, train_mode):
        groups = {True: [], False: []}
        for crop, y in data:
            a, portrait = fit_long_side(crop, state["long"], rng, train_mode)
            if train_mode:
                if rng.random() < 0.5:
                    a = a[:, ::-1]
                if rng.random() < 0.5:
                    a = a[::-1]
                a = np.clip(a.astype(np.float32) * rng.uniform(0.85, 1.15) + rng.uniform(-15, 15), 0, 255)
            groups[portrait].append((np.ascontiguousarray(a), y))
        out = []
        for g in groups.values():
            for i in range(0, len(g), bs):
                chunk = g[i:i + bs]
                x = np.stack([c for c, _ in chunk]).astype(np.float32) / 255
                x = (x - MEAN) / STD
                # channels_last: oneDNN runs the depthwise convolutions ~1.8x faster on CPU
                t = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
                out.append((t, torch.tensor([y for _, y in chunk])))
        if train_mode:
            random.Random(int(rng.integers(1 << 30))).shuffle(out)
        return out

    def run_phase(model, opt, sched, n_epochs, tag):
        train, val = state["train"], state["val"]
        for ep in range(n_epochs):
            model.train()
            random.Random(f"{tag}-{ep}").shuffle(train)
            tl, n = 0.0, 0
            for x, y in batches(train, 32, True):
                loss = F.cross_entropy(model(x), y, label_smoothing=0.05)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                tl += loss.item() * len(y)
                n += len(y)
            model.eval()
            correct = 0
            with torch.no_grad():
                for x, y in batches(val, 64, False):
                    correct += (model(x).argmax(1) == y).sum().item()
            print(f"cls {tag} epoch {ep + 1}/{n_epochs}: loss {tl / n:.4f} val acc {correct / len(val):.4f} "
                  f"({time.time() - t0:.0f}s)", flush=True)

    if os.path.exists(phase1):
        model = torch.load(phase1, map_location="cpu", weights_only=False)
    else:
        model = _gen_efficientnet("efficientnet_b0", channel_multiplier=0.5, depth_multiplier=0.5,
                                  pretrained=False, num_classes=len(CLASS_NAMES), drop_rate=0.1)
        model = model.to(memory_format=torch.channels_last)
        use_size(size)
        per_epoch = (len(state["train"]) + 31) // 32 + 2
        opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.02)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * per_epoch, pct_start=0.15)
        run_phase(model, opt, sched, epochs, "phase1")
        torch.save(model.to(memory_format=torch.contiguous_format).eval(), phase1)
    model = model.to(memory_format=torch.channels_last)
    use_size(finetune_size)
    per_epoch = (len(state["train"]) + 31) // 32 + 2
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.02)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, finetune_epochs * per_epoch))
    run_phase(model, opt, sched, finetune_epochs, "phase2")
    # a whole pickled module, like the original's efficientnetb3_512_version2.pth
    torch.save(model.to(memory_format=torch.contiguous_format).eval(), out)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True, help="scratch folder (data, runs, checkpoints)")
    ap.add_argument("--out", required=True, help="bundle to write, e.g. weights/pear-default.safetensors")
    ap.add_argument("--det-epochs", type=int, default=16)
    ap.add_argument("--det-size", type=int, default=256)
    ap.add_argument("--cls-epochs", type=int, default=22)
    ap.add_argument("--cls-finetune-epochs", type=int, default=8, help="phase 2 epochs at low LR")
    ap.add_argument("--cls-size", type=int, default=96, help="phase 1 input (shorter side)")
    ap.add_argument("--cls-finetune-size", type=int, default=112, help="phase 2 input = the bundle's input size")
    ap.add_argument("--n-train", type=int, default=2500)
    ap.add_argument("--n-val", type=int, default=250)
    ap.add_argument("--n-extra", type=int, default=4000, help="images in each of classifier sets a and b")
    ap.add_argument("--n-extra2", type=int, default=2500, help="images in each of classifier sets c and d")
    ap.add_argument("--stage", choices=["all", "data", "det", "cls", "bundle"], default="all")
    args = ap.parse_args()
    os.makedirs(args.work, exist_ok=True)
    if args.stage in ("all", "data"):
        stage_data(args.work, args.n_train, args.n_val, args.n_extra, args.n_extra2)
    if args.stage in ("all", "det"):
        stage_det(args.work, args.det_epochs, args.det_size)
    if args.stage in ("all", "cls"):
        stage_cls(args.work, args.cls_epochs, args.cls_size, args.cls_finetune_epochs, args.cls_finetune_size)
    if args.stage in ("all", "bundle"):
        run([sys.executable, os.path.join(HERE, "convert.py"),
             "--detector", os.path.join(args.work, "det", "weights", "best.pt"),
             "--classifier", os.path.join(args.work, "classifier.pth"),
             "--out", args.out, "--classes", ",".join(CLASS_NAMES),
             "--classifier-size", str(args.cls_finetune_size), "--channel-order", "rgb",
             "--classifier-variant", "efficientnet_b0 scaled to width 0.5, depth 0.5",
             "--confidence-threshold", "0.5",
             "--source", "pear-server default model: trained on synthetic pears (tools/train_default.py)"])


if __name__ == "__main__":
    main()
