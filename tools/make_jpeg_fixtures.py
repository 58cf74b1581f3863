#!/usr/bin/env python3
"""JPEG decode fixtures: files of every kind a camera (or a user) may send,
with what OpenCV's imread makes of them, for tests/jpeg.rs.

    python tools/make_jpeg_fixtures.py --out tests/fixtures/jpeg

Writes the JPEGs and `decoded.json`: per file, the OpenCV version, the decoded
RGB shape and the SHA-256 of its pixels (cv2.imread(path, IMREAD_COLOR),
BGR->RGB, row-major, 3 bytes a pixel), or `"refused": true` when imread
returns None. Encoded with OpenCV where it can (subsampling, progressive,
restart intervals, grey, optimised Huffman) and with Pillow where it cannot
(CMYK, EXIF orientation); decoded with OpenCV always, since imread is what
the original server ran. Pictures are synthetic pear frames
(tools/synth_pears.py) so the content is what a sorting line sees.
"""
import argparse
import hashlib
import io
import json
import os
import sys

import cv2
import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from synth_pears import make_image  # noqa: E402

W = cv2.IMWRITE_JPEG_QUALITY
S = cv2.IMWRITE_JPEG_SAMPLING_FACTOR
P = cv2.IMWRITE_JPEG_PROGRESSIVE
R = cv2.IMWRITE_JPEG_RST_INTERVAL
O = cv2.IMWRITE_JPEG_OPTIMIZE
SF = {"444": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444, "422": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
      "420": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420, "440": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440,
      "411": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411}


def frame(seed, w, h):
    rng = np.random.default_rng([seed, 7])
    img, *_ = make_image(rng)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def cv_jpeg(img, *params):
    ok, buf = cv2.imencode(".jpg", img, list(params))
    assert ok
    return buf.tobytes()


def pil_jpeg(img_bgr, mode="RGB", **kw):
    pil = Image.fromarray(np.ascontiguousarray(img_bgr[..., ::-1]))
    if mode != "RGB":
        pil = pil.convert(mode)
    out = io.BytesIO()
    pil.save(out, "JPEG", **kw)
    return out.getvalue()


def exif_orientation(o):
    ex = Image.Exif()
    ex[0x0112] = o
    return ex.tobytes()


def cases():
    f = frame(1, 640, 480)
    yield "q40_420.jpg", cv_jpeg(f, W, 40, S, SF["420"])
    yield "q60_420.jpg", cv_jpeg(f, W, 60, S, SF["420"])
    yield "q75_420.jpg", cv_jpeg(f, W, 75, S, SF["420"])
    yield "q92_420.jpg", cv_jpeg(f, W, 92, S, SF["420"])
    yield "q100_420.jpg", cv_jpeg(f, W, 100, S, SF["420"])
    yield "q92_444.jpg", cv_jpeg(f, W, 92, S, SF["444"])
    yield "q92_422.jpg", cv_jpeg(f, W, 92, S, SF["422"])
    yield "q92_440.jpg", cv_jpeg(f, W, 92, S, SF["440"])
    yield "q92_411.jpg", cv_jpeg(f, W, 92, S, SF["411"])
    yield "progressive_420.jpg", cv_jpeg(f, W, 85, P, 1)
    yield "progressive_444.jpg", cv_jpeg(f, W, 85, P, 1, S, SF["444"])
    yield "progressive_422_q50.jpg", cv_jpeg(f, W, 50, P, 1, S, SF["422"])
    yield "restart_1.jpg", cv_jpeg(f, W, 90, R, 1)
    yield "restart_7_444.jpg", cv_jpeg(f, W, 90, R, 7, S, SF["444"])
    yield "optimized_huffman.jpg", cv_jpeg(f, W, 80, O, 1)
    grey = cv2.cvtColor(f, cv2.COLOR_BGR2GRAY)
    yield "grey.jpg", cv_jpeg(grey, W, 90)
    yield "grey_progressive.jpg", cv_jpeg(grey, W, 70, P, 1)
    yield "odd_1x1.jpg", cv_jpeg(frame(2, 1, 1), W, 90)
    yield "odd_17x13_420.jpg", cv_jpeg(frame(3, 17, 13), W, 90, S, SF["420"])
    yield "odd_33x1_422.jpg", cv_jpeg(frame(4, 33, 1), W, 90, S, SF["422"])
    yield "odd_1x40_440.jpg", cv_jpeg(frame(5, 1, 40), W, 90, S, SF["440"])
    yield "odd_641x479_420.jpg", cv_jpeg(frame(6, 641, 479), W, 88, S, SF["420"])
    yield "odd_203x397_progressive.jpg", cv_jpeg(frame(7, 203, 397), W, 77, P, 1, S, SF["420"])
    yield "large_1296x972.jpg", cv_jpeg(frame(8, 1296, 972), W, 85)
    small = frame(9, 160, 120)
    yield "cmyk.jpg", pil_jpeg(small, "CMYK", quality=90)
    yield "cmyk_progressive.jpg", pil_jpeg(small, "CMYK", quality=70, progressive=True)
    for o in range(1, 9):
        yield f"exif_orientation_{o}.jpg", pil_jpeg(frame(10, 96, 64), quality=90, exif=exif_orientation(o))
    yield "exif_big_endian_6.jpg", big_endian_exif(pil_jpeg(frame(11, 64, 48), quality=90), 6)
    whole = cv_jpeg(frame(12, 320, 240), W, 90)
    yield "refused_header_only.jpg", whole[:200]
    yield "refused_not_jpeg_after_soi.jpg", b"\xff\xd8\xff\xe0" + b"garbage" * 20


def big_endian_exif(jpeg, o):
    """Inserts a Motorola-order APP1 (PIL writes Intel order)."""
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01" + o.to_bytes(2, "big") + b"\x00\x00" + b"\x00\x00\x00\x00"
    app1 = b"Exif\x00\x00" + tiff
    return jpeg[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + jpeg[2:]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    records = []
    for name, data in cases():
        path = os.path.join(args.out, name)
        with open(path, "wb") as fh:
            fh.write(data)
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            rec = {"file": name, "refused": True}
        else:
            rgb = np.ascontiguousarray(img[..., ::-1])
            rec = {"file": name, "refused": False, "height": rgb.shape[0], "width": rgb.shape[1],
                   "sha256": hashlib.sha256(rgb.tobytes()).hexdigest()}
        records.append(rec)
        print(name, "refused" if rec["refused"] else f"{rec['width']}x{rec['height']}", flush=True)
    with open(os.path.join(args.out, "decoded.json"), "w") as fh:
        json.dump({"opencv": cv2.__version__, "images": records}, fh, indent=1)


if __name__ == "__main__":
    main()
