#!/usr/bin/env python3
"""An independent LLaMA-family forward pass, checked against fedge's logits.

Usage: llama_reference.py CHECKPOINT_DIR...

Written from the Hugging Face LlamaForCausalLM / Qwen2ForCausalLM
architecture descriptions (RMSNorm, rotary embeddings with the rotate-half
convention and the "linear" and "llama3" rope_scaling kinds, grouped-query
attention with repeated KV heads, attention and MLP biases, SwiGLU MLP,
optional tied embeddings), not from fedge's code, with Debian's
python3-torch. Reads each directory's config.json and its model.safetensors
or the shards model.safetensors.index.json names (parsed here: an 8-byte
header length, a JSON header, raw little-endian tensors), and
fedge_logits.safetensors (tokens and fedge's logits), and prints the largest
absolute difference over all directories.
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


def scaled_inv_freq(cfg, inv_freq):
    """rope_scaling as the Llama 3.1 release describes it: wavelengths above
    original_context / low_freq_factor are stretched by `factor`, those below
    original_context / high_freq_factor kept, and between the two the
    frequency moves linearly from stretched to kept as
    original_context / wavelength goes from low_freq_factor to
    high_freq_factor. "linear" stretches every frequency."""
    rs = cfg.get("rope_scaling")
    if not rs:
        return inv_freq
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        return inv_freq / rs["factor"]
    assert kind == "llama3", kind
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    context = rs["original_max_position_embeddings"]
    out = []
    for f in inv_freq.tolist():
        wavelength = 2 * math.pi / f
        if wavelength > context / lo:
            out.append(f / factor)
        elif wavelength < context / hi:
            out.append(f)
        else:
            a = (context / wavelength - lo) / (hi - lo)
            out.append((1 - a) * f / factor + a * f)
    return torch.tensor(out, dtype=torch.float64)


def read_weights(d):
    try:
        with open(d + "/model.safetensors.index.json") as f:
            index = json.load(f)
    except FileNotFoundError:
        return read_safetensors(d + "/model.safetensors")
    out = {}
    for shard in sorted(set(index["weight_map"].values())):
        out.update(read_safetensors(d + "/" + shard))
    assert set(out) == set(index["weight_map"]), "shards disagree with index"
    return out


def forward(cfg, w, tokens):
    hidden = cfg["hidden_size"]
    heads = cfg["num_attention_heads"]
    kv_heads = cfg.get("num_key_value_heads", heads)
    head_dim = cfg.get("head_dim", hidden // heads)
    eps = cfg["rms_norm_eps"]
    theta = cfg.get("rope_theta", 10000.0)
    b, t = tokens.shape
    inv_freq = scaled_inv_freq(cfg, 1.0 / (theta ** (
        torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)))
    qwen2 = cfg["model_type"] == "qwen2"
    qkv_bias = qwen2 or cfg.get("attention_bias", False)
    o_bias = not qwen2 and cfg.get("attention_bias", False)
    mlp_bias = not qwen2 and cfg.get("mlp_bias", False)

    def linear(x, name, bias):
        y = x @ w[name + ".weight"].T
        return y + w[name + ".bias"] if bias else y
    freqs = torch.outer(torch.arange(t, dtype=torch.float64), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos().float(), emb.sin().float()
    h = w["model.embed_tokens.weight"][tokens]
    mask = torch.full((t, t), float("-inf")).triu(1)
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = rms_norm(h, w[p + "input_layernorm.weight"], eps)
        q = linear(x, p + "self_attn.q_proj", qkv_bias).view(b, t, heads, head_dim).transpose(1, 2)
        k = linear(x, p + "self_attn.k_proj", qkv_bias).view(b, t, kv_heads, head_dim).transpose(1, 2)
        v = linear(x, p + "self_attn.v_proj", qkv_bias).view(b, t, kv_heads, head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(heads // kv_heads, dim=1)
        v = v.repeat_interleave(heads // kv_heads, dim=1)
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim) + mask
        attn = torch.softmax(scores, dim=-1) @ v
        attn = attn.transpose(1, 2).reshape(b, t, heads * head_dim)
        h = h + linear(attn, p + "self_attn.o_proj", o_bias)
        x = rms_norm(h, w[p + "post_attention_layernorm.weight"], eps)
        gate = linear(x, p + "mlp.gate_proj", mlp_bias)
        up = linear(x, p + "mlp.up_proj", mlp_bias)
        h = h + linear(torch.nn.functional.silu(gate) * up, p + "mlp.down_proj", mlp_bias)
    h = rms_norm(h, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") \
        else w["lm_head.weight"]
    return h @ head.T


def check(d):
    with open(d + "/config.json") as f:
        cfg = json.load(f)
    weights = read_weights(d)
    fedge = read_safetensors(d + "/fedge_logits.safetensors")
    with torch.no_grad():
        logits = forward(cfg, weights, fedge["tokens"])
    diff = (logits - fedge["logits"]).abs().max().item()
    print(f"{d}: {cfg['model_type']} logits {tuple(logits.shape)},"
          f" max |fedge - reference| = {diff:.3g}"
          f" (GQA {cfg['num_attention_heads']}/{cfg['num_key_value_heads']},"
          f" tied {cfg.get('tie_word_embeddings')}, rope_theta {cfg.get('rope_theta')},"
          f" rope_scaling {cfg.get('rope_scaling')},"
          f" bias {cfg['model_type'] == 'qwen2' or cfg.get('attention_bias')})")
    return diff


def main():
    diff = max(check(d) for d in sys.argv[1:])
    print("metric llama_logits_max_abs_diff_vs_reference %.3g" % diff)


main()
