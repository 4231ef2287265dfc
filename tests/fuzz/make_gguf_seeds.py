#!/usr/bin/env python3
"""Writes the GGUF seed corpus of tests/fuzz (corpus/gguf/): small, valid
GGUF files that reach every part of the reader: each metadata value type
(nested arrays too), v2 and v3 headers, a non-default alignment, tensors of
the types ToF32 converts, and tokenizer metadata (SentencePiece and
byte-level BPE) with a chat template. Layout: ggml docs/gguf.md (version 3).
Deterministic: running it again writes the same bytes.

    python3 tests/fuzz/make_gguf_seeds.py tests/fuzz/corpus/gguf
"""
import os
import struct
import sys

U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
FMT = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?",
       U64: "<Q", I64: "<q", F64: "<d"}
# ggml type id -> (block elements, block bytes)
TYPES = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
         12: (256, 144), 13: (256, 176), 14: (256, 210), 15: (256, 292), 30: (1, 2)}


def s(text):
    b = text.encode()
    return struct.pack("<Q", len(b)) + b


def value(t, v, at=None):
    if t == STR:
        return s(v)
    if t == ARR:
        et, items = v
        out = struct.pack("<IQ", et, len(items))
        for item in items:
            out += value(et, item[1], item[0]) if et == ARR else value(et, item)
        return out
    return struct.pack(FMT[t], v)


def gguf(kvs, tensors, version=3, alignment=32):
    out = b"GGUF" + struct.pack("<IQQ", version, len(tensors), len(kvs))
    for key, t, v in kvs:
        out += s(key) + struct.pack("<I", t) + value(t, v)
    offset = 0
    blobs = []
    for name, ne, gtype, data in tensors:
        out += s(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", n) for n in ne)
        out += struct.pack("<IQ", gtype, offset)
        blobs.append((offset, data))
        offset += (len(data) + alignment - 1) // alignment * alignment
    out += b"\0" * ((-len(out)) % alignment)
    for off, data in blobs:
        out += data + b"\0" * ((-len(data)) % alignment)
    return out


def tensor(name, ne, gtype, seed):
    n = 1
    for d in ne:
        n *= d
    blk_elems, blk_bytes = TYPES[gtype]
    size = n // blk_elems * blk_bytes
    data = bytes((seed * 31 + i * 7) % 251 for i in range(size))
    if gtype in (1, 30):  # keep halves finite
        data = b"".join(struct.pack("<H", 0x3C00 + (i % 64)) for i in range(n))
    if gtype == 0:
        data = b"".join(struct.pack("<f", (i % 13) * 0.25 - 1.0) for i in range(n))
    return (name, ne, gtype, data)


TEMPLATE = ("{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
            "<|im_start|>system\nYou are helpful.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n"
            "{{ message['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def gpt2_symbols():
    def printable(x):
        return 33 <= x <= 126 or 0xA1 <= x <= 0xAC or x >= 0xAE
    syms, n = [], 0
    for b in range(256):
        if printable(b):
            syms.append(chr(b))
        else:
            syms.append(chr(256 + n))
            n += 1
    return syms


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    files = {}
    files["tensors-v3.gguf"] = gguf(
        [("general.architecture", STR, "llama"), ("general.name", STR, "fuzz"),
         ("general.alignment", U32, 64),
         ("u8", U8, 7), ("i8", I8, -7), ("u16", U16, 700), ("i16", I16, -700), ("i32", I32, -70000),
         ("f32", F32, 0.5), ("b", BOOL, True), ("u64", U64, 1 << 40), ("i64", I64, -(1 << 40)),
         ("f64", F64, 2.5), ("ints", ARR, (I32, [1, 2, 3])), ("floats", ARR, (F32, [0.5, 1.5])),
         ("nested", ARR, (ARR, [(U8, (U8, [1, 2])), (STR, (STR, ["a", "b"]))]))],
        [tensor("f32", [4, 2], 0, 1), tensor("f16", [8], 1, 2), tensor("bf16", [4], 30, 3),
         tensor("q4_0", [32], 2, 4), tensor("q4_1", [32], 3, 5), tensor("q5_0", [32], 6, 6),
         tensor("q5_1", [32], 7, 7), tensor("q8_0", [32, 2], 8, 8), tensor("q4_k", [256], 12, 9),
         tensor("q5_k", [256], 13, 10), tensor("q6_k", [256], 14, 11), tensor("q8_k", [256], 15, 12)],
        alignment=64)
    files["empty-v2.gguf"] = gguf([("general.architecture", STR, "llama")], [], version=2)
    spm_tokens = ["<unk>", "<s>", "</s>"] + ["<0x%02X>" % b for b in range(256)] + \
        ["\u2581", "\u2581t", "he", "\u2581the", "\u2581a", "in", "er", "\u2581Hello", "o", "l", "\u2581w"]
    spm_types = [2, 3, 3] + [6] * 256 + [1] * 11
    files["spm-tokenizer.gguf"] = gguf(
        [("general.architecture", STR, "llama"), ("tokenizer.ggml.model", STR, "llama"),
         ("tokenizer.ggml.tokens", ARR, (STR, spm_tokens)),
         ("tokenizer.ggml.scores", ARR, (F32, [0.0] * 259 + [-float(i) for i in range(11)])),
         ("tokenizer.ggml.token_type", ARR, (I32, spm_types)),
         ("tokenizer.ggml.bos_token_id", U32, 1), ("tokenizer.ggml.eos_token_id", U32, 2),
         ("tokenizer.ggml.unknown_token_id", U32, 0), ("tokenizer.ggml.add_bos_token", BOOL, True),
         ("tokenizer.ggml.add_eos_token", BOOL, False), ("tokenizer.ggml.add_space_prefix", BOOL, True),
         ("tokenizer.chat_template", STR, TEMPLATE)],
        [tensor("token_embd.weight", [4, len(spm_tokens)], 0, 13)])
    syms = gpt2_symbols()
    merges = [("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("1", "2")]
    bpe_tokens = syms + [a + b for a, b in merges] + ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>"]
    bpe_types = [1] * (len(syms) + len(merges)) + [3, 3, 3, 4]
    files["bpe-tokenizer.gguf"] = gguf(
        [("general.architecture", STR, "qwen2"), ("tokenizer.ggml.model", STR, "gpt2"),
         ("tokenizer.ggml.pre", STR, "qwen2"), ("tokenizer.ggml.tokens", ARR, (STR, bpe_tokens)),
         ("tokenizer.ggml.token_type", ARR, (I32, bpe_types)),
         ("tokenizer.ggml.merges", ARR, (STR, [a + " " + b for a, b in merges])),
         ("tokenizer.ggml.eos_token_id", U32, len(bpe_tokens) - 2),
         ("tokenizer.ggml.bos_token_id", U32, len(bpe_tokens) - 4),
         ("tokenizer.ggml.add_bos_token", BOOL, False), ("tokenizer.chat_template", STR, TEMPLATE)],
        [])
    for name, data in files.items():
        with open(os.path.join(out_dir, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus", "gguf"))
