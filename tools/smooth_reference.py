#!/usr/bin/env python3
"""Reference outputs of OpenCV's edge-preserving filters for Pyra's smoothing tests.

Crops a small patch of the bundled demo photo and runs OpenCV (opencv-contrib-python-headless,
cv2.ximgproc) on it. Written as data; neither OpenCV nor this script is used by Pyra or its tests.

  l0_opencv.safetensors: cv2.ximgproc.l0Smooth(float32 RGB / 255, lambda=0.02, kappa=2) x 255,
                         float32 [C, H, W] under the key `image` (Pyra's float-image format)
  wmf_gray_r10.png:      cv2.ximgproc.weightedMedianFilter(gray guide, RGB image, r=10, sigma=50)
                         (gray guide = cv2 BGR2GRAY of the crop, written as gray.png)
  wmf_gray_r3.png:       the same with r=3, sigma=25.5 (OpenCV's default sigma)
  wmf_rgb_r10.png:       guided by the RGB image itself (OpenCV clusters colour guides by k-means)
  l0_numpy.safetensors:  the authors' algorithm (periodic differences, FFT solve) in float64
                         NumPy, written here from the paper; same parameters and format

Usage: python3 tools/smooth_reference.py assets/sample/95006.png fixtures/smooth
"""
import json
import struct
import sys
from pathlib import Path

import cv2
import numpy as np


def write_float_image(path, chw):
    data = np.ascontiguousarray(chw, dtype="<f4").tobytes()
    header = {"image": {"dtype": "F32", "shape": list(chw.shape), "data_offsets": [0, len(data)]},
              "__metadata__": {"source": "tools/smooth_reference.py", "opencv": cv2.__version__}}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(text)) + text + data)


src, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
bgr = cv2.imread(str(src), cv2.IMREAD_COLOR)[100:164, 200:280].copy()
cv2.imwrite(str(out / "rgb.png"), bgr)
rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
# l0Smooth overwrites a float input with its result: give it a copy.
l0 = cv2.ximgproc.l0Smooth(rgb.copy(), None, 0.02, 2.0)
write_float_image(out / "l0_opencv.safetensors", l0.transpose(2, 0, 1) * 255.0)

gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
cv2.imwrite(str(out / "gray.png"), gray)
cv2.imwrite(str(out / "wmf_gray_r10.png"), cv2.ximgproc.weightedMedianFilter(gray, bgr, 10, sigma=50.0))
cv2.imwrite(str(out / "wmf_gray_r3.png"), cv2.ximgproc.weightedMedianFilter(gray, bgr, 3, sigma=25.5))
cv2.imwrite(str(out / "wmf_rgb_r10.png"), cv2.ximgproc.weightedMedianFilter(bgr, bgr, 10, sigma=50.0))


def l0_periodic(image, lam=0.02, kappa=2.0, beta_max=1e5):
    s = image.astype(np.float64).copy()
    h, w, _ = s.shape
    fy, fx = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    den2 = (2 - 2 * np.cos(2 * np.pi * fx / w)) + (2 - 2 * np.cos(2 * np.pi * fy / h))
    f_in = np.fft.fft2(s, axes=(0, 1))
    beta = 2 * lam
    while beta < beta_max:
        gx = np.roll(s, -1, 1) - s
        gy = np.roll(s, -1, 0) - s
        small = (gx ** 2 + gy ** 2).sum(-1) <= lam / beta
        gx[small] = 0
        gy[small] = 0
        adj = (np.roll(gx, 1, 1) - gx) + (np.roll(gy, 1, 0) - gy)
        f = (f_in + beta * np.fft.fft2(adj, axes=(0, 1))) / (1 + beta * den2)[..., None]
        s = np.real(np.fft.ifft2(f, axes=(0, 1)))
        beta *= kappa
    return s


write_float_image(out / "l0_numpy.safetensors", l0_periodic(rgb.astype(np.float64)).transpose(2, 0, 1) * 255.0)
print(f"opencv {cv2.__version__}: wrote rgb.png, l0_opencv.safetensors, l0_numpy.safetensors to {out}")
