#!/usr/bin/env python3
"""Write a random-weight Mamba-1 GGUF of a real state-spaces/mamba-*-hf shape, for llama.cpp.

For measuring llama.cpp beside statesoup (bench/vs_llamacpp.sh): the same shapes as
statesoup-bench --shape (bench/bench.c: expand 2, d_state 16, d_conv 4, dt_rank ceil(d/16),
vocab 50280, tied output), weights drawn like that bench's (uniform, scaled by 1/sqrt(fan-in);
A = -(1..16) per channel, D = 1, dt bias softplus^-1 of a log-uniform dt in [0.001, 0.1]).
The values differ from the bench's own checkpoint (another generator); only the shapes and
types matter for speed.

Tensor types follow what llama.cpp's own converter writes for --outtype F32/BF16/F16/Q8_0:
1-D tensors, norms, conv1d, A and D stay F32; the matrices (token embedding, which is also the
tied output, in_proj, x_proj, dt_proj, out_proj) take the type; a matrix whose rows are not a
whole number of Q8_0 blocks (dt_proj at 130m: rows of 48) falls back to F16, as the converter
does. Tensors are written one at a time (memory: one tensor at once).

Needs numpy and gguf-py (the llama.cpp checkout's gguf-py folder: --gguf-py). Not used by
statesoupd; a measuring tool only.
"""

import argparse
import json
import math
import os
import sys
import types

SHAPES = {  # d_model, n_layer (bench/bench.c's table)
    "130m": (768, 24),
    "370m": (1024, 48),
    "790m": (1536, 48),
    "1.4b": (2048, 48),
    "2.8b": (2560, 64),
}
VOCAB = 50280
D_STATE = 16
D_CONV = 4

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TOKENIZER = os.path.join(HERE, "..", "tests", "fixtures", "tokenizer",
                                 "gpt-neox-20b.tokenizer.json")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf-py", required=True, help="llama.cpp's gguf-py folder")
    ap.add_argument("--shape", required=True, choices=sorted(SHAPES))
    ap.add_argument("--type", default="F32", choices=["F32", "BF16", "F16", "Q8_0"])
    ap.add_argument("--tokenizer", default=DEFAULT_TOKENIZER,
                    help="a GPT-NeoX tokenizer.json (default: tests/fixtures/tokenizer's)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("-o", "--out", required=True, help="the .gguf to write")
    return ap.parse_args()


def vocab_from_tokenizer(path, n_vocab, gguf):
    """Tokens, types and merges of a byte-level BPE tokenizer.json, padded to n_vocab."""
    with open(path, encoding="utf-8") as f:
        tj = json.load(f)
    model = tj["model"]
    assert model["type"] == "BPE", "expects a byte-level BPE tokenizer.json"
    by_id = {i: t for t, i in model["vocab"].items()}
    special = {}
    for a in tj.get("added_tokens", []):
        if a["id"] < n_vocab:  # (the test fixture adds a few past 50280: not in the model)
            by_id[a["id"]] = a["content"]
            special[a["id"]] = a.get("special", False)
    assert max(by_id) < n_vocab, "tokenizer's BPE vocab larger than the model's"
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(by_id[i])
            if i in special:
                types.append(gguf.TokenType.CONTROL if special[i] else gguf.TokenType.USER_DEFINED)
            else:
                types.append(gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    return tokens, types, merges


def tensor_plan(d, n_layer, wtype, gguf):
    """(name, numpy shape, kind, ggml type) of every tensor, in file order."""
    T = gguf.MODEL_TENSOR
    Q = gguf.GGMLQuantizationType
    names = gguf.TENSOR_NAMES
    di, r = 2 * d, -(d // -16)
    mat = {"F32": Q.F32, "BF16": Q.BF16, "F16": Q.F16, "Q8_0": Q.Q8_0}[wtype]

    def mtype(shape):
        if mat == Q.Q8_0 and shape[-1] % 32:
            return Q.F16  # the converter's fallback when rows are not whole Q8_0 blocks
        return mat

    plan = [(names[T.TOKEN_EMBD] + ".weight", (VOCAB, d), "embed", mtype((VOCAB, d)))]
    for i in range(n_layer):
        def n(t, suffix=".weight"):
            return names[t].format(bid=i) + suffix
        plan += [
            (n(T.ATTN_NORM), (d,), "ones", Q.F32),
            (n(T.SSM_IN), (2 * di, d), "weight", mtype((2 * di, d))),
            (n(T.SSM_CONV1D), (di, D_CONV), "conv", Q.F32),
            (n(T.SSM_CONV1D, ".bias"), (di,), "conv", Q.F32),
            (n(T.SSM_X), (r + 2 * D_STATE, di), "weight", mtype((r + 2 * D_STATE, di))),
            (n(T.SSM_DT), (di, r), "weight", mtype((di, r))),
            (n(T.SSM_DT, ".bias"), (di,), "dtbias", Q.F32),
            (n(T.SSM_A, ""), (di, D_STATE), "a", Q.F32),
            (n(T.SSM_D, ""), (di,), "ones", Q.F32),
            (n(T.SSM_OUT), (d, di), "weight", mtype((d, di))),
        ]
    plan.append((names[T.OUTPUT_NORM] + ".weight", (d,), "ones", Q.F32))
    return plan


def values(np, rng, shape, kind):
    if kind == "ones":
        return np.ones(shape, dtype=np.float32)
    if kind == "a":  # A = -exp(A_log), A_log = log(1..d_state) per channel
        return -np.broadcast_to(np.arange(1, shape[-1] + 1, dtype=np.float32), shape).copy()
    u = rng.uniform(-1.0, 1.0, size=shape).astype(np.float32)
    if kind == "weight":
        return u * np.float32(1.0 / math.sqrt(shape[-1]))
    if kind == "conv":
        return u * np.float32(0.5)
    if kind == "embed":
        return u * np.float32(0.05)
    if kind == "dtbias":
        lo, hi = math.log(0.001), math.log(0.1)
        dt = np.exp(lo + (u * 0.5 + 0.5) * (hi - lo))
        return (dt + np.log(-np.expm1(-dt))).astype(np.float32)
    raise ValueError(kind)


def main():
    args = parse_args()
    sys.path.insert(0, args.gguf_py)
    import numpy as np
    # gguf-py's package imports sentencepiece and yaml for parts this tool does not use
    # (vocab files, model-card metadata); where they are missing, empty stand-ins let it load.
    for mod, attrs in (("sentencepiece", ("SentencePieceProcessor",)), ("yaml", ())):
        try:
            __import__(mod)
        except ImportError:
            stub = types.ModuleType(mod)
            for a in attrs:
                setattr(stub, a, type(a, (), {}))
            sys.modules[mod] = stub
    import gguf

    d, n_layer = SHAPES[args.shape]
    Q = gguf.GGMLQuantizationType
    ftype = {"F32": gguf.LlamaFileType.ALL_F32, "BF16": gguf.LlamaFileType.MOSTLY_BF16,
             "F16": gguf.LlamaFileType.MOSTLY_F16, "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}
    w = gguf.GGUFWriter(args.out, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.MAMBA])
    w.add_name(f"random mamba-{args.shape} ({args.type})")
    w.add_context_length(2**20)
    w.add_embedding_length(d)
    w.add_feed_forward_length(0)
    w.add_head_count(0)
    w.add_block_count(n_layer)
    w.add_ssm_conv_kernel(D_CONV)
    w.add_ssm_inner_size(2 * d)
    w.add_ssm_state_size(D_STATE)
    w.add_ssm_time_step_rank(-(d // -16))
    w.add_layer_norm_rms_eps(1e-5)
    w.add_ssm_dt_b_c_rms(False)
    w.add_file_type(ftype[args.type])
    tokens, tok_types, merges = vocab_from_tokenizer(args.tokenizer, VOCAB, gguf)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(tok_types)
    w.add_token_merges(merges)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)

    plan = tensor_plan(d, n_layer, args.type, gguf)
    for name, shape, _, qt in plan:  # the tensor infos first (sizes only), then the data
        if qt == Q.F32:
            w.add_tensor_info(name, shape, np.dtype(np.float32), 4 * math.prod(shape))
        elif qt == Q.F16:
            w.add_tensor_info(name, shape, np.dtype(np.float16), 2 * math.prod(shape))
        else:
            bshape = gguf.quant_shape_to_byte_shape(shape, qt)
            w.add_tensor_info(name, bshape, np.dtype(np.uint8), math.prod(bshape), raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(args.seed)
    for name, shape, kind, qt in plan:
        w.write_tensor_data(gguf.quants.quantize(values(np, rng, shape, kind), qt))
    w.close()


if __name__ == "__main__":
    main()
