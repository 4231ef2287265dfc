#!/usr/bin/env python3
"""PyTorch peer of bench/cuda_bench.cpp (issue 8): the same qwen2 forward pass,
written in PyTorch, on the same GGUF files, measured the same way.

What it runs. A small GGUF reader (numpy, over a memory map: header, metadata,
tensor infos, general.alignment; GGUF v2/v3 as local_backend/src/gguf.cpp reads
them) and dequantizers for F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K
and Q6_K (ggml's block layouts and arithmetic, as local_backend's quant.cpp),
run with torch ops on the GPU. Quantized files are dequantized once at load
into float16 weights: the peer computes with float16 weights, which is what a
PyTorch user does with such a file (so it reads 2 bytes per weight where the
engine reads the quantized bytes). Q4_K at the 0.5B shape is mostly Q5_0 (the
896-wide rows are no multiple of 256; write-random falls back as
llama-quantize does).

The decoder is Qwen2 as Hugging Face's modeling_qwen2 writes it: RMSNorm in
float32 then scaled in the weight's dtype, q/k/v projections with biases (one
fused matrix, as gpt-fast fuses them), NEOX rotary embedding (rotate_half) with
theta = rope.freq_base, grouped-query attention through
torch.nn.functional.scaled_dot_product_attention, SwiGLU (gate and up fused),
tied or untied classifier. The KV cache is static and preallocated per
experiment ([sequences, kv_heads, positions, head_dim] per layer, positions =
what the experiment needs rounded up to 16), so a decode step has fixed shapes
and is captured with torch.cuda.CUDAGraph (as gpt-fast does): the cache is
written at each sequence's position by index, and decode attention reads the
whole static cache under a mask of the positions written so far. Decode
attention puts each KV head's group of query heads in SDPA's query-length
dimension, which is exact GQA with any SDPA kernel; prefill uses
enable_gqa=True (torch >= 2.5) or repeated K/V.

Modes: "eager" (plain PyTorch) and "graphs" (each timed prefill and decode step
is one CUDAGraph replay of the same code, captured after two warm-up runs on a
side stream).

What it measures, exactly as cuda_bench.cpp (its header says more):
  - prefill: one sequence's --prefill-token prompt (512) in one forward, the
    last token's logits in host memory; tokens/s;
  - TTFT: that prefill plus one decode step (the next token's logits in host
    memory), ms;
  - decode b1 and aggregate decode at --concurrency sequences (1,8,32,64):
    each sequence has its own --prompt-token prompt (16, prefilled untimed),
    then --decode steps (128) of one token per sequence, every sequence's
    logits copied to host memory as float32 each step (the engine's API returns
    them so); aggregate tokens/s = sequences * steps / time.
Every step ends with the logits in pinned host memory (torch.cuda.synchronize),
timed with time.perf_counter; each figure is the median of --reps timed runs
after one untimed warm-up run (which also captures the graphs). Token ids are
the bench's: (1000 + 7919 * (i + salt)) % vocab.

Also here: the device-to-device copy bandwidth through torch (bytes read +
written, as the bench counts), and each row's share of the bound for the bytes
the peer reads per token (float16 weights + KV cache).

  torch_peer.py [--model-dir DIR] [--shapes 0.5b,7b] [--types f16,q8_0,q4_k]
                [--modes eager,graphs] [--quick] [--reps N] [--decode N]
                [--prompt N] [--prefill N] [--concurrency 1,8,32,64]
                [--dtype float16|bfloat16] [--logits host|device] [--json PATH]
  torch_peer.py verify --file F.gguf --ref REF.json [--device cpu] [--dtype float32]
    checks this forward pass against reference logits (prompt, then decode
    tokens; see verify() below), e.g. the C++ engine's on the CPU.

--json PATH is rewritten after every row. Files missing from --model-dir are
skipped (cuda_bench.cpp writes them). Needs torch and numpy.
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------- GGUF

# ggml type id -> (name, elements per block, bytes per block)
GGML_TYPES = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    9: ("Q8_1", 32, 36),
    10: ("Q2_K", 256, 84),
    11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176),
    14: ("Q6_K", 256, 210),
    15: ("Q8_K", 256, 292),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    30: ("BF16", 1, 2),
}

# GGUF metadata value types -> struct format (8 string, 9 array)
_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32, 6: np.float32,
          7: np.bool_, 10: np.uint64, 11: np.int64, 12: np.float64}


class TensorInfo:
    def __init__(self, name, ne, type_id, offset):
        self.name = name
        self.ne = ne  # ggml order: ne[0] is the row length
        self.type_id = type_id
        self.offset = offset  # from the data section's start
        if type_id not in GGML_TYPES:
            raise ValueError(f"tensor {name}: unknown ggml type {type_id}")
        self.type_name, block, block_bytes = GGML_TYPES[type_id]
        self.n = int(np.prod(ne)) if ne else 1
        if ne and ne[0] % block != 0:
            raise ValueError(f"tensor {name}: row length {ne[0]} is no multiple of {self.type_name}'s block {block}")
        self.nbytes = self.n // block * block_bytes


class GgufFile:
    """A GGUF file's header, metadata and tensor infos; tensor bytes from a map."""

    def __init__(self, path):
        self.path = path
        # Copy-on-write map: writable to numpy/torch (no warnings), never written.
        self.mm = np.memmap(path, dtype=np.uint8, mode="c")
        if bytes(self.mm[0:4]) != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        (self.version,) = struct.unpack_from("<I", self.mm, 4)
        if self.version not in (2, 3):
            raise ValueError(f"{path}: unsupported GGUF version {self.version} (2, 3)")
        n_tensors, n_kv = struct.unpack_from("<QQ", self.mm, 8)
        self._pos = 24
        self.metadata = {}
        for _ in range(n_kv):
            key = self._string()
            (vtype,) = self._unpack("<I")
            self.metadata[key] = self._value(vtype)
        infos = []
        for _ in range(n_tensors):
            name = self._string()
            (n_dims,) = self._unpack("<I")
            ne = list(self._unpack("<" + "Q" * n_dims))
            type_id, offset = self._unpack("<IQ")
            infos.append(TensorInfo(name, ne, type_id, offset))
        self.alignment = int(self.metadata.get("general.alignment", 32))
        self.data_start = (self._pos + self.alignment - 1) // self.alignment * self.alignment
        self.tensors = {}
        for t in infos:
            if t.offset % self.alignment != 0:
                raise ValueError(f"{path}: tensor {t.name} offset {t.offset} is not aligned")
            if self.data_start + t.offset + t.nbytes > len(self.mm):
                raise ValueError(f"{path}: tensor {t.name} lies outside the file (truncated?)")
            self.tensors[t.name] = t

    def _unpack(self, fmt):
        v = struct.unpack_from(fmt, self.mm, self._pos)
        self._pos += struct.calcsize(fmt)
        return v

    def _string(self):
        (n,) = self._unpack("<Q")
        s = bytes(self.mm[self._pos:self._pos + n]).decode("utf-8", errors="replace")
        self._pos += n
        return s

    def _value(self, vtype):
        if vtype in _SCALAR:
            return self._unpack(_SCALAR[vtype])[0]
        if vtype == 8:
            return self._string()
        if vtype == 9:
            etype, count = self._unpack("<IQ")
            if etype in _NUMPY:
                dt = np.dtype(_NUMPY[etype])
                arr = np.frombuffer(self.mm, dtype=dt, count=count, offset=self._pos).copy()
                self._pos += dt.itemsize * count
                return arr
            return [self._value(etype) for _ in range(count)]
        raise ValueError(f"{self.path}: unknown metadata value type {vtype}")

    def raw(self, name):
        """The tensor's bytes as a uint8 numpy array (a view of the map)."""
        t = self.tensors[name]
        start = self.data_start + t.offset
        return self.mm[start:start + t.nbytes]

    def get(self, key, default=None):
        return self.metadata.get(key, default)


# ------------------------------------------------------------ dequantization
# Each takes a uint8 tensor of whole blocks (any device) and returns float32
# values in ggml's order, computed as ggml's dequantize_row_* does.


def _f16(cols):
    # [N, 2] bytes -> [N, 1] float32 (clone: fresh storage, so the dtype view
    # never depends on the slice's strides or offset).
    return cols.reshape(-1).clone().view(torch.float16).to(torch.float32).reshape(-1, 1)


def _dq_q8_0(b):
    b = b.view(-1, 34)
    q = b[:, 2:].reshape(-1).clone().view(torch.int8).to(torch.float32).reshape(-1, 32)
    return (q * _f16(b[:, 0:2])).reshape(-1)


def _dq_q4_0(b):
    b = b.view(-1, 18)
    qs = b[:, 2:]
    q = torch.cat([(qs & 0xF).to(torch.int32), (qs >> 4).to(torch.int32)], 1) - 8
    return (q.to(torch.float32) * _f16(b[:, 0:2])).reshape(-1)


def _dq_q4_1(b):
    b = b.view(-1, 20)
    qs = b[:, 4:]
    q = torch.cat([(qs & 0xF).to(torch.int32), (qs >> 4).to(torch.int32)], 1)
    return (q.to(torch.float32) * _f16(b[:, 0:2]) + _f16(b[:, 2:4])).reshape(-1)


def _q5_high_bits(qh_bytes):
    # qh: 32 bits, bit j is the fifth bit of value j (j < 16: low nibbles).
    q = qh_bytes.to(torch.int32)  # [N, 4], little-endian
    qh = (q[:, 0:1] | (q[:, 1:2] << 8) | (q[:, 2:3] << 16) | (q[:, 3:4] << 24))  # [N, 1]
    j = torch.arange(32, device=qh.device, dtype=torch.int32)
    return ((qh >> j) & 1) << 4  # [N, 32]


def _dq_q5_0(b):
    b = b.view(-1, 22)
    h = _q5_high_bits(b[:, 2:6])
    qs = b[:, 6:]
    x0 = ((qs & 0xF).to(torch.int32) | h[:, :16]) - 16
    x1 = ((qs >> 4).to(torch.int32) | h[:, 16:]) - 16
    return (torch.cat([x0, x1], 1).to(torch.float32) * _f16(b[:, 0:2])).reshape(-1)


def _dq_q5_1(b):
    b = b.view(-1, 24)
    h = _q5_high_bits(b[:, 4:8])
    qs = b[:, 8:]
    x0 = (qs & 0xF).to(torch.int32) | h[:, :16]
    x1 = (qs >> 4).to(torch.int32) | h[:, 16:]
    return (torch.cat([x0, x1], 1).to(torch.float32) * _f16(b[:, 0:2]) + _f16(b[:, 2:4])).reshape(-1)


def _dq_q4_k(b):
    b = b.view(-1, 144)
    n = b.shape[0]
    d = _f16(b[:, 0:2])
    dmin = _f16(b[:, 2:4])
    s = b[:, 4:16].to(torch.int32)
    # get_scale_min_k4: 6-bit scales and mins of the 8 sub-blocks of 32.
    sc = torch.cat([s[:, 0:4] & 63, (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)], 1)
    mn = torch.cat([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], 1)
    qs = b[:, 16:].reshape(n, 4, 32)
    q = torch.stack([(qs & 0xF), (qs >> 4)], 2).reshape(n, 8, 32).to(torch.float32)
    d1 = d * sc.to(torch.float32)  # [N, 8]
    m1 = dmin * mn.to(torch.float32)
    return (d1[:, :, None] * q - m1[:, :, None]).reshape(-1)


def _dq_q6_k(b):
    b = b.view(-1, 210)
    n = b.shape[0]
    ql = b[:, 0:128].to(torch.int32)
    qh = b[:, 128:192].to(torch.int32)
    sc = b[:, 192:208].reshape(-1).clone().view(torch.int8).to(torch.float32).reshape(-1, 16)
    d = _f16(b[:, 208:210])
    halves = []
    for h in range(2):
        l0 = ql[:, 64 * h:64 * h + 32]
        l1 = ql[:, 64 * h + 32:64 * h + 64]
        hh = qh[:, 32 * h:32 * h + 32]
        q1 = ((l0 & 0xF) | (((hh >> 0) & 3) << 4)) - 32
        q2 = ((l1 & 0xF) | (((hh >> 2) & 3) << 4)) - 32
        q3 = ((l0 >> 4) | (((hh >> 4) & 3) << 4)) - 32
        q4 = ((l1 >> 4) | (((hh >> 6) & 3) << 4)) - 32
        halves.append(torch.cat([q1, q2, q3, q4], 1))  # [N, 128]: 8 groups of 16
    q = torch.cat(halves, 1).reshape(n, 16, 16).to(torch.float32)
    ds = d * sc  # [N, 16], d * sc[is] as ggml
    return (ds[:, :, None] * q).reshape(-1)


_DEQUANT = {
    "Q8_0": _dq_q8_0, "Q4_0": _dq_q4_0, "Q4_1": _dq_q4_1, "Q5_0": _dq_q5_0, "Q5_1": _dq_q5_1,
    "Q4_K": _dq_q4_k, "Q6_K": _dq_q6_k,
}


def dequantize(raw, info, dtype, device, chunk_blocks=1 << 20):
    """The tensor `info` (raw: its uint8 numpy bytes) as a `dtype` tensor on
    `device`, shape [ne[1], ne[0]] (rows of ne[0]) or [ne[0]]."""
    shape = [info.ne[1], info.ne[0]] if len(info.ne) >= 2 else [info.ne[0]]
    if len(info.ne) > 2 and int(np.prod(info.ne[2:])) != 1:
        raise ValueError(f"tensor {info.name}: more than 2 dimensions")
    src = torch.from_numpy(raw).to(device)
    name = info.type_name
    if name == "F32":
        out = src.view(torch.float32).to(dtype)
    elif name == "F16":
        out = src.view(torch.float16).to(dtype)
    elif name == "BF16":
        out = src.view(torch.bfloat16).to(dtype)
    elif name in _DEQUANT:
        _, block, block_bytes = GGML_TYPES[info.type_id]
        fn = _DEQUANT[name]
        blocks = src.view(-1, block_bytes)
        out = torch.empty(info.n, dtype=dtype, device=device)
        for b0 in range(0, blocks.shape[0], chunk_blocks):
            part = blocks[b0:b0 + chunk_blocks]
            out[b0 * block:(b0 + part.shape[0]) * block] = fn(part.reshape(-1)).to(dtype)
    else:
        raise ValueError(f"tensor {info.name}: no dequantizer for {name}")
    del src
    return out.reshape(shape)


# --------------------------------------------------------------------- model


def _has_sdpa():
    return hasattr(F, "scaled_dot_product_attention")


def _sdpa_gqa_supported():
    if not _has_sdpa():
        return False
    try:
        q = torch.zeros(1, 4, 2, 8)
        k = torch.zeros(1, 2, 2, 8)
        F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
        return True
    except (TypeError, RuntimeError):
        return False


def attention(q, k, v, mask=None, causal=False):
    """softmax(q k^T / sqrt(d)) v; q [B, H, T, D], k/v [B, H, S, D] (same heads)."""
    if _has_sdpa():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    # torch < 2.0: the same in float32.
    scores = torch.matmul(q.float(), k.float().transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        t, s = scores.shape[-2], scores.shape[-1]
        scores = scores.masked_fill(~torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t), float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.matmul(torch.softmax(scores, -1), v.float()).to(q.dtype)


class Qwen2:
    """Weights of a qwen2 GGUF file in `dtype` on `device`, and its forward pass."""

    def __init__(self, gguf, device, dtype):
        g = gguf.get
        arch = g("general.architecture")
        if arch != "qwen2":
            raise ValueError(f"{gguf.path}: architecture {arch}, this peer runs qwen2")
        a = arch + "."
        self.device, self.dtype = device, dtype
        self.n_embd = int(g(a + "embedding_length"))
        self.n_layer = int(g(a + "block_count"))
        self.n_ff = int(g(a + "feed_forward_length"))
        self.n_head = int(g(a + "attention.head_count"))
        self.n_kv = int(g(a + "attention.head_count_kv", self.n_head))
        self.hd = int(g(a + "attention.key_length", self.n_embd // self.n_head))
        self.rope_dims = int(g(a + "rope.dimension_count", self.hd))
        self.eps = float(g(a + "attention.layer_norm_rms_epsilon", 1e-6))
        self.base = float(g(a + "rope.freq_base", 10000.0))
        if self.rope_dims != self.hd:
            raise ValueError("partial rotary embedding is not supported here")
        if g(a + "rope.scaling.type", "none") not in ("none", ""):
            raise ValueError("rope scaling is not supported here")
        self.types = {}
        self.weight_bytes = 0  # bytes of this peer's matrices one decode step reads

        def mat(name):
            info = gguf.tensors[name]
            self.types[info.type_name] = self.types.get(info.type_name, 0) + 1
            return dequantize(gguf.raw(name), info, dtype, device)

        def vec(name):
            return dequantize(gguf.raw(name), gguf.tensors[name], dtype, device)

        self.embd = mat("token_embd.weight")  # [vocab, n_embd]
        self.vocab = self.embd.shape[0]
        self.layers = []
        for i in range(self.n_layer):
            p = f"blk.{i}."
            L = {}
            L["attn_norm"] = vec(p + "attn_norm.weight")
            L["ffn_norm"] = vec(p + "ffn_norm.weight")
            L["wqkv"] = torch.cat([mat(p + "attn_q.weight"), mat(p + "attn_k.weight"), mat(p + "attn_v.weight")], 0)
            L["bqkv"] = torch.cat([vec(p + "attn_q.bias"), vec(p + "attn_k.bias"), vec(p + "attn_v.bias")], 0)
            L["wo"] = mat(p + "attn_output.weight")
            L["w13"] = torch.cat([mat(p + "ffn_gate.weight"), mat(p + "ffn_up.weight")], 0)
            L["w2"] = mat(p + "ffn_down.weight")
            for k in ("wqkv", "wo", "w13", "w2"):
                self.weight_bytes += L[k].numel() * L[k].element_size()
            self.layers.append(L)
        self.out_norm = vec("output_norm.weight")
        self.tied = "output.weight" not in gguf.tensors
        self.out = self.embd if self.tied else mat("output.weight")
        self.weight_bytes += self.out.numel() * self.out.element_size()
        self.gqa = _sdpa_gqa_supported()
        self._rope_cache = {}

    def kv_bytes_per_position(self):
        return self.n_layer * 2 * self.n_kv * self.hd * torch.empty(0, dtype=self.dtype).element_size()

    def rope_table(self, positions):
        """cos, sin [positions, hd/2] in dtype (theta = pos * base^(-2i/d))."""
        if positions not in self._rope_cache:
            inv = 1.0 / (self.base ** (torch.arange(0, self.hd, 2, dtype=torch.float32) / self.hd))
            theta = torch.arange(positions, dtype=torch.float32)[:, None] * inv[None, :]
            self._rope_cache[positions] = (theta.cos().to(self.device, self.dtype), theta.sin().to(self.device, self.dtype))
        return self._rope_cache[positions]

    def rmsnorm(self, x, w):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return xf.to(self.dtype) * w

    @staticmethod
    def rope(x, cos, sin):
        # NEOX: pairs (x[i], x[i + d/2]); cos/sin broadcast over heads.
        half = x.shape[-1] // 2
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)

    def _layers(self, x, cos, sin, attend):
        B, T, _ = x.shape
        H, K, D = self.n_head, self.n_kv, self.hd
        for li, L in enumerate(self.layers):
            h = self.rmsnorm(x, L["attn_norm"])
            qkv = F.linear(h, L["wqkv"], L["bqkv"])
            q, k, v = qkv.split([H * D, K * D, K * D], -1)
            q = self.rope(q.view(B, T, H, D).transpose(1, 2), cos, sin)
            k = self.rope(k.view(B, T, K, D).transpose(1, 2), cos, sin)
            v = v.view(B, T, K, D).transpose(1, 2)
            o = attend(li, q, k, v)  # [B, T, H * D]
            x = x + F.linear(o, L["wo"])
            h = self.rmsnorm(x, L["ffn_norm"])
            g, u = F.linear(h, L["w13"]).split([self.n_ff, self.n_ff], -1)
            x = x + F.linear(F.silu(g) * u, L["w2"])
        return x

    def logits(self, x_last):
        return F.linear(self.rmsnorm(x_last, self.out_norm), self.out).float()

    def prefill(self, tokens, kc, vc):
        """tokens [B, P] at positions 0..P-1 of B fresh sequences; stores K/V in
        the caches' first P positions; float32 logits of each last token [B, vocab]."""
        B, P = tokens.shape
        cos, sin = self.rope_table(kc[0].shape[2])
        cos, sin = cos[:P], sin[:P]  # broadcast over [B, heads, P, D/2]
        H, K = self.n_head, self.n_kv

        def attend(li, q, k, v):
            kc[li][:B, :, :P] = k
            vc[li][:B, :, :P] = v
            if H != K and self.gqa:
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            else:
                if H != K:
                    k = k.repeat_interleave(H // K, 1)
                    v = v.repeat_interleave(H // K, 1)
                o = attention(q, k, v, causal=True)
            return o.transpose(1, 2).reshape(B, P, H * self.hd)

        x = self._layers(F.embedding(tokens, self.embd), cos, sin, attend)
        return self.logits(x[:, -1])

    def decode(self, tokens, pos, kc, vc, bidx):
        """One token per sequence: tokens [B] at positions pos [B]; float32 logits [B, vocab]."""
        B = tokens.shape[0]
        S = kc[0].shape[2]
        cos_t, sin_t = self.rope_table(S)
        cos = cos_t[pos][:, None, None, :]  # [B, 1, 1, D/2]
        sin = sin_t[pos][:, None, None, :]
        H, K, D = self.n_head, self.n_kv, self.hd
        G = H // K
        # Positions each sequence has stored, its new one included.
        mask = (torch.arange(S, device=tokens.device)[None, :] <= pos[:, None]).view(B, 1, 1, S)

        def attend(li, q, k, v):
            kcl, vcl = kc[li], vc[li]
            kcl[bidx, :, pos] = k[:, :, 0]
            vcl[bidx, :, pos] = v[:, :, 0]
            # Query heads of one KV head as SDPA's query positions: exact GQA.
            o = attention(q.reshape(B, K, G, D), kcl[:B], vcl[:B], mask=mask)
            return o.reshape(B, 1, H * D)

        x = self._layers(F.embedding(tokens[:, None], self.embd), cos, sin, attend)
        return self.logits(x[:, -1])


class Session:
    """B sequences with a static KV cache of `positions` positions; eager or
    CUDA-graph prefill and decode; logits land in (pinned) host memory."""

    def __init__(self, model, B, positions, graphs, logits_to_host=True):
        self.m, self.B, self.graphs, self.to_host = model, B, graphs, logits_to_host
        S = (positions + 15) // 16 * 16
        dev = model.device
        shape = (B, model.n_kv, S, model.hd)
        self.kc = [torch.zeros(shape, dtype=model.dtype, device=dev) for _ in range(model.n_layer)]
        self.vc = [torch.zeros(shape, dtype=model.dtype, device=dev) for _ in range(model.n_layer)]
        self.bidx = torch.arange(B, device=dev)
        self.cuda = torch.device(dev).type == "cuda"
        self.host = torch.empty((B, model.vocab), dtype=torch.float32, pin_memory=self.cuda)
        self.graph_cache = {}

    def _run(self, key, fn, inputs):
        """fn(*static inputs) -> device logits; inputs: host tensors copied into them."""
        if not self.graphs:
            out = fn(*[t.to(self.m.device, non_blocking=True) for t in inputs])
        else:
            if key not in self.graph_cache:
                static = [t.to(self.m.device) for t in inputs]
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(2):
                        fn(*static)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    out_static = fn(*static)
                self.graph_cache[key] = (graph, static, out_static)
            graph, static, out = self.graph_cache[key]
            for s, t in zip(static, inputs):
                s.copy_(t, non_blocking=True)
            graph.replay()
        rows = out.shape[0]
        if self.to_host:
            self.host[:rows].copy_(out, non_blocking=True)
        if self.cuda:
            torch.cuda.synchronize()
        return self.host[:rows] if self.to_host else out

    def prefill(self, tokens, graph=None):
        """tokens: host int64 [B, P]. Eager unless this session captures graphs
        (and graph is not False)."""
        use = self.graphs if graph is None else (graph and self.graphs)
        saved, self.graphs = self.graphs, use
        try:
            return self._run(("prefill", tuple(tokens.shape)),
                             lambda t: self.m.prefill(t, self.kc, self.vc), [tokens])
        finally:
            self.graphs = saved

    def decode(self, tokens, pos):
        """tokens, pos: host int64 [B]."""
        return self._run(("decode",), lambda t, p: self.m.decode(t, p, self.kc, self.vc, self.bidx), [tokens, pos])


# --------------------------------------------------------------- measuring


def tokens(n, vocab, salt):
    i = np.arange(n, dtype=np.int64)
    return (1000 + 7919 * (i + salt)) % vocab


def median(v):
    v = sorted(v)
    if not v:
        return float("nan")
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def copy_bandwidth(device, mib=4096):
    """Device-to-device copy, bytes read + written per second (GB/s), median of 10."""
    n = mib << 20
    src = torch.empty(n, dtype=torch.uint8, device=device).fill_(0x5A)
    dst = torch.empty(n, dtype=torch.uint8, device=device).fill_(0x33)
    rates = []
    for i in range(12):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        dst.copy_(src)
        b.record()
        b.synchronize()
        if i >= 2:
            rates.append(2 * n / (a.elapsed_time(b) * 1e-3) / 1e9)
    del src, dst
    torch.cuda.empty_cache()
    return median(rates), max(rates)


def measure(model, mode, args):
    """One row: prefill, TTFT, and decode at each concurrency, in `mode`."""
    graphs = mode == "graphs"
    host = args.logits == "host"
    vocab = model.vocab
    row = {}
    # Prefill and TTFT on one sequence.
    s = Session(model, 1, args.prefill + 1, graphs, host)
    prompt = torch.from_numpy(tokens(args.prefill, vocab, 7))[None, :]
    nxt = torch.from_numpy(tokens(1, vocab, 11))
    pos = torch.tensor([args.prefill], dtype=torch.int64)
    pre, ttft = [], []
    for r in range(args.reps + 1):
        t0 = time.perf_counter()
        s.prefill(prompt)
        t1 = time.perf_counter()
        s.decode(nxt, pos)
        t2 = time.perf_counter()
        if r > 0:
            pre.append((t1 - t0) * 1e3)
            ttft.append((t2 - t0) * 1e3)
    # Untimed: the bench's sanity numbers (same function, same argmax).
    lg = s.prefill(prompt)[0].double()
    row["prefill_argmax"] = int(lg.argmax())
    row["prefill_logits_norm"] = float(lg.norm())
    row["logits_finite"] = bool(torch.isfinite(lg).all())
    del s
    row["prefill_ms"] = median(pre)
    row["prefill_runs_ms"] = pre
    row["prefill_tokens_per_s"] = args.prefill / (median(pre) * 1e-3)
    row["ttft_ms"] = median(ttft)
    row["ttft_runs_ms"] = ttft
    agg, agg_runs = {}, {}
    for n in args.concurrency:
        s = Session(model, n, args.prompt + args.decode, graphs, host)
        prompts = torch.from_numpy(np.stack([tokens(args.prompt, vocab, 100 + 37 * i) for i in range(n)]))
        gens = torch.from_numpy(np.stack([tokens(args.decode, vocab, 5000 + 53 * i) for i in range(n)]))
        gens_t = [gens[:, j].contiguous() for j in range(args.decode)]
        pos_t = [torch.full((n,), args.prompt + j, dtype=torch.int64) for j in range(args.decode)]
        rates = []
        for r in range(args.reps + 1):
            s.prefill(prompts, graph=False)  # untimed; eager in both modes
            t0 = time.perf_counter()
            for j in range(args.decode):
                s.decode(gens_t[j], pos_t[j])
            dt = time.perf_counter() - t0
            if r > 0:
                rates.append(n * args.decode / dt)
        del s
        if model.device != "cpu":
            torch.cuda.empty_cache()
        agg[str(n)] = median(rates)
        agg_runs[str(n)] = rates
        print(f"  {mode} {n} sequences: {agg[str(n)]:.1f} tok/s", file=sys.stderr, flush=True)
    row["aggregate_tokens_per_s"] = agg
    row["aggregate_runs_tokens_per_s"] = agg_runs
    row["decode_tokens_per_s"] = agg.get("1", float("nan"))
    row["decode_runs_tokens_per_s"] = agg_runs.get("1", [])
    return row


SHAPES = {"0.5b": "qwen2.5-0.5b", "7b": "qwen2.5-7b"}


def clean(v):
    """NaN/inf -> None, recursively (JSON has no NaN)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [clean(x) for x in v]
    return v


def write_json(path, head, rows):
    if not path:
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(clean(dict(head, rows=rows)), f, indent=1)
    os.replace(tmp, path)


def bench(args):
    if not torch.cuda.is_available():
        print("no CUDA device for torch", file=sys.stderr)
        return 2
    dev = "cuda"
    dtype = getattr(torch, args.dtype)
    if args.quick:
        args.decode = args.decode or 32
        args.reps = args.reps or 2
    args.decode = args.decode or 128
    args.reps = args.reps or 3
    args.concurrency = sorted(set(args.concurrency) | {1})
    copy_gbps, copy_best = copy_bandwidth(dev)
    props = torch.cuda.get_device_properties(0)
    head = {
        "engine": "torch",
        "torch_version": torch.__version__,
        "device": f"{props.name} ({props.total_memory / 2**30:.1f} GiB)",
        "dtype": args.dtype,
        "sdpa_enable_gqa": _sdpa_gqa_supported(),
        "logits": "host float32, every sequence, every step" if args.logits == "host" else "left on the device",
        "copy_bandwidth_GBps": copy_gbps,
        "copy_bandwidth_best_GBps": copy_best,
        "bandwidth_convention": "device-to-device copy, bytes read + bytes written per second (median of 10)",
        "prefill_tokens": args.prefill,
        "prompt_tokens": args.prompt,
        "decode_tokens": args.decode,
        "reps": args.reps,
        "concurrency": args.concurrency,
        "quick": bool(args.quick),
    }
    print(f"torch {torch.__version__} on {head['device']}; copy bandwidth {copy_gbps:.0f} GB/s (read + written)",
          file=sys.stderr, flush=True)
    rows = []
    for shape in args.shapes:
        for typ in args.types:
            path = os.path.join(args.model_dir, f"{SHAPES[shape]}-{typ}.gguf")
            base = {"engine": "torch", "shape": SHAPES[shape], "type": typ, "file": path}
            if not os.path.exists(path):
                print(f"{path}: missing, skipped", file=sys.stderr, flush=True)
                for mode in args.modes:
                    rows.append(dict(base, mode=mode, ok=False, error="model file missing"))
                write_json(args.json, head, rows)
                continue
            model = None
            try:
                t0 = time.perf_counter()
                model = Qwen2(GgufFile(path), dev, dtype)
                torch.cuda.synchronize()
                load_s = time.perf_counter() - t0
                print(f"loaded {path} in {load_s:.1f} s ({model.weight_bytes / 1e9:.2f} GB of {args.dtype} matrices)",
                      file=sys.stderr, flush=True)
            except Exception as e:  # a failed load costs this file's rows only
                print(f"{path}: load failed: {e!r}", file=sys.stderr, flush=True)
                for mode in args.modes:
                    rows.append(dict(base, mode=mode, ok=False, error=f"load failed: {e!r}"))
                write_json(args.json, head, rows)
                continue
            kv_pos = args.prompt + args.decode / 2
            bpt = model.weight_bytes + model.kv_bytes_per_position() * kv_pos
            for mode in args.modes:
                row = dict(base, mode=mode, load_s=load_s, weight_types=model.types,
                           weight_bytes_per_token=model.weight_bytes,
                           kv_bytes_per_position=model.kv_bytes_per_position(), kv_positions_read=kv_pos,
                           bytes_per_token=bpt)
                try:
                    row.update(measure(model, mode, args))
                    row["ok"] = True
                    row["bound_tokens_per_s"] = copy_gbps * 1e9 / bpt
                    row["bound_share"] = row["decode_tokens_per_s"] / row["bound_tokens_per_s"]
                    print(f"{SHAPES[shape]} {typ} {mode}: prefill {row['prefill_tokens_per_s']:.0f} tok/s, "
                          f"TTFT {row['ttft_ms']:.1f} ms, decode b1 {row['decode_tokens_per_s']:.1f} tok/s",
                          file=sys.stderr, flush=True)
                except Exception as e:
                    print(f"{path} {mode}: failed: {e!r}", file=sys.stderr, flush=True)
                    row.update(ok=False, error=f"{e!r}")
                torch.cuda.synchronize()
                torch.cuda.empty_cache()
                rows.append(row)
                write_json(args.json, head, rows)
            del model
            torch.cuda.empty_cache()
    return 0 if all(r.get("ok") for r in rows) else 1


def verify(args):
    """Runs ref["prompt"] through a prefill, then each of ref["decode"] one at a
    time, and compares the logits after each with ref["logits"] (one list per
    step, the prefill's first) by ||ours - ref|| / ||ref||."""
    dtype = getattr(torch, args.dtype)
    ref = json.load(open(args.ref))
    model = Qwen2(GgufFile(args.file), args.device, dtype)
    prompt = torch.tensor(ref["prompt"], dtype=torch.int64)[None, :]
    steps = ref["decode"]
    worst = 0.0
    for graphs in ([False, True] if args.device != "cpu" else [False]):
        s = Session(model, 1, len(ref["prompt"]) + len(steps) + 1, graphs)
        outs = [s.prefill(prompt).clone()]
        for j, t in enumerate(steps):
            outs.append(s.decode(torch.tensor([t], dtype=torch.int64),
                                 torch.tensor([len(ref["prompt"]) + j], dtype=torch.int64)).clone())
        for j, (o, r) in enumerate(zip(outs, ref["logits"])):
            r = torch.tensor(r, dtype=torch.float64)
            o = o[0].double()
            err = float((o - r).norm() / r.norm())
            worst = max(worst, err)
            print(f"{'graphs' if graphs else 'eager'} step {j}: rel err {err:.3g}, argmax {int(o.argmax())} "
                  f"vs {int(r.argmax())}")
    print(f"worst rel err {worst:.3g}")
    return 0 if worst < args.tolerance else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("cmd", nargs="?", default="bench", choices=["bench", "verify"])
    p.add_argument("--model-dir", default=os.environ.get("TOLLGATE_BENCH_MODEL_DIR", "bench-models"))
    p.add_argument("--shapes", default="0.5b,7b")
    p.add_argument("--types", default="f16,q8_0,q4_k")
    p.add_argument("--modes", default="eager,graphs")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=0)
    p.add_argument("--decode", type=int, default=0)
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--prefill", type=int, default=512)
    p.add_argument("--concurrency", default="1,8,32,64")
    p.add_argument("--dtype", default=None, help="float16 (bench default), bfloat16, float32 (verify default)")
    p.add_argument("--logits", default="host", choices=["host", "device"])
    p.add_argument("--json", default="")
    p.add_argument("--file", help="verify: the GGUF file")
    p.add_argument("--ref", help="verify: reference logits JSON")
    p.add_argument("--device", default="cpu", help="verify: cpu or cuda")
    p.add_argument("--tolerance", type=float, default=1e-3, help="verify: worst relative error allowed")
    args = p.parse_args()
    if args.cmd == "verify":
        args.dtype = args.dtype or "float32"
        return verify(args)
    args.dtype = args.dtype or "float16"
    args.shapes = [s for s in args.shapes.split(",") if s]
    for s in args.shapes:
        if s not in SHAPES:
            p.error(f"unknown shape {s} (0.5b, 7b)")
    args.types = [t for t in args.types.split(",") if t]
    args.modes = [m for m in args.modes.split(",") if m]
    args.concurrency = [max(1, int(c)) for c in args.concurrency.split(",") if c]
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
