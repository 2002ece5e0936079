#!/usr/bin/python3
"""The default fedge ViT (--model=vit), or the text task's decoder with LoRA
r8 on all seven projections (--model=llama), and one training step, in
Python with Debian's
python3-torch (the same LibTorch 1.13 build fedge links), mirroring
bench/train_step.cc and fedge::model::Train step for step: batch gather by a
shuffled index, learning-rate update, zero_grad, forward, cross-entropy,
loss.item(), backward, gradient-norm clipping, AdamW with decay on matrices.

Prints `metric NAME VALUE` lines like the C++ benchmark.
Run with /usr/bin/python3 (a pyenv or venv python has no torch here).
"""
import argparse
import math
import os
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim, heads, head_dim):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.q_proj = nn.Linear(dim, heads * head_dim)
        self.k_proj = nn.Linear(dim, heads * head_dim)
        self.v_proj = nn.Linear(dim, heads * head_dim)
        self.o_proj = nn.Linear(heads * head_dim, dim)

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        out = torch.matmul(torch.softmax(scores, -1), v)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))


class Block(nn.Module):
    def __init__(self, dim, heads, head_dim, hidden, eps):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.self_attn = Attention(dim, heads, head_dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.up_proj = nn.Linear(dim, hidden)
        self.down_proj = nn.Linear(hidden, dim)

    def forward(self, x):
        h = x + self.self_attn(self.norm1(x))
        return h + self.down_proj(F.gelu(self.up_proj(self.norm2(h))))


class Vit(nn.Module):
    """fedge's default VitConfig: 28x28x1, patch 7, dim 128, 4 blocks of
    4 heads x 32 and MLP 256, 10 classes."""

    def __init__(self, image=28, channels=1, patch=7, dim=128, head_dim=32,
                 heads=4, hidden=256, layers=4, classes=10, eps=1e-6):
        super().__init__()
        self.c, self.p, self.grid, self.dim = channels, patch, image // patch, dim
        self.patch_embed = nn.Linear(channels * patch * patch, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, self.grid ** 2 + 1, dim) * 0.02)
        self.layers = nn.ModuleList(
            [Block(dim, heads, head_dim, hidden, eps) for _ in range(layers)])
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.head = nn.Linear(dim, classes)

    def forward(self, images):
        b, c, p, g = images.shape[0], self.c, self.p, self.grid
        x = images.reshape(b, c, g, p, g, p).permute(0, 2, 4, 1, 3, 5).reshape(
            b, g * g, c * p * p)
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(b, 1, self.dim), x], 1) + self.pos_embed
        for layer in self.layers:
            x = layer(x)
        return self.head(self.norm(x[:, 0]))


class LoraLinear(nn.Module):
    """A frozen Linear (no bias, as LLaMA's) plus a rank-r adapter: the base
    output plus B(A x * alpha / r), as fedge::lora computes it."""

    def __init__(self, inp, out, rank=8, alpha=16.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out, inp) * 0.02, requires_grad=False)
        bound = 1.0 / math.sqrt(inp)
        self.lora_A = nn.Parameter(torch.empty(rank, inp).uniform_(-bound, bound))
        self.lora_B = nn.Parameter(torch.zeros(out, rank))
        self.scale = alpha / rank

    def forward(self, x):
        return F.linear(x, self.weight) + F.linear(F.linear(x, self.lora_A) * self.scale, self.lora_B)


class RmsNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim), requires_grad=False)
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaBlock(nn.Module):
    def __init__(self, dim, heads, kv_heads, head_dim, hidden):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.input_layernorm = RmsNorm(dim)
        self.q_proj = LoraLinear(dim, heads * head_dim)
        self.k_proj = LoraLinear(dim, kv_heads * head_dim)
        self.v_proj = LoraLinear(dim, kv_heads * head_dim)
        self.o_proj = LoraLinear(heads * head_dim, dim)
        self.post_attention_layernorm = RmsNorm(dim)
        self.gate_proj = LoraLinear(dim, hidden)
        self.up_proj = LoraLinear(dim, hidden)
        self.down_proj = LoraLinear(hidden, dim)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        h = self.input_layernorm(x)
        q = self.q_proj(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(self.heads // self.kv_heads, dim=1)
        v = v.repeat_interleave(self.heads // self.kv_heads, dim=1)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(self.head_dim))
        future = torch.ones(t, t, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(future, float("-inf"))
        out = torch.matmul(torch.softmax(scores, -1), v)
        x = x + self.o_proj(out.transpose(1, 2).reshape(b, t, self.heads * self.head_dim))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    """tasks/fortunes.json's base: vocabulary 2048, width 128, 4 blocks of 4
    heads x 32 with 2 KV heads and SwiGLU 384, tied embeddings, 64 tokens."""

    def __init__(self, vocab=2048, dim=128, heads=4, kv_heads=2, head_dim=32,
                 hidden=384, layers=4, context=64, theta=10000.0):
        super().__init__()
        self.embed_tokens = nn.Parameter(torch.randn(vocab, dim) * 0.02, requires_grad=False)
        self.layers = nn.ModuleList(
            [LlamaBlock(dim, heads, kv_heads, head_dim, hidden) for _ in range(layers)])
        self.norm = RmsNorm(dim)
        inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
        emb = torch.outer(torch.arange(context, dtype=torch.float64), inv)
        emb = torch.cat((emb, emb), -1)
        self.register_buffer("cos", emb.cos().float())
        self.register_buffer("sin", emb.sin().float())

    def forward(self, tokens):
        t = tokens.shape[1]
        x = F.embedding(tokens, self.embed_tokens)
        cos, sin = self.cos[:t], self.sin[:t]
        for layer in self.layers:
            x = layer(x, cos, sin)
        return F.linear(self.norm(x), self.embed_tokens)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="vit", choices=["vit", "llama"])
    parser.add_argument("--batch_size", type=int, default=0,
                        help="0: 128 for vit, 16 for llama")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="0 = all cores")
    args = parser.parse_args()
    threads = args.threads or os.cpu_count()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # as fedge::model::ConfigureRuntime
    torch.manual_seed(0)

    llama = args.model == "llama"
    args.batch_size = args.batch_size or (16 if llama else 128)
    n = args.batch_size * (args.warmup + args.steps)
    if llama:
        model = Llama()
        inputs = torch.randint(0, 2048, (n, 64))
        targets = torch.randint(0, 2048, (n, 64))
    else:
        model = Vit()
        inputs = torch.randn(n, 1, 28, 28)
        targets = torch.randint(0, 10, (n,))
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01},
         {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(n, generator=generator)
    model.train()
    times = []
    last = time.perf_counter()
    for step in range(args.warmup + args.steps):
        index = order[step * args.batch_size:(step + 1) * args.batch_size]
        x = inputs.index_select(0, index)
        y = targets.index_select(0, index)
        for group in optimizer.param_groups:
            group["lr"] = 1e-3
        optimizer.zero_grad(set_to_none=True)  # as fedge::model::Train
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.item()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        now = time.perf_counter()
        if step >= args.warmup:
            times.append((now - last) * 1000.0)
        last = now
    times.sort()
    median = times[len(times) // 2]
    print(f"metric threads {threads}")
    print(f"metric step_ms {median:.3f}")
    print(f"metric min_step_ms {times[0]:.3f}")
    print(f"metric samples_per_s {args.batch_size * 1000.0 / median:.1f}")
    print(f"metric peak_rss_mib {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0:.1f}")


if __name__ == "__main__":
    main()
