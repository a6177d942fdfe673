"""An offline byte-level BPE vocabulary in CLIP's file format.

Stable Diffusion's tokenizer is CLIP's byte-level BPE: every byte maps to a
printable unicode character, the last symbol of a word carries a ``</w>``
suffix, and ``merges.txt`` lists the learned pair merges in priority order. We
write the same two files (``vocab.json``, ``merges.txt``) from a small corpus, so
``transformers.CLIPTokenizer.from_pretrained(folder)`` loads them with no hub.
Any text can be tokenized: unknown words fall back to single bytes.
"""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from itertools import pairwise
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"


@cache
def byte_alphabet() -> tuple[str, ...]:
    """CLIP/GPT-2's byte -> printable character table, indexed by byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return tuple(table[b] for b in range(256))


def _word_symbols(word: str) -> tuple[str, ...]:
    alphabet = byte_alphabet()
    chars = [alphabet[b] for b in word.encode("utf-8")]
    return (*chars[:-1], chars[-1] + END_OF_WORD)


def learn_merges(corpus: list[str], num_merges: int) -> list[tuple[str, str]]:
    """Greedy BPE: repeatedly merge the most frequent adjacent pair of symbols.

    Example:
        >>> learn_merges(["a cat", "a cat sat"], 2)[0]
        ('a', 't</w>')
    """
    words = Counter(_word_symbols(w) for line in corpus for w in line.lower().split())
    merges: list[tuple[str, str]] = []
    for _ in range(num_merges):
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in words.items():
            for pair in pairwise(symbols):
                pairs[pair] += count
        if not pairs:
            break
        # Ties break on the pair itself so the result never depends on dict order.
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        words = Counter({_merge(s, best): c for s, c in words.items()})
    return merges


def _merge(symbols: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == pair:
            out.append(symbols[i] + symbols[i + 1])
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return tuple(out)


def write_tokenizer(
    folder: Path, corpus: list[str], *, num_merges: int = 400, max_length: int = 32
) -> int:
    """Write ``vocab.json``, ``merges.txt`` and the configs CLIPTokenizer reads; return vocab size.

    Example:
        >>> write_tokenizer(Path("model/tokenizer"), ["a photo of a cat"])  # doctest: +SKIP
        515
    """
    alphabet = byte_alphabet()
    merges = learn_merges(corpus, num_merges)
    tokens = [*alphabet, *(c + END_OF_WORD for c in alphabet), *(a + b for a, b in merges)]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys([*tokens, BOS, EOS]))}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    lines = ["#version: 0.2", *(f"{a} {b}" for a, b in merges)]
    (folder / "merges.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_length,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    special = {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2), encoding="utf-8")
    return len(vocab)
