#!/usr/bin/env python3
"""Fits the polynomial for e^r on [-ln2/2, ln2/2] that SiLU uses
(`EXP_POLY` in crates/pear-model/src/activation.rs), and prints its worst
relative error when evaluated in f32 by Horner's rule with fused
multiply-adds, as the kernels evaluate it.

    python tools/fit_exp_poly.py [--degree 6]

The fit minimises the relative error (least squares, reweighted towards the
worst points, Lawson's iteration): close to minimax. Only numpy is needed.
"""
import argparse

import numpy as np


def fit(degree, iterations=200):
    # A little past ln2/2: rounding n to nearest leaves |r| <= ln2/2 plus
    # the reduction's own rounding.
    half = np.log(2) / 2 * 1.001
    x = np.cos(np.pi * (np.arange(4000) + 0.5) / 4000) * half
    f = np.exp(x)
    w = np.ones_like(x)
    v = np.vander(x, degree + 1, increasing=True)
    for _ in range(iterations):
        s = np.sqrt(w) / f
        c, *_ = np.linalg.lstsq(v * s[:, None], f * s, rcond=None)
        e = np.abs(v @ c - f) / f
        w = w * e
        w /= w.sum()
    return c.astype(np.float32), half


def worst_error(c, half):
    xs = np.linspace(-half, half, 200001).astype(np.float32)
    p = np.full_like(xs, c[-1])
    for k in range(len(c) - 2, -1, -1):
        # One rounding per step: a fused multiply-add.
        p = (p.astype(np.float64) * xs + np.float64(c[k])).astype(np.float32)
    exact = np.exp(xs.astype(np.float64))
    return np.max(np.abs(p.astype(np.float64) - exact) / exact)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--degree", type=int, default=6)
    args = ap.parse_args()
    c, half = fit(args.degree)
    print("coefficients, constant term first:", ", ".join(repr(float(v)) for v in c))
    print(f"worst relative error in f32: {worst_error(c, half):.3g}")


if __name__ == "__main__":
    main()
