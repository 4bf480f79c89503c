#!/usr/bin/env python3
"""PyTorch side of `pyra bench-speed`: the same workloads, measured the same way.

The networks are written here from the description in the fixtures README and the papers
(official-style: pyramid attention by `same`-padded patch extraction, a conv2d of the query
map with the normalised key blocks, one softmax over the channel axis of all levels, and
pasting by conv_transpose2d(padding=1) / 4; PANet with one shared PReLU in its res-blocks;
PA-EDSR with mean shifts, res-scale 0.1, attention with reduction 8 after block 16, pixel
shuffle), with random weights: only speed and memory are measured here.

Each workload runs in a fresh child process: build, run --warmup untimed times, reset the
peak-RSS mark (/proc/self/clear_refs), run --repeat times, report the median time, the peak resident set
(VmHWM) and its growth over the resident set after setup. Output: JSON that
`pyra bench-speed --reference FILE` reads.

Usage:
  python3 tools/bench_reference.py --threads 2 > torch.json
  pyra bench-speed --reference torch.json
Needs torch (CPU is enough) and nothing else.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

DEFAULT = ["pa-64", "pa-96", "pa-128", "panet80-96", "panet80-256-chop", "paedsr-x2-48",
           "panets-train", "conv3x3-256", "conv3x3-train"]
ALL = DEFAULT[:3] + ["pa-256"] + DEFAULT[3:]


def status_bytes(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return None


def build(name):
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    def same_padding(x, k):
        pad = k // 2
        return F.pad(x, (pad, pad, pad, pad))

    def extract_patches(x, k):
        # [N, C*k*k, L] blocks around every pixel, zero "same" padding.
        return F.unfold(same_padding(x, k), kernel_size=k, stride=1)

    class BasicBlock(nn.Sequential):
        def __init__(self, cin, cout):
            super().__init__(nn.Conv2d(cin, cout, 1), nn.PReLU())

    class PyramidAttention(nn.Module):
        def __init__(self, channel=64, reduction=2, levels=5, ksize=3, softmax_scale=10,
                     res_scale=1.0):
            super().__init__()
            self.scales = [1 - i / 10 for i in range(levels)]
            self.ksize, self.softmax_scale, self.res_scale = ksize, softmax_scale, res_scale
            self.register_buffer("escape_NaN", torch.FloatTensor([1e-4]))
            self.conv_match_L_base = BasicBlock(channel, channel // reduction)
            self.conv_match = BasicBlock(channel, channel // reduction)
            self.conv_assembly = BasicBlock(channel, channel)

        def forward(self, x):
            k = self.ksize
            base = self.conv_match_L_base(x)
            keys, values = [], []
            for s in self.scales:
                ref = x if s == 1 else F.interpolate(x, scale_factor=s, mode="bicubic")
                v = self.conv_assembly(ref)
                n, c = v.shape[:2]
                values.append(extract_patches(v, k).view(n, c, k, k, -1).permute(0, 4, 1, 2, 3))
                g = self.conv_match(ref)
                n, c = g.shape[:2]
                keys.append(extract_patches(g, k).view(n, c, k, k, -1).permute(0, 4, 1, 2, 3))
            out = []
            for i in range(x.shape[0]):
                w = torch.cat([kk[i] for kk in keys], 0)  # [L, C', k, k]
                norm = torch.sqrt((w ** 2).sum(dim=[1, 2, 3], keepdim=True))
                w = w / torch.max(norm, self.escape_NaN)
                scores = F.conv2d(same_padding(base[i:i + 1], k), w)  # [1, L, H, W]
                weights = F.softmax(scores * self.softmax_scale, dim=1)
                raw = torch.cat([vv[i] for vv in values], 0)  # [L, C, k, k]
                out.append(F.conv_transpose2d(weights, raw, padding=k // 2) / 4.0)
            return torch.cat(out, 0) + x * self.res_scale

    def conv(cin, cout, k=3):
        return nn.Conv2d(cin, cout, k, padding=k // 2)

    class ResBlock(nn.Module):
        def __init__(self, n, act, res_scale=1.0):
            super().__init__()
            self.body = nn.Sequential(conv(n, n), act, conv(n, n))
            self.res_scale = res_scale

        def forward(self, x):
            return self.body(x) * self.res_scale + x

    class PANet(nn.Module):
        def __init__(self, n_resblocks, n_feats=64, n_colors=3):
            super().__init__()
            act = nn.PReLU()  # one PReLU shared by every res-block, as the official model
            half = n_resblocks // 2
            body = [ResBlock(n_feats, act) for _ in range(half)]
            body += [PyramidAttention(channel=n_feats)]
            body += [ResBlock(n_feats, act) for _ in range(half)]
            body += [conv(n_feats, n_feats)]
            self.head = nn.Sequential(conv(n_colors, n_feats))
            self.body = nn.Sequential(*body)
            self.tail = nn.Sequential(conv(n_feats, n_colors))

        def forward(self, x):
            x = self.head(x)
            res = self.body(x) + x
            return self.tail(res)

    class PAEDSR(nn.Module):
        def __init__(self, n_resblocks=32, n_feats=256, scale=2, res_scale=0.1):
            super().__init__()
            self.sub_mean = nn.Conv2d(3, 3, 1)
            self.add_mean = nn.Conv2d(3, 3, 1)
            half = n_resblocks // 2
            act = nn.ReLU(True)
            body = [ResBlock(n_feats, act, res_scale) for _ in range(half)]
            body += [PyramidAttention(channel=n_feats, reduction=8, res_scale=res_scale)]
            body += [ResBlock(n_feats, act, res_scale) for _ in range(half)]
            body += [conv(n_feats, n_feats)]
            self.head = nn.Sequential(conv(3, n_feats))
            self.body = nn.Sequential(*body)
            ups = []
            for _ in range(int(math.log2(scale))):
                ups += [conv(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
            self.tail = nn.Sequential(*ups, conv(n_feats, 3))

        def forward(self, x):
            x = self.head(self.sub_mean(x))
            res = self.body(x) + x
            return self.add_mean(self.tail(res))

    def chop(model, x, shave=10, min_size=6800):
        # The official forward_chop (one device), as Pyra's ChopOptions::official(1).
        _, _, h, w = x.shape
        h_half, w_half = h // 2, w // 2
        h_size, w_size = h_half + shave, w_half + shave
        parts = [x[:, :, 0:h_size, 0:w_size], x[:, :, 0:h_size, (w - w_size):w],
                 x[:, :, (h - h_size):h, 0:w_size], x[:, :, (h - h_size):h, (w - w_size):w]]
        if w_size * h_size < min_size:
            outs = [model(p) for p in parts]
        else:
            outs = [chop(model, p, shave, min_size) for p in parts]
        out = x.new(*outs[0].shape[:2], h, w)
        out[:, :, 0:h_half, 0:w_half] = outs[0][:, :, 0:h_half, 0:w_half]
        out[:, :, 0:h_half, w_half:w] = outs[1][:, :, 0:h_half, (w_size - w + w_half):w_size]
        out[:, :, h_half:h, 0:w_half] = outs[2][:, :, (h_size - h + h_half):h_size, 0:w_half]
        out[:, :, h_half:h, w_half:w] = outs[3][:, :, (h_size - h + h_half):h_size,
                                                (w_size - w + w_half):w_size]
        return out

    torch.manual_seed(0)
    flops = None
    if name.startswith("pa-"):
        size = int(name[3:])
        block = PyramidAttention(channel=64).eval()
        x = torch.randn(1, 64, size, size)
        run = lambda: block(x)
    elif name.startswith("panet80"):
        net = PANet(80).eval()
        size = 96 if name == "panet80-96" else 256
        x = torch.rand(1, 3, size, size)
        run = (lambda: chop(net, x)) if name.endswith("chop") else (lambda: net(x))
    elif name == "paedsr-x2-48":
        net = PAEDSR().eval()
        x = torch.rand(1, 3, 48, 48)
        run = lambda: net(x)
    elif name == "panets-train":
        net = PANet(8).train()
        opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.999), eps=1e-8)
        x, y = torch.rand(16, 3, 48, 48), torch.rand(16, 3, 48, 48)

        def run():
            opt.zero_grad()
            loss = F.l1_loss(net(x), y)
            loss.backward()
            opt.step()
    elif name == "conv3x3-256":
        layer = conv(64, 64).eval()
        x = torch.randn(1, 64, 256, 256)
        run = lambda: layer(x)
        flops = 2.0 * 64 * 64 * 9 * 256 * 256
    elif name == "conv3x3-train":
        layer = conv(64, 64).train()
        x = torch.randn(16, 64, 48, 48, requires_grad=True)
        dy = torch.randn(16, 64, 48, 48)

        def run():
            layer.zero_grad()
            x.grad = None
            (layer(x) * dy).sum().backward()
        flops = 3 * 2.0 * 64 * 64 * 9 * 16 * 48 * 48
    else:
        raise SystemExit(f"unknown workload {name}")
    if name.startswith("pa-"):
        # Useful work of the streaming formulation (as `pyra bench-speed` counts it).
        size = int(name[3:])
        levels = sum(int(size * s) ** 2 for s in (1.0, 0.9, 0.8, 0.7, 0.6))
        flops = size * size * levels * (2.0 * 32 + 2.0 * 64 + 2.0 * 9)
    return run, flops, name in ("panets-train", "conv3x3-train")


def child(name, repeat, warmup, threads):
    import torch
    torch.set_num_threads(threads)
    run, flops, training = build(name)

    def once():
        if training:
            run()
        else:
            with torch.no_grad():
                run()

    for _ in range(warmup):
        once()
    before = status_bytes("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        resettable = True
    except OSError:
        resettable = False
    times = []
    for _ in range(max(repeat, 1)):
        t0 = time.perf_counter()
        once()
        times.append((time.perf_counter() - t0) * 1e3)
    peak = status_bytes("VmHWM")
    print(json.dumps({
        "name": name,
        "median_ms": sorted(times)[len(times) // 2],
        "times_ms": times,
        "peak_rss_bytes": peak,
        "peak_extra_bytes": max(0, peak - before) if (resettable and peak and before) else None,
        "flops": flops,
        "torch": torch.__version__,
        "isa": f"torch {torch.__version__} {torch.backends.cpu.get_cpu_capability()}, oneDNN {torch.backends.mkldnn.is_available()}",
        "threads": threads,
    }))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="comma-separated workloads; 'all' adds pa-256 "
                   "(needs tens of GB in PyTorch)")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--child", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child, a.repeat, a.warmup, a.threads)
        return
    names = DEFAULT if not a.only else (ALL if a.only == "all" else a.only.split(","))
    rows = []
    for name in names:
        print(f"bench_reference: {name} ...", file=sys.stderr)
        out = subprocess.run([sys.executable, __file__, "--child", name, "--repeat", str(a.repeat),
                              "--warmup", str(a.warmup), "--threads", str(a.threads)], capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS=str(a.threads)))
        if out.returncode != 0:
            print(f"bench_reference: {name} failed:\n{out.stderr}", file=sys.stderr)
            continue
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"bench_reference: {name}: {row['median_ms']:.1f} ms", file=sys.stderr)
        rows.append(row)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
