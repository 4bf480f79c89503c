#!/usr/bin/env python3
"""Independent PSNR/SSIM reference values for Pyra's metric tests.

Makes small image pairs from the benchmark images (crops, degraded with NumPy/Pillow, not with
Pyra) and scores them with scikit-image:
  PSNR: skimage.metrics.peak_signal_noise_ratio(data_range=255) (= BasicSR's formula)
  SSIM: skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=255), per channel, averaged.
Y: 16 + (65.481 R + 128.553 G + 24.966 B) / 255 in float64, no rounding; shave before scoring.

Usage: python3 tools/metric_reference.py ../shared/data/bench fixtures/metrics
Writes the pairs as PNG and `reference.json`. Needs numpy, pillow, scikit-image (not used by
Pyra or its tests).
"""
import io
import json
import sys
from pathlib import Path

import numpy as np
import skimage
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

bench, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(2024)


def load(path):
    return np.asarray(Image.open(path)).astype(np.float64)


def save(name, arr):
    Image.fromarray(np.clip(np.round(arr), 0, 255).astype(np.uint8)).save(out / name)
    return load(out / name)  # what was written is what is scored


def jpeg(arr, quality):
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf)).astype(np.float64)


def luma(arr):
    return 16 + (65.481 * arr[..., 0] + 128.553 * arr[..., 1] + 24.966 * arr[..., 2]) / 255


def score(a, b, y, shave):
    if y and a.ndim == 3:
        a, b = luma(a), luma(b)
    if shave:
        a, b = a[shave:-shave, shave:-shave], b[shave:-shave, shave:-shave]
    psnr = peak_signal_noise_ratio(a, b, data_range=255)
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    if a.ndim == 3:
        ssim = np.mean([structural_similarity(a[..., c], b[..., c], **kw) for c in range(a.shape[2])])
    else:
        ssim = structural_similarity(a, b, **kw)
    return float(psnr), float(ssim)


cases = []
gray = save("gray_clean.png", load(bench / "classic5/barbara.png")[100:196, 200:296])
gray_jpeg = save("gray_jpeg10.png", jpeg(gray, 10))
cases.append(("gray_clean.png", "gray_jpeg10.png", False, 0))

rgb = save("rgb_clean.png", load(bench / "Kodak24/kodim05.png")[200:264, 150:230])
noisy = save("rgb_noisy25.png", rgb + rng.normal(0, 25, rgb.shape))
cases.append(("rgb_clean.png", "rgb_noisy25.png", False, 0))
cases.append(("rgb_clean.png", "rgb_noisy25.png", True, 0))

sr = save("sr_clean.png", load(bench / "Set5/butterfly.png")[40:112, 60:132])
small = np.asarray(Image.fromarray(sr.astype(np.uint8)).resize((18, 18), Image.BICUBIC))
blurry = save("sr_bicubic.png", np.asarray(Image.fromarray(small).resize((72, 72), Image.BICUBIC)).astype(np.float64))
cases.append(("sr_clean.png", "sr_bicubic.png", True, 4))
cases.append(("sr_clean.png", "sr_bicubic.png", False, 4))

ref = {
    "tool": f"scikit-image {skimage.__version__}, numpy {np.__version__}",
    "cases": [
        dict(gt=g, pred=p, y_channel=y, shave=s, psnr=ps, ssim=ss)
        for (g, p, y, s) in cases
        for (ps, ss) in [score(load(out / g), load(out / p), y, s)]
    ],
}
(out / "reference.json").write_text(json.dumps(ref, indent=2) + "\n")
print(json.dumps(ref, indent=2))
