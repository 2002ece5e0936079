#!/usr/bin/env python3
"""An independent LLaMA forward pass, checked against fedge's logits.

Usage: llama_reference.py CHECKPOINT_DIR

Written from the Hugging Face LlamaForCausalLM architecture description
(RMSNorm, rotary embeddings with the rotate-half convention, grouped-query
attention with repeated KV heads, SwiGLU MLP, optional tied embeddings),
not from fedge's code, with Debian's python3-torch. Reads config.json and
model.safetensors (parsed here: an 8-byte header length, a JSON header,
raw little-endian tensors) and fedge_logits.safetensors (tokens and fedge's
logits), and prints the largest absolute difference.
"""
import json
import math
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
          "I64": torch.int64}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        t = torch.frombuffer(bytearray(body[begin:end]), dtype=DTYPES[info["dtype"]])
        out[name] = t.reshape(info["shape"]).float() if info["dtype"] != "I64" \
            else t.reshape(info["shape"])
    return out


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def forward(cfg, w, tokens):
    hidden = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads", heads)
    head_dim = cfg.get("head_dim", hidden // heads)
    eps = cfg["rms_norm_eps"]
    theta = cfg.get("rope_theta", 10000.0)
    assert "rope_scaling" not in cfg or cfg["rope_scaling"] is None
    b, t = tokens.shape
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    freqs = torch.outer(torch.arange(t, dtype=torch.float64), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().float(), emb.sin().float()
    h = w["model.embed_tokens.weight"][tokens]
    mask = torch.full((t, t), float("-inf")).triu(1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = rms_norm(h, w[p + "input_layernorm.weight"], eps)
        q = (x @ w[p + "self_attn.q_proj.weight"].T).view(b, t, heads, head_dim).transpose(1, 2)
        k = (x @ w[p + "self_attn.k_proj.weight"].T).view(b, t, kv_heads, head_dim).transpose(1, 2)
        v = (x @ w[p + "self_attn.v_proj.weight"].T).view(b, t, kv_heads, head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + mask
        attn = torch.softmax(scores, dim=-1) @ v
        attn = attn.transpose(1, 2).reshape(b, t, heads * head_dim)
        h = h + attn @ w[p + "self_attn.o_proj.weight"].T
        x = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
        gate = x @ w[p + "mlp.gate_proj.weight"].T
        up = x @ w[p + "mlp.up_proj.weight"].T
        h = h + (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    h = rms_norm(h, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") \
        else w["lm_head.weight"]
    return h @ head.T


def main():
    d = sys.argv[1]
    with open(d + "/config.json") as f:
        cfg = json.load(f)
    weights = read_safetensors(d + "/model.safetensors")
    fedge = read_safetensors(d + "/fedge_logits.safetensors")
    with torch.no_grad():
        logits = forward(cfg, weights, fedge["tokens"])
    diff = (logits - fedge["logits"]).abs().max().item()
    print(f"reference logits {tuple(logits.shape)}: max |fedge - reference| = {diff:.3g}"
          f" (GQA {cfg['num_attention_heads']}/{cfg['num_key_value_heads']},"
          f" tied {cfg.get('tie_word_embeddings')}, rope_theta {cfg.get('rope_theta')})")
    print("metric llama_logits_max_abs_diff_vs_reference %.3g" % diff)


main()
