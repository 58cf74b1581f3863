#!/usr/bin/env python3
"""Synthetic pears as a sorting-line camera sees them.

Why: no real pear images or weights can be fetched on the project's machines,
so the default model is trained on pears this script draws. Everything is
driven by one seed, so a data set is reproducible and a held-out set is just
another seed.

Each image gets a YOLO label file (class 0 = pear, class 1 = leaf, a
distractor) and, when it has a main fruit, a quality class:
0 normal, 1..7 the defects named in CLASS_NAMES.

    python tools/synth_pears.py --out data/train --n 2000 --seed 1
    python tools/synth_pears.py --out samples --n 16 --seed 99 --flat

What varies (what a real line varies): image size and aspect, fruit size,
position, rotation, silhouette style (three generators), colour, blush,
lenticels, lighting direction and strength, belt colour and texture, shadows,
leaves and stones as distractors, partly visible fruit, a second fruit cut by
the image edge, images with no fruit, blur (focus and motion), sensor noise,
colour cast and JPEG quality.
"""
import argparse
import csv
import math
import os

import cv2
import numpy as np

CLASS_NAMES = [
    "normal",
    "bruise",
    "black_spots",
    "crack",
    "rot",
    "scab",
    "scratches",
    "insect_holes",
]
DET_NAMES = ["pear", "leaf"]


# ----------------------------------------------------------------- helpers
def smooth_noise(rng, h, w, scale, octaves=2):
    """Low-frequency noise in [-1, 1] (upsampled random grids)."""
    out = np.zeros((h, w), np.float32)
    amp = 1.0
    total = 0.0
    for o in range(octaves):
        gh = max(2, int(h / scale) + 2)
        gw = max(2, int(w / scale) + 2)
        g = rng.uniform(-1, 1, (gh, gw)).astype(np.float32)
        out += amp * cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
        scale /= 2.5
    return np.clip(out / total, -1, 1)


def hsv_to_bgr(h, s, v):
    px = np.uint8([[[int(h) % 180, int(np.clip(s, 0, 255)), int(np.clip(v, 0, 255))]]])
    return cv2.cvtColor(px, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


# ------------------------------------------------------------- silhouettes
def pear_mask(rng, size, style):
    """A pear silhouette (float mask 0..1) on a size x size canvas, upright."""
    m = np.zeros((size, size), np.uint8)
    cx = size / 2
    H = size * 0.62  # fruit height inside canvas
    top = size / 2 - H / 2
    if style == 0:  # two circles and their hull
        rb = H * rng.uniform(0.27, 0.34)
        rt = rb * rng.uniform(0.5, 0.72)
        cb = (cx, top + H - rb)
        ct = (cx + rng.uniform(-0.05, 0.05) * H, top + rt + H * rng.uniform(0.02, 0.08))
        pts = []
        for a in np.linspace(0, 2 * math.pi, 72, endpoint=False):
            pts.append((cb[0] + rb * math.cos(a), cb[1] + rb * math.sin(a)))
            pts.append((ct[0] + rt * math.cos(a), ct[1] + rt * math.sin(a)))
        hull = cv2.convexHull(np.array(pts, np.float32)).astype(np.int32)
        cv2.fillPoly(m, [hull], 255)
        # waist: carve a little concavity on both sides
        waist_y = (cb[1] + ct[1]) / 2
        for side in (-1, 1):
            r = H * rng.uniform(0.25, 0.45)
            off = rb * rng.uniform(0.95, 1.15) + r * 0.92
            cv2.circle(m, (int(cx + side * off), int(waist_y)), int(r), 0, -1)
    elif style == 1:  # polar teardrop
        a0 = rng.uniform(0.25, 0.45)
        pts = []
        for t in np.linspace(0, 2 * math.pi, 180, endpoint=False):
            # t=0 at bottom; radius shrinks toward the top (t=pi)
            width = 1 - a0 * (0.5 - 0.5 * math.cos(t)) ** 1.6
            x = math.sin(t) * width * H * 0.36
            y = math.cos(t) * H * 0.5
            pts.append((cx + x, size / 2 + y))
        cv2.fillPoly(m, [np.array(pts, np.int32)], 255)
    else:  # Bosc-like: long neck
        rb = H * rng.uniform(0.24, 0.3)
        cb = (cx, top + H - rb)
        neck_w = rb * rng.uniform(0.35, 0.5)
        pts = [(cx - neck_w, top + H * 0.08), (cx + neck_w, top + H * 0.08)]
        for a in np.linspace(0, 2 * math.pi, 90, endpoint=False):
            pts.append((cb[0] + rb * math.cos(a), cb[1] + rb * math.sin(a)))
        pts.append((cx, top))
        hull = cv2.convexHull(np.array(pts, np.float32)).astype(np.int32)
        cv2.fillPoly(m, [hull], 255)
    # organic wobble of the outline
    mf = m.astype(np.float32) / 255
    k = max(3, int(size * 0.03) | 1)
    mf = cv2.GaussianBlur(mf, (k, k), 0)
    wob = smooth_noise(rng, size, size, size / 4) * 0.18
    mf = np.clip((mf + wob * (mf > 0.02) - 0.5) * 6 + 0.5, 0, 1)
    mf = cv2.GaussianBlur(mf, (3, 3), 0)
    return mf, (cx, top), H


def leaf_mask(rng, size):
    m = np.zeros((size, size), np.uint8)
    L = size * rng.uniform(0.5, 0.8)
    W = L * rng.uniform(0.25, 0.45)
    cv2.ellipse(m, (size // 2, size // 2), (int(W / 2), int(L / 2)), 0, 0, 360, 255, -1)
    return m.astype(np.float32) / 255, L


# ---------------------------------------------------------------- defects
def paint_defect(rng, img, mask, cls, H):
    """Paints defect `cls` onto the fruit texture img (float BGR) inside mask."""
    h, w = mask.shape
    inner = cv2.erode((mask > 0.5).astype(np.uint8), np.ones((int(H * 0.12) | 1,) * 2, np.uint8))
    ys, xs = np.nonzero(inner)
    if len(xs) == 0:
        ys, xs = np.nonzero(mask > 0.5)

    def spot():
        i = rng.integers(len(xs))
        return int(xs[i]), int(ys[i])

    layer = np.zeros((h, w), np.float32)
    colour = None
    if cls == 1:  # bruise: soft brown darkening
        for _ in range(rng.integers(1, 3)):
            x, y = spot()
            ax, ay = H * rng.uniform(0.1, 0.18), H * rng.uniform(0.08, 0.14)
            cv2.ellipse(layer, (x, y), (int(ax), int(ay)), rng.uniform(0, 180), 0, 360, 1.0, -1)
        layer = cv2.GaussianBlur(layer, (0, 0), H * 0.03) * rng.uniform(0.65, 0.85)
        colour = np.array([30, 55, 85], np.float32) * rng.uniform(0.8, 1.2)
    elif cls == 2:  # black spots: many small sharp dark dots
        for _ in range(rng.integers(5, 16)):
            x, y = spot()
            cv2.circle(layer, (x, y), max(1, int(H * rng.uniform(0.012, 0.035))), 1.0, -1)
        layer = cv2.GaussianBlur(layer, (3, 3), 0) * rng.uniform(0.85, 1.0)
        colour = np.array([15, 18, 20], np.float32)
    elif cls == 3:  # crack: a jagged dark line with a light rim
        x, y = spot()
        ang = rng.uniform(0, math.pi)
        n = rng.integers(5, 9)
        seg = H * rng.uniform(0.3, 0.55) / n
        pts = [(x, y)]
        for _ in range(n):
            ang += rng.uniform(-0.6, 0.6)
            x += seg * math.cos(ang)
            y += seg * math.sin(ang)
            pts.append((x, y))
        pts = np.array(pts, np.int32)
        t = max(1, int(H * rng.uniform(0.008, 0.02)))
        rim = np.zeros_like(layer)
        cv2.polylines(rim, [pts], False, 1.0, t + 2 * max(1, t // 2 + 1))
        cv2.polylines(layer, [pts], False, 1.0, t)
        img[:] = img * (1 - 0.25 * rim[..., None]) + 0.25 * rim[..., None] * np.array([150, 190, 210], np.float32)
        colour = np.array([20, 30, 45], np.float32)
        layer *= 0.95
    elif cls == 4:  # rot: big brown patch, darker centre, rings
        x, y = spot()
        r = H * rng.uniform(0.14, 0.26)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        d = np.sqrt((xx - x) ** 2 + (yy - y) ** 2) / r
        d = d + smooth_noise(rng, h, w, r / 2) * 0.15
        layer = np.clip(1.2 - d, 0, 1) ** 0.4
        layer *= 0.85 + 0.15 * np.cos(d * 14)
        colour = np.array([25, 45, 70], np.float32) * rng.uniform(0.7, 1.1)
        dark = np.clip(0.6 - d, 0, 1) * 0.6
        img[:] = img * (1 - dark[..., None])
    elif cls == 5:  # scab: clusters of rough dark olive patches
        for _ in range(rng.integers(1, 3)):
            x, y = spot()
            for _ in range(rng.integers(12, 28)):
                dx, dy = rng.normal(0, H * 0.06, 2)
                rr = max(1, int(H * rng.uniform(0.015, 0.035)))
                cv2.circle(layer, (int(x + dx), int(y + dy)), rr, float(rng.uniform(0.75, 1.0)), -1)
        grain = (rng.uniform(0, 1, (h, w)) > 0.3).astype(np.float32)
        layer = cv2.GaussianBlur(layer * (0.7 + 0.3 * grain), (3, 3), 0)
        colour = np.array([45, 65, 70], np.float32) * rng.uniform(0.8, 1.1)
    elif cls == 6:  # scratches: thin roughly parallel lines, light or dark, always contrasting
        x0, y0 = spot()
        ang = rng.uniform(0, math.pi)
        for _ in range(rng.integers(3, 7)):
            a = ang + rng.uniform(-0.25, 0.25)
            ln = H * rng.uniform(0.25, 0.5)
            ox, oy = rng.normal(0, H * 0.05, 2)
            p1 = (int(x0 + ox - ln / 2 * math.cos(a)), int(y0 + oy - ln / 2 * math.sin(a)))
            p2 = (int(x0 + ox + ln / 2 * math.cos(a)), int(y0 + oy + ln / 2 * math.sin(a)))
            cv2.line(layer, p1, p2, 1.0, max(1, int(H * 0.012)))
        layer *= rng.uniform(0.8, 1.0)
        skin = float(img[y0, x0].mean())
        colour = (np.array([35, 55, 80], np.float32) if skin > 130 else np.array([190, 215, 230], np.float32))
    elif cls == 7:  # insect holes: small dark holes with a brown halo
        for _ in range(rng.integers(1, 5)):
            x, y = spot()
            r = max(1.5, H * rng.uniform(0.015, 0.03))
            halo = np.zeros_like(layer)
            cv2.circle(halo, (x, y), int(r * 2.6), 1.0, -1)
            halo = cv2.GaussianBlur(halo, (0, 0), r * 0.6) * 0.7
            img[:] = img * (1 - halo[..., None]) + halo[..., None] * np.array([40, 75, 115], np.float32)
            cv2.circle(layer, (x, y), int(r), 1.0, -1)
        colour = np.array([8, 10, 12], np.float32)
    layer = layer * mask
    img[:] = img * (1 - layer[..., None]) + layer[..., None] * colour


# ------------------------------------------------------------------ fruit
def render_pear(rng, size, cls):
    """Returns (BGR float image, alpha mask) of an upright pear on a size canvas."""
    style = int(rng.integers(0, 3))
    mask, _, H = pear_mask(rng, size, style)
    kind = rng.random()
    if kind < 0.35:
        base = hsv_to_bgr(rng.uniform(30, 45), rng.uniform(120, 220), rng.uniform(150, 230))  # green
    elif kind < 0.7:
        base = hsv_to_bgr(rng.uniform(20, 32), rng.uniform(110, 210), rng.uniform(170, 245))  # yellow
    elif kind < 0.85:
        base = hsv_to_bgr(rng.uniform(10, 20), rng.uniform(110, 190), rng.uniform(120, 200))  # russet
    else:
        base = hsv_to_bgr(rng.uniform(0, 8) if rng.random() < 0.5 else rng.uniform(172, 179),
                          rng.uniform(120, 220), rng.uniform(110, 200))  # red
    img = np.ones((size, size, 3), np.float32) * base
    # skin texture
    tex = smooth_noise(rng, size, size, size / 6, 3)
    img *= (1 + 0.08 * tex)[..., None]
    # blush
    if rng.random() < 0.4:
        bl = np.clip(smooth_noise(rng, size, size, size / 2), 0, 1)[..., None] * rng.uniform(0.3, 0.7)
        img = img * (1 - bl) + bl * np.array([40, 60, 170], np.float32)
    # lenticels
    n = int(rng.integers(0, 250))
    ys, xs = np.nonzero(mask > 0.5)
    if len(xs) and n:
        idx = rng.integers(0, len(xs), n)
        d = rng.uniform(-40, 40)
        for i in idx:
            cv2.circle(img, (int(xs[i]), int(ys[i])), 1, tuple(float(c) for c in np.clip(img[ys[i], xs[i]] + d, 0, 255)), -1)
    if cls:
        paint_defect(rng, img, mask, cls, H)
    # shading from a pseudo-3D height map
    dist = cv2.distanceTransform((mask > 0.5).astype(np.uint8), cv2.DIST_L2, 5)
    z = np.sqrt(dist / (dist.max() + 1e-6))
    gx = cv2.Sobel(z, cv2.CV_32F, 1, 0, ksize=5)
    gy = cv2.Sobel(z, cv2.CV_32F, 0, 1, ksize=5)
    la = rng.uniform(0, 2 * math.pi)
    strength = rng.uniform(0.0, 1.0) if rng.random() < 0.85 else 0.0  # sometimes flat
    lam = (gx * math.cos(la) + gy * math.sin(la)) / (np.abs(gx).max() + 1e-6)
    shade = 1 + strength * (0.35 * lam - 0.25 * (1 - z))
    img *= shade[..., None]
    # specular highlight
    if rng.random() < 0.5:
        spec = np.zeros((size, size), np.float32)
        yy, xx = np.nonzero(dist > dist.max() * 0.6)
        if len(xx):
            i = rng.integers(len(xx))
            cv2.circle(spec, (int(xx[i]), int(yy[i])), int(H * rng.uniform(0.03, 0.08)), 1.0, -1)
            spec = cv2.GaussianBlur(spec, (0, 0), H * 0.03) * rng.uniform(0.2, 0.5)
            img = img * (1 - spec[..., None]) + spec[..., None] * 255
    # stem
    if rng.random() < 0.8:
        ys, xs = np.nonzero(mask > 0.5)
        ty = ys.min()
        tx = int(xs[ys == ty].mean())
        L = H * rng.uniform(0.06, 0.14)
        a = -math.pi / 2 + rng.uniform(-0.5, 0.5)
        p2 = (int(tx + L * math.cos(a)), int(ty + L * math.sin(a)))
        stem_mask = np.zeros((size, size), np.uint8)
        cv2.line(stem_mask, (tx, ty + 2), p2, 255, max(2, int(H * 0.025)))
        sm = stem_mask.astype(np.float32) / 255
        img = img * (1 - sm[..., None]) + sm[..., None] * np.array([30, 55, 80], np.float32)
        mask = np.maximum(mask, sm)
    # outline (a drawing style some cameras' edge enhancement produces)
    if rng.random() < 0.1:
        edge = cv2.morphologyEx((mask > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        img[edge > 0] *= 0.5
    return np.clip(img, 0, 255), mask


def render_leaf(rng, size):
    mask, L = leaf_mask(rng, size)
    base = hsv_to_bgr(rng.uniform(35, 75), rng.uniform(120, 230), rng.uniform(60, 170))
    img = np.ones((size, size, 3), np.float32) * base
    img *= (1 + 0.1 * smooth_noise(rng, size, size, size / 5))[..., None]
    c = size // 2
    cv2.line(img, (c, int(c - L / 2)), (c, int(c + L / 2 + L * 0.15)), tuple(float(v) for v in base * 0.6), max(1, int(size * 0.012)))
    stalk = np.zeros((size, size), np.uint8)
    cv2.line(stalk, (c, int(c + L / 2)), (c, int(c + L / 2 + L * 0.15)), 255, max(1, int(size * 0.012)))
    return np.clip(img, 0, 255), np.maximum(mask, stalk.astype(np.float32) / 255)


# ------------------------------------------------------------- background
def background(rng, h, w):
    kind = rng.random()
    if kind < 0.3:
        base = np.array([rng.uniform(20, 70)] * 3, np.float32) + rng.uniform(-8, 8, 3)  # dark belt
    elif kind < 0.55:
        base = hsv_to_bgr(rng.uniform(90, 130), rng.uniform(60, 200), rng.uniform(60, 180))  # blue belt
    elif kind < 0.75:
        base = hsv_to_bgr(rng.uniform(40, 80), rng.uniform(60, 180), rng.uniform(50, 150))  # green belt
    elif kind < 0.9:
        base = np.array([rng.uniform(150, 230)] * 3, np.float32) + rng.uniform(-10, 10, 3)  # white tray
    else:
        base = hsv_to_bgr(rng.uniform(5, 20), rng.uniform(60, 160), rng.uniform(60, 150))  # wood/brown
    img = np.ones((h, w, 3), np.float32) * base
    img *= (1 + 0.12 * smooth_noise(rng, h, w, max(h, w) / 3))[..., None]
    if rng.random() < 0.6:  # rollers / slats
        period = rng.uniform(0.08, 0.3) * max(h, w)
        phase = rng.uniform(0, period)
        vertical = rng.random() < 0.5
        coord = np.arange(w if vertical else h, dtype=np.float32)
        wave = 0.5 + 0.5 * np.cos(2 * math.pi * (coord + phase) / period)
        wave = 1 - rng.uniform(0.05, 0.3) * wave ** 4
        img *= (wave[None, :, None] if vertical else wave[:, None, None])
    img *= (1 + rng.uniform(0.02, 0.08) * rng.normal(0, 1, (h, w, 1))).astype(np.float32)
    # lighting gradient
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float32)
    a = rng.uniform(0, 2 * math.pi)
    g = ((gx / w - 0.5) * math.cos(a) + (gy / h - 0.5) * math.sin(a)) * rng.uniform(0, 0.5)
    img *= (1 + g)[..., None]
    return img


def paste(rng, canvas, obj, mask, scale, angle, cx, cy, shadow):
    """Rotates/scales obj about its centre and composites it at (cx, cy).

    Returns the full-resolution alpha in canvas coordinates."""
    h, w = canvas.shape[:2]
    s = obj.shape[0]
    M = cv2.getRotationMatrix2D((s / 2, s / 2), angle, scale)
    M[0, 2] += cx - s / 2
    M[1, 2] += cy - s / 2
    a = cv2.warpAffine(mask, M, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    o = cv2.warpAffine(obj, M, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
    if shadow:
        sh = cv2.warpAffine(mask, M, (w, h), borderValue=0)
        off = int(s * scale * 0.04)
        sh = np.roll(np.roll(sh, off, 0), off, 1)
        sh = cv2.GaussianBlur(sh, (0, 0), max(1, s * scale * 0.03)) * rng.uniform(0.2, 0.5)
        canvas *= (1 - sh)[..., None]
    canvas[:] = canvas * (1 - a[..., None]) + o * a[..., None]
    return a


def bbox_of(alpha, full_area):
    ys, xs = np.nonzero(alpha > 0.5)
    if len(xs) == 0:
        return None, 0.0
    return (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), len(xs) / max(full_area, 1)


def make_image(rng):
    """One camera frame. Returns (BGR uint8, [(det_cls, x1, y1, x2, y2)], quality class or None,
    number of fruit with any visible pixel; slivers under 10-15 % visible get no box)."""
    W = int(rng.integers(256, 801))
    aspect = rng.uniform(0.6, 1.8)
    H = int(np.clip(W / aspect, 200, 800))
    img = background(rng, H, W)
    boxes = []
    # distractors: stones (unlabelled) and leaves (class 1)
    for _ in range(rng.integers(0, 3) if rng.random() < 0.35 else 0):
        s = int(min(H, W) * rng.uniform(0.06, 0.15))
        stone = np.zeros((H, W), np.float32)
        cv2.ellipse(stone, (int(rng.integers(0, W)), int(rng.integers(0, H))), (s, int(s * rng.uniform(0.6, 1))),
                    rng.uniform(0, 180), 0, 360, 1.0, -1)
        stone = cv2.GaussianBlur(stone, (5, 5), 0)
        img = img * (1 - stone[..., None]) + stone[..., None] * rng.uniform(60, 160)
    leaf_boxes = []
    if rng.random() < 0.2:
        s = int(min(H, W) * rng.uniform(0.25, 0.45))
        lobj, lmask = render_leaf(rng, s)
        a = paste(rng, img, lobj, lmask, 1.0, rng.uniform(0, 360), rng.uniform(0.1, 0.9) * W, rng.uniform(0.1, 0.9) * H, False)
        b, _ = bbox_of(a, 1)
        if b:
            leaf_boxes.append((1,) + tuple(b))
    cls = None
    visible_fruit = 0  # fruit with any pixel in the frame, labelled or not
    r = rng.random()
    if r >= 0.12:  # 12 % of frames have no main fruit
        # A fruit cut by the frame may hide its defect, which would make the label
        # a lie; such fruit are drawn sound.
        partial = rng.random() < 0.1
        cls = 0 if partial else int(rng.integers(0, len(CLASS_NAMES)))
        canvas = 256
        obj, mask = render_pear(rng, canvas, cls)
        full = float((mask > 0.5).sum())
        fruit_h = min(H, W) * rng.uniform(0.35, 0.85)
        scale = fruit_h / (canvas * 0.62)
        angle = rng.uniform(-180, 180) if rng.random() < 0.7 else rng.uniform(-25, 25)
        ext = fruit_h / 2
        if partial:  # partly out of frame, at least ~55 % visible
            cx = rng.choice([rng.uniform(0, ext * 0.3), W - rng.uniform(0, ext * 0.3)])
            cy = rng.uniform(ext, max(ext + 1, H - ext))
        else:
            cx = rng.uniform(min(ext * 0.8, W / 2), max(W - ext * 0.8, W / 2))
            cy = rng.uniform(min(ext, H / 2), max(H - ext, H / 2))
        a = paste(rng, img, obj, mask, scale, angle, cx, cy, rng.random() < 0.6)
        b, vis = bbox_of(a, full * scale * scale)
        visible_fruit += int(b is not None)
        if b is None or vis < 0.4:
            cls = None  # the fruit fell out of the frame: a no-fruit image
        if b is not None and vis > 0.15:
            boxes.append((0,) + tuple(b))
    if rng.random() < 0.12:  # a second, normal fruit cut by the image edge
        canvas = 256
        obj, mask = render_pear(rng, canvas, 0)
        full = float((mask > 0.5).sum())
        fruit_h = min(H, W) * rng.uniform(0.3, 0.6)
        scale = fruit_h / (canvas * 0.62)
        side = rng.integers(0, 4)
        e = fruit_h * rng.uniform(0.15, 0.35)
        cx, cy = [(-fruit_h / 2 + e, rng.uniform(0, H)), (W + fruit_h / 2 - e, rng.uniform(0, H)),
                  (rng.uniform(0, W), -fruit_h / 2 + e), (rng.uniform(0, W), H + fruit_h / 2 - e)][side]
        a = paste(rng, img, obj, mask, scale, rng.uniform(-180, 180), cx, cy, False)
        b, vis = bbox_of(a, full * scale * scale)
        visible_fruit += int(b is not None)
        if b is not None and vis > 0.1:
            boxes.append((0,) + tuple(b))
    # a leaf mostly hidden under a fruit is no longer a visible object
    for lb in leaf_boxes:
        hidden = False
        for pb in boxes:
            ix = max(0, min(lb[3], pb[3]) - max(lb[1], pb[1]))
            iy = max(0, min(lb[4], pb[4]) - max(lb[2], pb[2]))
            if ix * iy > 0.5 * (lb[3] - lb[1]) * (lb[4] - lb[2]):
                hidden = True
        if not hidden:
            boxes.append(lb)
    # camera: colour cast, gamma, blur, noise, JPEG
    img *= rng.uniform(0.9, 1.1, 3).astype(np.float32)
    img = 255 * (np.clip(img, 0, 255) / 255) ** rng.uniform(0.8, 1.25)
    img = img * rng.uniform(0.75, 1.2) + rng.uniform(-20, 20)
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.6))
    if rng.random() < 0.15:
        k = int(rng.integers(3, 9))
        kern = np.zeros((k, k), np.float32)
        kern[k // 2, :] = 1.0 / k
        M = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), rng.uniform(0, 180), 1)
        kern = cv2.warpAffine(kern, M, (k, k))
        img = cv2.filter2D(img, -1, kern / max(kern.sum(), 1e-6))
    img = img + rng.normal(0, rng.uniform(0, 8), img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    q = int(rng.integers(40, 96))
    ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
    img = cv2.imdecode(enc, cv2.IMREAD_COLOR)
    return img, boxes, cls, visible_fruit


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder")
    ap.add_argument("--n", type=int, required=True, help="number of images")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--flat", action="store_true",
                    help="write only <out>/<name>.jpg and labels.csv (no YOLO layout), e.g. for samples/")
    ap.add_argument("--quality", type=int, default=92, help="JPEG quality of the written files")
    args = ap.parse_args()
    img_dir = args.out if args.flat else os.path.join(args.out, "images")
    lbl_dir = os.path.join(args.out, "labels")
    os.makedirs(img_dir, exist_ok=True)
    if not args.flat:
        os.makedirs(lbl_dir, exist_ok=True)
    rows = []
    for i in range(args.n):
        rng = np.random.default_rng([args.seed, i])
        img, boxes, cls, visible_fruit = make_image(rng)
        name = f"{args.seed}_{i:05d}.jpg"
        cv2.imwrite(os.path.join(img_dir, name), img, [cv2.IMWRITE_JPEG_QUALITY, args.quality])
        h, w = img.shape[:2]
        main_box = next((b for b in boxes if b[0] == 0), None) if cls is not None else None
        if not args.flat:
            with open(os.path.join(lbl_dir, name[:-4] + ".txt"), "w") as f:
                for c, x1, y1, x2, y2 in boxes:
                    f.write(f"{c} {(x1 + x2) / 2 / w:.6f} {(y1 + y2) / 2 / h:.6f} {(x2 - x1) / w:.6f} {(y2 - y1) / h:.6f}\n")
        # "pears" counts every fruit with a visible pixel: an image is "without a pear" only if it has none.
        rows.append([name, -1 if cls is None else cls, visible_fruit, *(main_box[1:] if main_box else ("", "", "", ""))])
    with open(os.path.join(args.out, "labels.csv"), "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["file", "class", "pears", "x1", "y1", "x2", "y2"])
        wr.writerows(rows)


if __name__ == "__main__":
    main()
