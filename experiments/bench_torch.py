"""A PyTorch reference for bench.py: the same training and Monte Carlo work in PyTorch.

    pip install torch                 # CPU build; not a dependency of neft_jax
    python experiments/bench_torch.py --models vgg8 --methods noise --channels 1 --json
    python experiments/bench.py       --models vgg8 --methods noise --channels 1 --json

This is *our* re-implementation of what the authors' PyTorch code computes, written
from docs (method.md §1–5), not their code: the backbone of VGG-8 / ResNet-18 (Table I,
no exits), Kaiming fan-out init, Adam 1e-3, batch 128, BatchNorm in training mode,
and for ``noise`` a fresh Gaussian weight error on every conv and dense kernel at
every forward pass, std 0.7776·σ·max|W| per tensor ("range", RRAM1), straight
through to the clean weights. Monte Carlo draws one noise instance per run, adds it
to the kernels in place, evaluates the images in eval mode and restores the kernels,
as the authors' test loop does. Rows carry the same keys as bench.py's (images/s,
image-evals/s, the CPU model as bench.py names it), so the two can be set side by side; run them one
after the other on a quiet machine with the same thread count.
"""

from __future__ import annotations

import json
import os
import sys
import time

from neft_jax.device import DeviceModel
from neft_jax.harness.runtime import cpu_model
from neft_jax.methods import method_spec

#: std(ΔW) / (σ_d · max|W|) of the authors' "range" device model (RRAM1): 0.7776.
RANGE_FACTOR = DeviceModel(normalisation="range").bit_weight_norm


def _torch():
    try:
        import torch
    except ImportError:
        sys.exit("bench_torch.py needs PyTorch, which neft_jax does not install: "
                 "`pip install torch` (a CPU build is enough)")
    return torch


def build_model(name: str, width: float, channels: int, num_classes: int = 10):
    """The backbone of VGG-8 or ResNet-18 (method.md §2), NCHW, with noisy conv/dense kernels."""
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional

    class Noisy:
        """Adds a fresh weight error, std RANGE_FACTOR·σ·max|W|, at each forward."""

        sigma = 0.0

        def noisy_weight(self):
            w = self.weight
            if self.sigma <= 0:
                return w
            scale = w.detach().abs().max()
            return w + torch.randn_like(w) * (RANGE_FACTOR * self.sigma * scale)

    class Conv(Noisy, nn.Conv2d):
        def forward(self, x):
            return F.conv2d(x, self.noisy_weight(), None, self.stride, self.padding)

    class Dense(Noisy, nn.Linear):
        def forward(self, x):
            return F.linear(x, self.noisy_weight(), self.bias)

    def ch(c):
        return max(1, int(round(c * width)))

    def conv_bn(cin, cout, stride=1, k=3):
        return [Conv(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]

    if name == "vgg8":
        layers, cin = [], channels
        for c in (64, 128, "M", 256, 256, "M", 512, 512, "M"):
            if c == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += conv_bn(cin, ch(c)) + [nn.ReLU()]
                cin = ch(c)
        model = nn.Sequential(*layers, nn.Flatten(), Dense(cin * 16, ch(1024)), nn.ReLU(),
                              Dense(ch(1024), num_classes))
    elif name == "resnet18":
        class Block(nn.Module):
            def __init__(self, cin, cout, stride):
                super().__init__()
                self.body = nn.Sequential(*conv_bn(cin, cout, stride), nn.ReLU(),
                                          *conv_bn(cout, cout))
                self.short = (nn.Sequential(*conv_bn(cin, cout, stride, k=1))
                              if stride != 1 or cin != cout else nn.Identity())

            def forward(self, x):
                return F.relu(self.body(x) + self.short(x))

        blocks, cin = [], ch(64)
        for c, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks += [Block(cin, ch(c), stride), Block(ch(c), ch(c), 1)]
            cin = ch(c)
        model = nn.Sequential(*conv_bn(channels, ch(64)), nn.ReLU(), *blocks,
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), Dense(cin, num_classes))
    else:
        raise ValueError(f"unknown model {name!r}: vgg8 or resnet18")
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def set_sigma(model, sigma: float) -> None:
    for m in model.modules():
        if hasattr(m, "noisy_weight"):
            m.sigma = sigma


def kernels(model):
    return [m.weight for m in model.modules() if hasattr(m, "noisy_weight")]


def bench_train(name, method, args):
    torch = _torch()
    torch.manual_seed(0)
    model = build_model(name, args.width, args.channels)
    set_sigma(model, 0.4 if method_spec(method).perturbs else 0.0)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(args.batch_size, args.channels, 32, 32)
    y = torch.randint(0, 10, (args.batch_size,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    start = time.perf_counter()
    step()
    first_s = time.perf_counter() - start
    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    elapsed = time.perf_counter() - start
    return {"bench": "train", "framework": f"torch {torch.__version__}", "model": name,
            "method": method, "width": args.width, "channels": args.channels,
            "batch_size": args.batch_size, "steps": args.steps, "first_step_s": first_s,
            "images_per_s": args.steps * args.batch_size / elapsed}


def bench_monte_carlo(name, args):
    torch = _torch()
    torch.manual_seed(0)
    model = build_model(name, args.width, args.channels).eval()
    images = torch.randn(args.mc_images, args.channels, 32, 32)
    labels = torch.randint(0, 10, (args.mc_images,))
    weights = kernels(model)
    clean = [w.detach().clone() for w in weights]

    def run():
        with torch.no_grad():
            for w in weights:  # one noise instance for the whole test set
                w.add_(torch.randn_like(w) * (RANGE_FACTOR * 0.4 * w.abs().max()))
            correct = 0
            for i in range(0, args.mc_images, args.eval_batch_size):
                logits = model(images[i:i + args.eval_batch_size])
                correct += int((logits.argmax(1) == labels[i:i + args.eval_batch_size]).sum())
            for w, c in zip(weights, clean, strict=True):
                w.copy_(c)
        return correct / args.mc_images

    run()  # warm-up
    start = time.perf_counter()
    for _ in range(args.mc_runs):
        run()
    elapsed = time.perf_counter() - start
    return {"bench": "monte_carlo", "framework": f"torch {torch.__version__}", "model": name,
            "width": args.width, "channels": args.channels, "runs": args.mc_runs,
            "images": args.mc_images, "eval_batch_size": args.eval_batch_size,
            "image_evals_per_s": args.mc_runs * args.mc_images / elapsed}


def main(argv=None) -> int:
    from neft_jax.harness.cli import CommandParser

    p = CommandParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="vgg8,resnet18")
    p.add_argument("--methods", default="noise", help="comma-separated: vanilla, noise")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=5, help="timed train steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps after the first")
    p.add_argument("--mc-runs", type=int, default=4)
    p.add_argument("--mc-images", type=int, default=256)
    p.add_argument("--eval-batch-size", type=int, default=128)
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--skip-train", action="store_true")
    p.add_argument("--skip-mc", action="store_true")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--jsonl", default=None, metavar="PATH", help="also append rows here")
    args = p.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    if bad := [m for m in methods if m not in ("vanilla", "noise")]:
        p.error(f"--methods: {bad} not in vanilla, noise")
    torch = _torch()
    torch.set_num_threads(args.threads)
    device = cpu_model()
    for name in args.models.split(","):
        rows = [bench_train(name, m, args) for m in methods] if not args.skip_train else []
        if not args.skip_mc:
            rows.append(bench_monte_carlo(name, args))
        for row in rows:
            row.update(device=device, threads=args.threads)
            if args.jsonl:
                with open(args.jsonl, "a") as f:
                    f.write(json.dumps(row) + "\n")
            if args.json:
                print(json.dumps(row), flush=True)
            elif row["bench"] == "train":
                print(f"torch train {row['model']:9s} {row['method']:8s} "
                      f"{row['images_per_s']:10.1f} img/s  [{row['device']}]", flush=True)
            else:
                print(f"torch mc    {row['model']:9s} {row['runs']}×{row['images']} "
                      f"{row['image_evals_per_s']:10.1f} img-evals/s  [{row['device']}]",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
