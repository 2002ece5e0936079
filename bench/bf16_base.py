#!/usr/bin/python3
"""Is a bfloat16 frozen base worth it on this CPU? (issue 21)

A LoRA training step on a LLaMA-shaped stack of frozen projections (the
weights a base checkpoint holds: q, k, v, o, gate, up, down per layer) with
rank-8 float32 adapters on all of them, batch x tokens rows, in three ways:

  f32      the base in float32 (what fedge does: bf16/f16 checkpoints are
           read into float32);
  upcast   the base kept in bfloat16, each weight cast to float32 when used
           (half the resident base; the step pays the casts);
  bf16     the base and the activations through it in bfloat16 (the
           adapters' products added in float32).

Same LibTorch as fedge (Debian's python3-torch is built from the same
source), same threads. Run it twice, once with ONEDNN_MAX_CPU_ISA=AVX2 (a
CPU without AVX-512's bfloat16 instructions, like the boards'): there the
bf16 way fails in LibTorch 1.13 ("could not create a primitive descriptor
iterator") and the figure is absent. Prints the median step time of each, the ratio to
f32, and the base's resident bytes. Attention's softmax and the norms are
left out: they are the same in all three and would only dilute the ratio.
"""
import argparse
import statistics
import sys
import time

import torch


def stack(layers, hidden, inter, kv, dtype):
    shapes = [(hidden, hidden), (kv, hidden), (kv, hidden), (hidden, hidden),
              (inter, hidden), (inter, hidden), (hidden, inter)]
    return [[torch.randn(o, i).mul_(i ** -0.5).to(dtype) for o, i in shapes]
            for _ in range(layers)]


def adapters(base, rank):
    out = []
    for layer in base:
        out.append([(torch.randn(rank, w.shape[1]).mul_(0.01).requires_grad_(),
                     torch.zeros(w.shape[0], rank).requires_grad_())
                    for w in layer])
    return out


def forward(x, base, lora, mode):
    """Returns a loss that every projection's output reaches."""
    loss = 0
    for layer, ab in zip(base, lora):
        h = x
        outs = []
        for idx, (w, (a, b)) in enumerate(zip(layer, ab)):
            # down_proj reads the gated MLP's product; the rest read x.
            src = h if idx < 6 else torch.nn.functional.silu(outs[4]) * outs[5]
            if mode == "f32":
                y = src @ w.t()
            elif mode == "upcast":
                y = src @ w.float().t()
            else:
                y = (src.to(torch.bfloat16) @ w.t()).float()
            y = y + (src @ a.t()) @ b.t()
            outs.append(y)
        loss = loss + sum(o.square().mean() for o in outs[:3])
        x = x + 0.1 * outs[3] + 0.1 * outs[6]
    return loss + x.square().mean()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=192)
    p.add_argument("--inter", type=int, default=512)
    p.add_argument("--kv", type=int, default=64)
    p.add_argument("--rows", type=int, default=16 * 64)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    results = {}
    for mode in ("f32", "upcast", "bf16"):
        try:
            results[mode] = run(args, mode)
        except RuntimeError as e:
            print(f"{mode}: {e}", file=sys.stderr)
    f32 = results["f32"]
    for mode in ("upcast", "bf16"):
        if mode in results:
            print(f"metric bf16_base_{mode}_step_over_f32 "
                  f"{results[mode][0] / f32[0]:.3f}")
    print(f"metric bf16_base_bytes_over_f32 "
          f"{results['upcast'][1] / f32[1]:.3f}")


def run(args, mode):
    """Median step seconds and the base's resident bytes, one way."""
    dtype = torch.float32 if mode == "f32" else torch.bfloat16
    base = stack(args.layers, args.hidden, args.inter, args.kv, dtype)
    lora = adapters(base, 8)
    params = [t for layer in lora for ab in layer for t in ab]
    opt = torch.optim.AdamW(params, lr=1e-3)
    x = torch.randn(args.rows, args.hidden)
    times = []
    for step in range(args.steps + 3):  # 3 warm-up steps.
        start = time.perf_counter()
        loss = forward(x, base, lora, mode)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= 3:
            times.append(time.perf_counter() - start)
    nbytes = sum(w.numel() * w.element_size() for l in base for w in l)
    print(f"{mode:7s} step {1e3 * statistics.median(times):8.2f} ms  "
          f"base {nbytes / 2**20:7.2f} MiB", file=sys.stderr)
    return statistics.median(times), nbytes


if __name__ == "__main__":
    main()
