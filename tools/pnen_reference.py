#!/usr/bin/env python3
"""Independent float64 references of PNEN's blocks, for Pyra's gradient tests.

Each block is written here from the paper (and the choices stated in Pyra's block files:
replicate padding to the stride for the PNB, residual APNB with pools 1/3/6/8, DRB units
x + conv(relu(bn(conv(x)))) with batch statistics), in plain NumPy float64. Every gradient is
a central finite difference of this float64 forward (step 1e-6) of the loss
sum(output * R), entry by entry, for the input and every parameter; neither burn nor Pyra is
involved. Weights, inputs and R are rounded to float32 first, so Pyra loads exactly the
values the reference used.

  fixtures/pnen/<block>.safetensors, float32:
    the block's parameters under Pyra's state-dict keys, `input`, `loss_weights` (R),
    `output`, `grad.input`, and `grad.<key>` for every parameter.

Usage: python3 tools/pnen_reference.py fixtures/pnen
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np

rng = np.random.default_rng(20261122)


def f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def uniform(shape, bound):
    return f32(rng.uniform(-bound, bound, size=shape))


def conv_params(out, inp, k):
    bound = 1.0 / np.sqrt(inp * k * k)
    return {"weight": uniform((out, inp, k, k), bound), "bias": uniform((out,), bound)}


def conv2d(x, weight, bias, stride=1, padding=0, dilation=1):
    n, c, h, w = x.shape
    o, _, kh, kw = weight.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    oh = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    ow = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    out = np.zeros((n, o, oh, ow))
    for ky in range(kh):
        for kx in range(kw):
            y0, x0 = ky * dilation, kx * dilation
            patch = xp[:, :, y0:y0 + stride * (oh - 1) + 1:stride, x0:x0 + stride * (ow - 1) + 1:stride]
            out += np.einsum("oi,nihw->nohw", weight[:, :, ky, kx], patch)
    return out + bias[None, :, None, None]


def softmax(s, axis):
    e = np.exp(s - s.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def conv(p, prefix, x, **kw):
    return conv2d(x, p[prefix + ".weight"], p[prefix + ".bias"], **kw)


def flatten(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h * w)


def nlb(p, x):
    n, c, h, w = x.shape
    q = flatten(conv(p, "theta", x)).transpose(0, 2, 1)
    k = flatten(conv(p, "phi", x))
    v = flatten(conv(p, "g", x)).transpose(0, 2, 1)
    y = (softmax(q @ k, 2) @ v).transpose(0, 2, 1).reshape(n, -1, h, w)
    return conv(p, "w", y) + x


def pnb(p, x, scales):
    n, c, h, w = x.shape
    q = flatten(conv(p, "query", x)).transpose(0, 2, 1)
    ys = []
    for i in range(scales):
        s = 2 ** (i + 1)
        ph, pw = (-h) % s, (-w) % s
        xp = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="edge")
        k = flatten(conv(p, f"keys.{i}", xp, stride=s))
        v = flatten(conv(p, f"values.{i}", xp, stride=s)).transpose(0, 2, 1)
        ys.append(softmax(q @ k, 2) @ v)
    y = np.concatenate(ys, 2).transpose(0, 2, 1).reshape(n, -1, h, w)
    return conv(p, "fuse", y) + x


def adaptive_avg_pool(x, s):
    n, c, h, w = x.shape
    out = np.zeros((n, c, s, s))
    for i in range(s):
        y0, y1 = (i * h) // s, -((-(i + 1) * h) // s)
        for j in range(s):
            x0, x1 = (j * w) // s, -((-(j + 1) * w) // s)
            out[:, :, i, j] = x[:, :, y0:y1, x0:x1].mean(axis=(2, 3))
    return out


def apnb(p, x, pools=(1, 3, 6, 8)):
    n, c, h, w = x.shape
    q = flatten(conv(p, "theta", x)).transpose(0, 2, 1)
    pool = lambda t: np.concatenate([flatten(adaptive_avg_pool(t, s)) for s in pools], 2)
    k = pool(conv(p, "phi", x))
    v = pool(conv(p, "g", x)).transpose(0, 2, 1)
    y = (softmax(q @ k, 2) @ v).transpose(0, 2, 1).reshape(n, -1, h, w)
    return conv(p, "w", y) + x


def batch_norm_train(x, weight, bias, eps=1e-5):
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = ((x - mean) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * weight[None, :, None, None] + bias[None, :, None, None]


def drb(p, x, dilations=(1, 2, 4, 2, 1)):
    for i, d in enumerate(dilations):
        u = f"units.{i}."
        r = conv(p, u + "conv1", x, padding=d, dilation=d)
        r = np.maximum(batch_norm_train(r, p[u + "bn.weight"], p[u + "bn.bias"]), 0.0)
        x = x + conv(p, u + "conv2", r, padding=d, dilation=d)
    return x


def gradients(forward, params, x, r, eps=1e-6):
    loss = lambda: float((forward(params, x) * r).sum())
    grads = {}
    for name, t in [("input", x)] + list(params.items()):
        if name.endswith("running_mean") or name.endswith("running_var"):
            continue
        g = np.zeros_like(t)
        flat, gflat = t.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            keep = flat[i]
            flat[i] = keep + eps
            plus = loss()
            flat[i] = keep - eps
            minus = loss()
            flat[i] = keep
            gflat[i] = (plus - minus) / (2 * eps)
        grads["grad." + name] = g
    return grads


def write(path, tensors, meta):
    header, blobs, offset = {"__metadata__": meta}, [], 0
    for name, t in tensors.items():
        data = np.ascontiguousarray(t, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * ((8 - len(head) % 8) % 8)
    Path(path).write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))


def case(out_dir, name, forward, params, shape, meta):
    x = uniform(shape, 1.0)
    out = forward(params, x)
    r = uniform(out.shape, 1.0)
    grads = gradients(forward, params, x, r)
    tensors = dict(params)
    tensors.update({"input": x, "loss_weights": r, "output": out})
    tensors.update(grads)
    write(Path(out_dir) / f"{name}.safetensors", tensors, {"source": "tools/pnen_reference.py", **meta})
    print(name, {k: v.shape for k, v in tensors.items() if not k.startswith("grad.")})


def main(out_dir):
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    c, ci = 6, 3
    p = {}
    for k in ("theta", "phi", "g"):
        p.update({f"{k}.{s}": v for s, v in conv_params(ci, c, 1).items()})
    p.update({f"w.{s}": v for s, v in conv_params(c, ci, 1).items()})
    case(out_dir, "nlb", nlb, p, (2, c, 5, 7), {"channels": "6", "inter_channels": "3"})
    case(out_dir, "apnb", apnb, dict(p), (1, c, 10, 9), {"channels": "6", "inter_channels": "3"})

    m, nv, scales = 5, 4, 3
    p = {f"query.{s}": v for s, v in conv_params(m, c, 1).items()}
    for i in range(scales):
        k = 2 ** (i + 1)
        p.update({f"keys.{i}.{s}": v for s, v in conv_params(m, c, k).items()})
        p.update({f"values.{i}.{s}": v for s, v in conv_params(nv, c, k).items()})
    p.update({f"fuse.{s}": v for s, v in conv_params(c, nv * scales, 1).items()})
    case(out_dir, "pnb", lambda p, x: pnb(p, x, scales), p, (2, c, 11, 9),
         {"channels": "6", "key_channels": "5", "value_channels": "4", "scales": "3"})

    c = 3
    p = {}
    for i in range(5):
        u = f"units.{i}."
        p.update({u + "conv1." + s: v for s, v in conv_params(c, c, 3).items()})
        p.update({u + "conv2." + s: v for s, v in conv_params(c, c, 3).items()})
        p[u + "bn.weight"] = f32(1.0 + rng.uniform(-0.2, 0.2, c))
        p[u + "bn.bias"] = f32(rng.uniform(-0.2, 0.2, c))
        p[u + "bn.running_mean"] = np.zeros(c)
        p[u + "bn.running_var"] = np.ones(c)
    case(out_dir, "drb", drb, p, (2, c, 7, 6), {"channels": "3", "mode": "training (batch statistics)"})


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fixtures/pnen")
