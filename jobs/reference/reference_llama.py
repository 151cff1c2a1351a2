#!/usr/bin/env python3
"""Independent reference for the Llama-family decoder in `jobs/src/model/`.

Writes two tiny random checkpoints in the Hugging Face layout and the logits this script computes
for a few token sequences, in float64, straight from the Hugging Face formulas (weights in their
`[out, in]` checkpoint orientation, `rotate_half` rotary embeddings, `repeat_kv` grouped-query
attention, SwiGLU, RMSNorm). The Rust test `model::reference_logits` loads each checkpoint through
the production loader and must reproduce these logits.

    variant a: untied embeddings, grouped-query attention (4 query heads, 2 kv heads), float32
    variant b: tied embeddings, q/k/v biases (Qwen2-style), 4 heads sharing 1 kv head, bfloat16

Only numpy is needed (`python3 -m pip install numpy`). The output is committed; re-running the
script reproduces it byte for byte.

    python3 jobs/reference/reference_llama.py
"""

import json
import os
import struct

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def to_bf16_bits(a):
    """Round float32 values to bfloat16 (round to nearest even); return the 16-bit patterns."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def from_bf16_bits(b):
    return (b.astype(np.uint32) << 16).view(np.float32)


def write_safetensors(path, tensors, dtype):
    """Minimal safetensors writer: 8-byte little-endian header size, JSON header, raw data."""
    header = {"__metadata__": {"format": "pt"}}
    blobs = []
    offset = 0
    for name in sorted(tensors):
        arr = tensors[name]
        if dtype == "BF16":
            raw = to_bf16_bits(arr).astype("<u2").tobytes()
        else:
            raw = np.ascontiguousarray(arr, dtype="<f4").tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def rope(x, positions, theta):
    """x: [T, heads, head_dim]; Hugging Face's non-interleaved rotary embedding."""
    hd = x.shape[-1]
    inv_freq = 1.0 / (theta ** (np.arange(0, hd, 2, dtype=np.float64) / hd))
    ang = positions[:, None].astype(np.float64) * inv_freq[None, :]
    emb = np.concatenate([ang, ang], axis=-1)
    cos, sin = np.cos(emb)[:, None, :], np.sin(emb)[:, None, :]
    return x * cos + rotate_half(x) * sin


def silu(x):
    return x / (1.0 + np.exp(-x))


def forward(cfg, w, tokens):
    """Logits [T, vocab] of one sequence, in float64."""
    d = cfg["hidden_size"]
    h = cfg["num_attention_heads"]
    kvh = cfg["num_key_value_heads"]
    hd = d // h
    eps = cfg["rms_norm_eps"]
    theta = cfg["rope_theta"]
    t = len(tokens)
    pos = np.arange(t)
    x = w["model.embed_tokens.weight"][tokens]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."

        def proj(name, inp):
            y = inp @ w[p + name + ".weight"].T
            if p + name + ".bias" in w:
                y = y + w[p + name + ".bias"]
            return y

        hn = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = proj("self_attn.q_proj", hn).reshape(t, h, hd)
        k = proj("self_attn.k_proj", hn).reshape(t, kvh, hd)
        v = proj("self_attn.v_proj", hn).reshape(t, kvh, hd)
        q, k = rope(q, pos, theta), rope(k, pos, theta)
        k = np.repeat(k, h // kvh, axis=1)  # repeat_kv
        v = np.repeat(v, h // kvh, axis=1)
        scores = np.einsum("thd,shd->hts", q, k) / np.sqrt(hd)
        scores = scores + np.triu(np.full((t, t), -np.inf), k=1)[None]
        scores = scores - scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs = probs / probs.sum(axis=-1, keepdims=True)
        ctx = np.einsum("hts,shd->thd", probs, v).reshape(t, h * hd)
        x = x + proj("self_attn.o_proj", ctx)
        hn = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        x = x + proj("mlp.down_proj", silu(proj("mlp.gate_proj", hn)) * proj("mlp.up_proj", hn))
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["embed_tokens_for_head"] if cfg["tie_word_embeddings"] else w["lm_head.weight"]
    return x @ head.T


def make(variant, seed, cfg, dtype, qkv_bias):
    rng = np.random.default_rng(seed)
    d, v, f = cfg["hidden_size"], cfg["vocab_size"], cfg["intermediate_size"]
    hd = d // cfg["num_attention_heads"]
    kv = cfg["num_key_value_heads"] * hd
    w = {"model.embed_tokens.weight": rng.normal(0, 0.5, (v, d)), "model.norm.weight": 1 + rng.normal(0, 0.1, d)}
    if not cfg["tie_word_embeddings"]:
        w["lm_head.weight"] = rng.normal(0, 0.3, (v, d))
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        shapes = {
            "self_attn.q_proj": (d, d),
            "self_attn.k_proj": (kv, d),
            "self_attn.v_proj": (kv, d),
            "self_attn.o_proj": (d, d),
            "mlp.gate_proj": (f, d),
            "mlp.up_proj": (f, d),
            "mlp.down_proj": (d, f),
        }
        for name, shape in shapes.items():
            w[p + name + ".weight"] = rng.normal(0, 0.3, shape)
        if qkv_bias:
            for name, n in (("self_attn.q_proj", d), ("self_attn.k_proj", kv), ("self_attn.v_proj", kv)):
                w[p + name + ".bias"] = rng.normal(0, 0.2, n)
        w[p + "input_layernorm.weight"] = 1 + rng.normal(0, 0.1, d)
        w[p + "post_attention_layernorm.weight"] = 1 + rng.normal(0, 0.1, d)
    w = {k: a.astype(np.float32) for k, a in w.items()}
    out = os.path.join(HERE, f"tiny-llama-{variant}")
    os.makedirs(out, exist_ok=True)
    write_safetensors(os.path.join(out, "model.safetensors"), w, dtype)
    with open(os.path.join(out, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2, sort_keys=True)
        fh.write("\n")
    # The reference computes with exactly the stored values.
    stored = {k: (from_bf16_bits(to_bf16_bits(a)) if dtype == "BF16" else a).astype(np.float64) for k, a in w.items()}
    stored["embed_tokens_for_head"] = stored["model.embed_tokens.weight"]
    seqs = [list(rng.integers(0, v, 10)) for _ in range(2)]
    logits = [forward(cfg, stored, np.array(s)).tolist() for s in seqs]
    with open(os.path.join(out, "reference.json"), "w") as fh:
        json.dump({"tokens": [[int(t) for t in s] for s in seqs], "logits": logits}, fh)
        fh.write("\n")


BASE = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_act": "silu",
    "vocab_size": 48,
    "hidden_size": 32,
    "intermediate_size": 40,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 64,
}

if __name__ == "__main__":
    make("a", 1, {**BASE, "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                  "tie_word_embeddings": False, "torch_dtype": "float32"}, "F32", qkv_bias=False)
    make("b", 2, {**BASE, "model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "num_key_value_heads": 1,
                  "rms_norm_eps": 1e-6, "rope_theta": 500.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16",
                  "use_sliding_window": False, "sliding_window": 4096}, "BF16", qkv_bias=True)
