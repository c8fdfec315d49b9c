"""Tiny but real-looking Hugging Face model directories for tests.

``make_tiny_model(dest, arch)`` writes ``config.json``, ``generation_config.json``, weights
(``model.safetensors``, sharded ``model-0000K-of-0000N.safetensors`` + index, or a torch-format
``pytorch_model.bin``) and tokenizer files that the real libraries can load:

* byte-level BPE (``gpt2``, ``qwen2``): ``vocab.json`` + ``merges.txt`` + ``tokenizer.json``;
* SentencePiece BPE with byte fallback (``llama``, ``mistral``, ``mixtral``, ``phi3``, ``gemma``):
  ``tokenizer.model`` (hand-encoded protobuf) + ``tokenizer.json``;
* always ``tokenizer_config.json`` and ``special_tokens_map.json``.

Shapes are tiny (hidden 64, 2 layers) so everything is a few hundred KiB. Only numpy is used.
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ARCHS", "make_tiny_model"]

TRANSFORMERS_VERSION = "4.51.3"
HIDDEN = 64
LAYERS = 2
HEADS = 4
INTER = 128
POSITIONS = 256

# arch -> (architectures[0], model_type, tokenizer kind, default torch_dtype)
ARCHS: dict[str, tuple[str, str, str, str]] = {
    "gpt2": ("GPT2LMHeadModel", "gpt2", "bytelevel", "float32"),
    "llama": ("LlamaForCausalLM", "llama", "spm", "bfloat16"),
    "mistral": ("MistralForCausalLM", "mistral", "spm", "bfloat16"),
    "qwen2": ("Qwen2ForCausalLM", "qwen2", "bytelevel", "bfloat16"),
    "phi3": ("Phi3ForCausalLM", "phi3", "spm", "bfloat16"),
    "gemma": ("GemmaForCausalLM", "gemma", "spm", "bfloat16"),
    "mixtral": ("MixtralForCausalLM", "mixtral", "spm", "bfloat16"),
}
ALIASES = {"gpt": "gpt2", "qwen": "qwen2", "phi": "phi3"}

ST_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
TORCH_STORAGE = {"float32": "FloatStorage", "float16": "HalfStorage", "bfloat16": "BFloat16Storage"}

WORD_PIECES = [
    ("t", "h"), ("th", "e"), ("i", "n"), ("e", "r"), ("o", "n"), ("a", "n"), ("r", "e"), ("a", "t"),
    ("i", "s"), ("e", "n"), ("o", "r"), ("i", "t"), ("e", "s"), ("a", "s"), ("o", "u"), ("l", "l"),
    ("in", "g"), ("e", "d"), ("a", "r"), ("h", "e"),
]  # fmt: skip


# ---------------------------------------------------------------------------- tokenizers
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def _bytelevel_vocab() -> tuple[dict[str, int], list[str]]:
    vocab: dict[str, int] = {}
    for ch in _bytes_to_unicode().values():
        vocab[ch] = len(vocab)
    merges: list[str] = []
    space = "Ġ"
    pairs = [(space, "t"), (space, "a"), (space, "s"), (space, "w"), *WORD_PIECES, (space + "t", "he")]
    for a, b in pairs:
        if a in vocab and b in vocab and a + b not in vocab:
            merges.append(f"{a} {b}")
            vocab[a + b] = len(vocab)
    return vocab, merges


def _spm_vocab(specials: list[str]) -> tuple[dict[str, int], list[str], list[tuple[str, float, int]]]:
    """Vocabulary, merges and SentencePiece pieces (piece, score, type) of a byte-fallback BPE."""
    pieces: list[tuple[str, float, int]] = []
    for s in specials:
        pieces.append((s, 0.0, 2 if s in ("<unk>",) else 3))
    for b in range(256):
        pieces.append((f"<0x{b:02X}>", 0.0, 6))
    normal: list[str] = []
    merges: list[str] = []
    space = "▁"
    singles = [space, *"etaoinshrdlucmfwypvbgkjqxz"]
    normal.extend(singles)
    for a, b in [(space, "t"), (space, "a"), (space, "s"), (space, "w"), *WORD_PIECES, (space + "t", "he")]:
        if a in normal and b in normal and a + b not in normal:
            merges.append(f"{a} {b}")
            normal.append(a + b)
    # SentencePiece BPE scores: merged pieces by merge rank, then the characters.
    merged = normal[len(singles) :]
    for i, p in enumerate(merged):
        pieces.append((p, -float(i), 1))
    for i, p in enumerate(singles):
        pieces.append((p, -float(len(merged) + i), 1))
    vocab = {p: i for i, (p, _, _) in enumerate(pieces)}
    return vocab, merges, pieces


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num: int, wire: int, payload: bytes) -> bytes:
    return _varint(num << 3 | wire) + payload


def _pb_str(num: int, s: str | bytes) -> bytes:
    raw = s.encode() if isinstance(s, str) else s
    return _field(num, 2, _varint(len(raw)) + raw)


def _pb_int(num: int, v: int) -> bytes:
    return _field(num, 0, _varint(v))


def _sentencepiece_model(pieces: list[tuple[str, float, int]], ids: dict[str, int]) -> bytes:
    """A SentencePiece ModelProto (BPE, byte fallback, Llama-style normalizer)."""
    out = bytearray()
    for piece, score, kind in pieces:
        body = _pb_str(1, piece) + _field(2, 5, struct.pack("<f", score))
        if kind != 1:
            body += _pb_int(3, kind)
        out += _pb_str(1, body)
    trainer = (
        _pb_str(1, "tiny.txt")
        + _pb_str(2, "tiny")
        + _pb_int(3, 2)  # model_type BPE
        + _pb_int(4, len(pieces))
        + _pb_int(35, 1)  # byte_fallback
        + _pb_int(40, ids["unk"])
        + _pb_int(41, ids["bos"])
        + _pb_int(42, ids["eos"])
        + _pb_int(43, ids.get("pad", -1))
    )
    out += _pb_str(2, trainer)
    normalizer = _pb_str(1, "identity") + _pb_str(2, b"") + _pb_int(3, 1) + _pb_int(4, 0) + _pb_int(5, 1)
    out += _pb_str(3, normalizer)
    return bytes(out)


def _added(tok_id: int, content: str, special: bool = True) -> dict[str, Any]:
    return {
        "id": tok_id,
        "content": content,
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": not special,
        "special": special,
    }


def _write_bytelevel_tokenizer(dest: Path, arch: str) -> dict[str, Any]:
    vocab, merges = _bytelevel_vocab()
    specials = ["<|endoftext|>"] if arch == "gpt2" else ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    added = []
    for s in specials:
        vocab[s] = len(vocab)
        added.append(_added(vocab[s], s))
    (dest / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (dest / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    bl = {"add_prefix_space": False, "trim_offsets": True, "use_regex": True}
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"} if arch == "qwen2" else None,
        "pre_tokenizer": {"type": "ByteLevel", **bl},
        "post_processor": {"type": "ByteLevel", **bl, "trim_offsets": False},
        "decoder": {"type": "ByteLevel", **bl},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": {k: v for k, v in vocab.items() if k not in specials},
            "merges": merges,
        },
    }
    (dest / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False, indent=2), encoding="utf-8")
    decoder = {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added}
    if arch == "gpt2":
        eos = bos = "<|endoftext|>"
        cfg = {
            "add_bos_token": False,
            "add_prefix_space": False,
            "added_tokens_decoder": decoder,
            "bos_token": bos,
            "clean_up_tokenization_spaces": False,
            "eos_token": eos,
            "errors": "replace",
            "extra_special_tokens": {},
            "model_max_length": 1024,
            "pad_token": None,
            "tokenizer_class": "GPT2Tokenizer",
            "unk_token": eos,
        }
        special = {"bos_token": bos, "eos_token": eos, "unk_token": eos}
        ids = {"bos": vocab[bos], "eos": vocab[eos], "pad": None}
    else:
        cfg = {
            "add_prefix_space": False,
            "added_tokens_decoder": decoder,
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
            "bos_token": None,
            "chat_template": (
                "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
                " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
                "{{ '<|im_start|>assistant\n' }}{% endif %}"
            ),
            "clean_up_tokenization_spaces": False,
            "eos_token": "<|endoftext|>",
            "errors": "replace",
            "model_max_length": 32768,
            "pad_token": "<|endoftext|>",
            "split_special_tokens": False,
            "tokenizer_class": "Qwen2Tokenizer",
            "unk_token": None,
        }
        special = {
            "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
        }
        ids = {"bos": vocab["<|endoftext|>"], "eos": vocab["<|endoftext|>"], "pad": vocab["<|endoftext|>"]}
    (dest / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")
    (dest / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    return {"vocab_size": len(vocab), **ids}


def _spm_specials(arch: str) -> tuple[list[str], dict[str, str], list[str]]:
    """(leading special pieces, role -> piece, extra added tokens) of each SentencePiece family."""
    if arch == "gemma":
        return (
            ["<pad>", "<eos>", "<bos>", "<unk>"],
            {"pad": "<pad>", "eos": "<eos>", "bos": "<bos>", "unk": "<unk>"},
            [],
        )
    roles = {"unk": "<unk>", "bos": "<s>", "eos": "</s>"}
    extra = ["<|endoftext|>", "<|assistant|>", "<|end|>", "<|user|>"] if arch == "phi3" else []
    if arch == "phi3":
        roles["eos_added"] = "<|endoftext|>"
    return ["<unk>", "<s>", "</s>"], roles, extra


def _write_spm_tokenizer(dest: Path, arch: str) -> dict[str, Any]:
    leading, roles, extra = _spm_specials(arch)
    vocab, merges, pieces = _spm_vocab(leading)
    ids = {role: vocab[p] for role, p in roles.items() if p in vocab}
    (dest / "tokenizer.model").write_bytes(_sentencepiece_model(pieces, ids))
    added = [_added(vocab[s], s) for s in leading]
    for s in extra:
        vocab[s] = len(vocab)
        added.append(_added(vocab[s], s))
    bos, eos, unk = roles["bos"], roles.get("eos_added", roles["eos"]), roles["unk"]
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
            ],
        },
        "pre_tokenizer": None,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [
                {"SpecialToken": {"id": bos, "type_id": 0}},
                {"Sequence": {"id": "A", "type_id": 0}},
                {"SpecialToken": {"id": bos, "type_id": 1}},
                {"Sequence": {"id": "B", "type_id": 1}},
            ],
            "special_tokens": {bos: {"id": bos, "ids": [vocab[bos]], "tokens": [bos]}},
        },
        "decoder": {
            "type": "Sequence",
            "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"},
                {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0},
            ],
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": unk,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": True,
            "byte_fallback": True,
            "ignore_merges": False,
            "vocab": {p: i for i, (p, _, _) in enumerate(pieces)},
            "merges": merges,
        },
    }
    (dest / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False, indent=2), encoding="utf-8")
    tclass = {"gemma": "GemmaTokenizer"}.get(arch, "LlamaTokenizer")
    pad = roles.get("pad")
    cfg: dict[str, Any] = {
        "add_bos_token": True,
        "add_eos_token": False,
        "added_tokens_decoder": {str(a["id"]): {k: v for k, v in a.items() if k != "id"} for a in added},
        "bos_token": bos,
        "clean_up_tokenization_spaces": False,
        "eos_token": eos,
        "legacy": False,
        "model_max_length": 1000000000000000019884624838656,
        "pad_token": pad,
        "sp_model_kwargs": {},
        "spaces_between_special_tokens": False,
        "tokenizer_class": tclass,
        "unk_token": unk,
        "use_default_system_prompt": False,
    }
    (dest / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")
    special = {"bos_token": bos, "eos_token": eos, "unk_token": unk}
    if pad:
        special["pad_token"] = pad
    (dest / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    return {"vocab_size": len(vocab), "bos": vocab[bos], "eos": vocab[eos], "pad": vocab[pad] if pad else None}


# ---------------------------------------------------------------------------- configs/weights
def _config(arch: str, tok: dict[str, Any], dtype: str) -> dict[str, Any]:
    architecture, model_type, _, _ = ARCHS[arch]
    v = tok["vocab_size"]
    common = {"architectures": [architecture], "model_type": model_type, "torch_dtype": dtype}
    common["transformers_version"] = TRANSFORMERS_VERSION
    if arch == "gpt2":
        return {
            "activation_function": "gelu_new",
            **common,
            "attn_pdrop": 0.1,
            "bos_token_id": tok["bos"],
            "embd_pdrop": 0.1,
            "eos_token_id": tok["eos"],
            "initializer_range": 0.02,
            "layer_norm_epsilon": 1e-05,
            "n_ctx": POSITIONS,
            "n_embd": HIDDEN,
            "n_head": HEADS,
            "n_inner": None,
            "n_layer": LAYERS,
            "n_positions": POSITIONS,
            "reorder_and_upcast_attn": False,
            "resid_pdrop": 0.1,
            "scale_attn_by_inverse_layer_idx": False,
            "scale_attn_weights": True,
            "use_cache": True,
            "vocab_size": v,
        }
    cfg: dict[str, Any] = {
        **common,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": tok["bos"],
        "eos_token_id": tok["eos"],
        "head_dim": HIDDEN // HEADS,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTER,
        "max_position_embeddings": POSITIONS,
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "use_cache": True,
        "vocab_size": v,
    }
    if arch == "llama":
        cfg.update(mlp_bias=False, pretraining_tp=1)
    elif arch in ("mistral", "mixtral"):
        cfg.update(sliding_window=None, rope_theta=1000000.0)
        if arch == "mixtral":
            cfg.update(num_local_experts=4, num_experts_per_tok=2, output_router_logits=False)
            cfg.update(router_aux_loss_coef=0.02, router_jitter_noise=0.0)
    elif arch == "qwen2":
        del cfg["attention_bias"], cfg["head_dim"]
        cfg.update(max_window_layers=LAYERS, rope_theta=1000000.0, sliding_window=POSITIONS)
        cfg.update(tie_word_embeddings=True, use_sliding_window=False)
    elif arch == "phi3":
        cfg.update(
            embd_pdrop=0.0,
            num_key_value_heads=HEADS,
            original_max_position_embeddings=POSITIONS,
            pad_token_id=tok["eos"],
            partial_rotary_factor=1.0,
            resid_pdrop=0.0,
            rms_norm_eps=1e-05,
            sliding_window=POSITIONS - 1,
        )
        del cfg["head_dim"]
    elif arch == "gemma":
        cfg.update(
            hidden_act="gelu_pytorch_tanh",
            hidden_activation="gelu_pytorch_tanh",
            num_key_value_heads=1,
            pad_token_id=tok["pad"],
            tie_word_embeddings=True,
        )
    return dict(sorted(cfg.items()))


def _weight_shapes(arch: str, cfg: dict[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    v, h = cfg["vocab_size"], HIDDEN
    out: list[tuple[str, tuple[int, ...]]] = []
    if arch == "gpt2":
        out += [("transformer.wte.weight", (v, h)), ("transformer.wpe.weight", (POSITIONS, h))]
        for i in range(LAYERS):
            p = f"transformer.h.{i}"
            out += [
                (f"{p}.ln_1.weight", (h,)),
                (f"{p}.ln_1.bias", (h,)),
                (f"{p}.attn.c_attn.weight", (h, 3 * h)),
                (f"{p}.attn.c_attn.bias", (3 * h,)),
                (f"{p}.attn.c_proj.weight", (h, h)),
                (f"{p}.attn.c_proj.bias", (h,)),
                (f"{p}.ln_2.weight", (h,)),
                (f"{p}.ln_2.bias", (h,)),
                (f"{p}.mlp.c_fc.weight", (h, 4 * h)),
                (f"{p}.mlp.c_fc.bias", (4 * h,)),
                (f"{p}.mlp.c_proj.weight", (4 * h, h)),
                (f"{p}.mlp.c_proj.bias", (h,)),
            ]
        out += [("transformer.ln_f.weight", (h,)), ("transformer.ln_f.bias", (h,))]
        return out
    hd = h // HEADS
    kv = cfg["num_key_value_heads"] * hd
    out.append(("model.embed_tokens.weight", (v, h)))
    for i in range(LAYERS):
        p = f"model.layers.{i}"
        out.append((f"{p}.input_layernorm.weight", (h,)))
        if arch == "phi3":
            out += [(f"{p}.self_attn.qkv_proj.weight", (h + 2 * kv, h)), (f"{p}.self_attn.o_proj.weight", (h, h))]
            out += [(f"{p}.mlp.gate_up_proj.weight", (2 * INTER, h)), (f"{p}.mlp.down_proj.weight", (h, INTER))]
        else:
            for name, rows in (("q_proj", h), ("k_proj", kv), ("v_proj", kv)):
                out.append((f"{p}.self_attn.{name}.weight", (rows, h)))
                if arch == "qwen2":
                    out.append((f"{p}.self_attn.{name}.bias", (rows,)))
            out.append((f"{p}.self_attn.o_proj.weight", (h, h)))
            if arch == "mixtral":
                out.append((f"{p}.block_sparse_moe.gate.weight", (cfg["num_local_experts"], h)))
                for e in range(cfg["num_local_experts"]):
                    q = f"{p}.block_sparse_moe.experts.{e}"
                    out += [
                        (f"{q}.w1.weight", (INTER, h)),
                        (f"{q}.w2.weight", (h, INTER)),
                        (f"{q}.w3.weight", (INTER, h)),
                    ]
            else:
                out += [(f"{p}.mlp.gate_proj.weight", (INTER, h)), (f"{p}.mlp.up_proj.weight", (INTER, h))]
                out.append((f"{p}.mlp.down_proj.weight", (h, INTER)))
        out.append((f"{p}.post_attention_layernorm.weight", (h,)))
    out.append(("model.norm.weight", (h,)))
    if not cfg.get("tie_word_embeddings"):
        out.append(("lm_head.weight", (v, h)))
    return out


def _tensor_bytes(shape: tuple[int, ...], dtype: str, rng: np.random.Generator) -> bytes:
    x = (rng.standard_normal(shape) * 0.02).astype("<f4")
    if dtype == "float32":
        return x.tobytes()
    if dtype == "float16":
        return x.astype("<f2").tobytes()
    return (x.view("<u4") >> 16).astype("<u2").tobytes()  # bfloat16: the high half of float32


def _safetensors(tensors: list[tuple[str, tuple[int, ...], bytes]], dtype: str) -> bytes:
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, shape, data in tensors:
        header[name] = {"dtype": ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + b"".join(d for _, _, d in tensors)


def _pickle_str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _pickle_int(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


def _pickle_tuple(items: list[int]) -> bytes:
    return b"(" + b"".join(_pickle_int(i) for i in items) + b"t"


def _torch_bin(tensors: list[tuple[str, tuple[int, ...], bytes]], dtype: str) -> bytes:
    """A ``torch.save`` zip archive of an OrderedDict state dict, written without torch."""
    pkl = bytearray(b"\x80\x02ccollections\nOrderedDict\n)R(")
    for key, (name, shape, _data) in enumerate(tensors):
        numel = int(np.prod(shape)) if shape else 1
        stride = [int(np.prod(shape[i + 1 :])) for i in range(len(shape))]
        pkl += _pickle_str(name)
        pkl += b"ctorch._utils\n_rebuild_tensor_v2\n("
        pkl += b"(" + _pickle_str("storage") + f"ctorch\n{TORCH_STORAGE[dtype]}\n".encode()
        pkl += _pickle_str(str(key)) + _pickle_str("cpu") + _pickle_int(numel) + b"tQ"
        pkl += _pickle_int(0) + _pickle_tuple(list(shape)) + _pickle_tuple(stride) + b"\x89"
        pkl += b"ccollections\nOrderedDict\n)R" + b"tR"
    pkl += b"u."
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        z.writestr("pytorch_model/data.pkl", bytes(pkl))
        z.writestr("pytorch_model/byteorder", "little")
        for key, (_, _, data) in enumerate(tensors):
            z.writestr(f"pytorch_model/data/{key}", data)
        z.writestr("pytorch_model/version", "3\n")
        z.writestr("pytorch_model/.data/serialization_id", "1234567890123456789012345678901234567890")
    return buf.getvalue()


def make_tiny_model(
    dest: Path,
    arch: str = "gpt2",
    *,
    tokenizer: bool = True,
    safetensors: bool = True,
    shards: int = 1,
    torch_dtype: str | None = None,
    seed: int = 0,
) -> Path:
    """Write a tiny HF model directory for ``arch`` into ``dest`` and return ``dest``.

    ``arch``: one of ``ARCHS`` (``gpt2``, ``llama``, ``mistral``, ``qwen2``, ``phi3``, ``gemma``,
    ``mixtral``; ``gpt``/``qwen``/``phi`` are accepted aliases). ``tokenizer=False`` leaves the
    tokenizer files out; ``safetensors=False`` writes ``pytorch_model.bin`` instead; ``shards > 1``
    splits the safetensors weights into ``model-0000K-of-0000N.safetensors`` + index.
    """
    arch = ALIASES.get(arch, arch)
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; choose from {sorted(ARCHS)}")
    if shards < 1:
        raise ValueError("shards must be >= 1")
    dtype = torch_dtype or ARCHS[arch][3]
    if dtype not in ST_DTYPES:
        raise ValueError(f"unsupported torch_dtype {dtype!r}")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest if tokenizer else dest / ".tokenizer-tmp"
    tmp.mkdir(exist_ok=True)
    tok = (_write_bytelevel_tokenizer if ARCHS[arch][2] == "bytelevel" else _write_spm_tokenizer)(tmp, arch)
    if not tokenizer:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    cfg = _config(arch, tok, dtype)
    (dest / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    gen: dict[str, Any] = {"_from_model_config": True, "bos_token_id": tok["bos"], "eos_token_id": tok["eos"]}
    if tok.get("pad") is not None:
        gen["pad_token_id"] = tok["pad"]
    gen["transformers_version"] = TRANSFORMERS_VERSION
    (dest / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")

    rng = np.random.default_rng(seed)
    tensors = [(name, shape, _tensor_bytes(shape, dtype, rng)) for name, shape in _weight_shapes(arch, cfg)]
    if not safetensors:
        (dest / "pytorch_model.bin").write_bytes(_torch_bin(tensors, dtype))
        return dest
    if shards == 1:
        (dest / "model.safetensors").write_bytes(_safetensors(tensors, dtype))
        return dest
    groups: list[list[tuple[str, tuple[int, ...], bytes]]] = [[] for _ in range(shards)]
    per = -(-len(tensors) // shards)
    for i, t in enumerate(tensors):
        groups[min(i // per, shards - 1)].append(t)
    weight_map: dict[str, str] = {}
    for k, group in enumerate(groups, start=1):
        fname = f"model-{k:05d}-of-{shards:05d}.safetensors"
        (dest / fname).write_bytes(_safetensors(group, dtype))
        for name, _, _ in group:
            weight_map[name] = fname
    total = sum(len(d) for _, _, d in tensors)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (dest / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return dest
