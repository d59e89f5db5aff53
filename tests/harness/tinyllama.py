"""A tiny Llama the real vLLM can serve on CPU, made on the machine: no hub, no torch, no transformers.

The weights are random (seeded), so the text is nonsense, but the same nonsense for the same prompt at
temperature 0: a group of nodes must produce what one process produces. The tokenizer is a real
byte-level BPE trained with `tokenizers` (installed from the CPU wheelhouse into a cached folder and run
in a subprocess, so its huggingface_hub never shadows the one the tests use), with a one-line chat
template. The safetensors file is written by hand (the format is a JSON header and raw little-endian
tensors), bf16 made by keeping the high half of each float32.

    python3 -m harness.tinyllama OUT_DIR [--head-dim 64]
"""
from __future__ import annotations

import argparse
import json
import random
import struct
from pathlib import Path

import numpy as np

HIDDEN, INTERMEDIATE, LAYERS, KV_HEADS, VOCAB, POSITIONS = 256, 512, 2, 2, 512, 1024
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant: {% endif %}")
WORDS = ("the a one two red blue model node engine token cluster serves answers quickly slowly every "
         "spark recipe image weights copy launch ready stream first last small large cpu gpu").split()


def tensors(head_dim: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Llama weights by name; std 0.02 as an untrained model would start."""
    rng = np.random.default_rng(seed)
    heads = HIDDEN // head_dim
    kv_heads = min(KV_HEADS, heads)
    def w(*shape: int) -> np.ndarray:
        return rng.normal(0.0, 0.02, size=shape).astype(np.float32)
    out = {"model.embed_tokens.weight": w(VOCAB, HIDDEN), "model.norm.weight": np.ones(HIDDEN, np.float32),
           "lm_head.weight": w(VOCAB, HIDDEN)}
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out.update({p + "input_layernorm.weight": np.ones(HIDDEN, np.float32),
                    p + "post_attention_layernorm.weight": np.ones(HIDDEN, np.float32),
                    p + "self_attn.q_proj.weight": w(heads * head_dim, HIDDEN),
                    p + "self_attn.k_proj.weight": w(kv_heads * head_dim, HIDDEN),
                    p + "self_attn.v_proj.weight": w(kv_heads * head_dim, HIDDEN),
                    p + "self_attn.o_proj.weight": w(HIDDEN, heads * head_dim),
                    p + "mlp.gate_proj.weight": w(INTERMEDIATE, HIDDEN),
                    p + "mlp.up_proj.weight": w(INTERMEDIATE, HIDDEN),
                    p + "mlp.down_proj.weight": w(HIDDEN, INTERMEDIATE)})
    return out


def safetensors_bf16(named: dict[str, np.ndarray]) -> bytes:
    """The safetensors bytes of `named`, each tensor as bf16 (round toward zero)."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name in sorted(named):
        arr = np.ascontiguousarray(named[name], dtype="<f4")
        data = (arr.view("<u4") >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def config(head_dim: int) -> dict[str, object]:
    heads = HIDDEN // head_dim
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": HIDDEN,
            "intermediate_size": INTERMEDIATE, "num_hidden_layers": LAYERS, "num_attention_heads": heads,
            "num_key_value_heads": min(KV_HEADS, heads), "head_dim": head_dim,
            "max_position_embeddings": POSITIONS, "vocab_size": VOCAB, "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}


def tokenizer_json(seed: int = 0) -> str:
    """A byte-level BPE of up to VOCAB tokens trained on generated sentences; <unk> <s> </s> are ids 0-2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = random.Random(seed)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "." for _ in range(4000)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # only the characters of the sentences (no full byte alphabet): every token then decodes to ASCII text,
    # so a random model's stream carries text in every chunk instead of held-back partial UTF-8
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False)
    tok.train_from_iterator(lines, trainer)
    return tok.to_str()


def files(head_dim: int = 64) -> dict[str, bytes]:
    """Every file of the model repo, by path."""
    tok_config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                  "unk_token": "<unk>", "model_max_length": POSITIONS, "chat_template": CHAT_TEMPLATE}
    gen = {"bos_token_id": 1, "eos_token_id": 2}
    return {"config.json": json.dumps(config(head_dim), indent=1).encode(),
            "generation_config.json": json.dumps(gen).encode(),
            "tokenizer.json": tokenizer_json().encode(),
            "tokenizer_config.json": json.dumps(tok_config, indent=1).encode(),
            "model.safetensors": safetensors_bf16(tensors(head_dim))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--head-dim", type=int, default=64)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, data in files(args.head_dim).items():
        (args.out / name).write_bytes(data)


if __name__ == "__main__":
    main()
