"""Tiny random models of every architecture in the table (and a refused one), with a tokenizer made here.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on the built-in
prompt sets, and models are built from configs with random weights (seeded). ``planted``
makes a tiny decomposition problem whose answer is known (for ICA, stability, the bench).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from fnweb.prompts import BUILTIN_DIR

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HIDDEN, INTERMEDIATE, LAYERS, HEADS = 32, 64, 3, 4


@lru_cache(maxsize=None)
def _trained_bpe():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    texts = []
    for path in sorted(BUILTIN_DIR.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            texts.append(f"{row.get('prompt', row.get('question', ''))} {row.get('response', '')}")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=["<pad>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(texts, trainer)
    return bpe.to_str()


def make_tokenizer(chat: bool = True):
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained_bpe()),
        eos_token="<|im_end|>", pad_token="<pad>", bos_token="<|im_start|>",
    )
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


# Families laid out like Llama for this file's purpose: their configs take the same fields.
LLAMA_LIKE = ("llama", "qwen2", "qwen3", "mistral", "gemma", "gemma2", "gemma3_text", "olmo", "olmo2", "granite",
              "smollm3", "cohere", "starcoder2", "phi3")


def _configs(vocab: int) -> dict:
    from transformers import AutoConfig, GPT2Config, GPTNeoXConfig, OPTConfig, PhiConfig

    llama_like = dict(
        vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
        num_attention_heads=HEADS, num_key_value_heads=2, head_dim=HIDDEN // HEADS, max_position_embeddings=256,
        pad_token_id=0, eos_token_id=2, bos_token_id=1, tie_word_embeddings=True,
    )
    return {
        # AutoConfig.for_model fails for a model_type this transformers does not know.
        **{name: AutoConfig.for_model(name, **llama_like) for name in LLAMA_LIKE},
        "mixtral": AutoConfig.for_model("mixtral", **llama_like, num_local_experts=4, num_experts_per_tok=2),
        "gpt2": GPT2Config(vocab_size=vocab, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_inner=INTERMEDIATE,
                           n_positions=256, pad_token_id=0, eos_token_id=2, bos_token_id=1),
        "opt": OPTConfig(vocab_size=vocab, hidden_size=HIDDEN, ffn_dim=INTERMEDIATE, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, max_position_embeddings=256, word_embed_proj_dim=HIDDEN,
                         pad_token_id=0, eos_token_id=2, bos_token_id=1),
        "gpt_neox": GPTNeoXConfig(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                                  num_hidden_layers=LAYERS, num_attention_heads=HEADS, max_position_embeddings=256,
                                  pad_token_id=0, eos_token_id=2, bos_token_id=1),
        "phi": PhiConfig(vocab_size=vocab, hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                         num_hidden_layers=LAYERS, num_attention_heads=HEADS, max_position_embeddings=256,
                         pad_token_id=0, eos_token_id=2, bos_token_id=1),
    }


# Every model_type in fnweb.archs.ARCHITECTURES (test_build checks that the two agree).
ARCHS = LLAMA_LIKE + ("gpt2", "opt", "gpt_neox", "phi")
# Mixture-of-experts families, which fnweb refuses (one here stands for them all).
MIXTURES_OF_EXPERTS = ("mixtral",)


PLANTED = list(range(6))  # neurons given a large output in the planted_lm fixture (conftest.py)


def make_model(arch: str = "llama", seed: int = 0):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    config = _configs(len(make_tokenizer()))[arch]
    model = AutoModelForCausalLM.from_config(config)
    model.eval()
    return model


def save_tiny(folder: Path, arch: str = "llama", chat: bool = True) -> Path:
    """A tiny model and tokenizer saved as a local model folder."""
    folder.mkdir(parents=True, exist_ok=True)
    make_model(arch).save_pretrained(folder)
    make_tokenizer(chat).save_pretrained(folder)
    return folder


def planted(tokens=3000, channels=400, k=4, seed=0, noise=0.3):
    """Activations = independent heavy-tailed sources mixed into sparse channel maps + noise."""
    rng = np.random.default_rng(seed)
    sources = rng.laplace(size=(tokens, k)) ** 3  # strongly non-Gaussian
    sources /= sources.std(0)
    maps = np.zeros((channels, k))
    for c in range(k):
        support = rng.choice(channels, size=channels // 10, replace=False)
        maps[support, c] = rng.uniform(1.0, 2.0, size=len(support))
    data = sources @ maps.T + noise * rng.normal(size=(tokens, channels))
    return torch.tensor(data, dtype=torch.float16), maps
