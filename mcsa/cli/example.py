"""``mcsa example``: the sample files the help examples use, written where you are."""

from __future__ import annotations

import os
from pathlib import Path

import click

from .common import InputError, atomic_output, check_outputs, fail_on_input_errors

QKV_SEQ_LEN, QKV_DIM, QKV_SEED = 128, 32, 7

BOOK = """\
Down the Rabbit-Hole. From Alice's Adventures in Wonderland, by Lewis Carroll (1865; in the public domain).

Alice was beginning to get very tired of sitting by her sister on the bank, and of having nothing to do: once
or twice she had peeped into the book her sister was reading, but it had no pictures or conversations in it,
"and what is the use of a book," thought Alice "without pictures or conversations?"

So she was considering in her own mind (as well as she could, for the hot day made her feel very sleepy and
stupid), whether the pleasure of making a daisy-chain would be worth the trouble of getting up and picking the
daisies, when suddenly a White Rabbit with pink eyes ran close by her.

There was nothing so very remarkable in that; nor did Alice think it so very much out of the way to hear the
Rabbit say to itself, "Oh dear! Oh dear! I shall be late!" (when she thought it over afterwards, it occurred to
her that she ought to have wondered at this, but at the time it all seemed quite natural); but when the Rabbit
actually took a watch out of its waistcoat-pocket, and looked at it, and then hurried on, Alice started to her
feet, for it flashed across her mind that she had never before seen a rabbit with either a waistcoat-pocket, or
a watch to take out of it, and burning with curiosity, she ran across the field after it, and fortunately was
just in time to see it pop down a large rabbit-hole under the hedge.

In another moment down went Alice after it, never once considering how in the world she was to get out again.

The rabbit-hole went straight on like a tunnel for some way, and then dipped suddenly down, so suddenly that
Alice had not a moment to think about stopping herself before she found herself falling down a very deep well.

Either the well was very deep, or she fell very slowly, for she had plenty of time as she went down to look
about her and to wonder what was going to happen next. First, she tried to look down and make out what she was
coming to, but it was too dark to see anything; then she looked at the sides of the well, and noticed that they
were filled with cupboards and book-shelves; here and there she saw maps and pictures hung upon pegs. She took
down a jar from one of the shelves as she passed; it was labelled "ORANGE MARMALADE", but to her great
disappointment it was empty: she did not like to drop the jar for fear of killing somebody underneath, so
managed to put it into one of the cupboards as she fell past it.

"Well!" thought Alice to herself, "after such a fall as this, I shall think nothing of tumbling down stairs!
How brave they'll all think me at home! Why, I wouldn't say anything about it, even if I fell off the top of
the house!" (Which was very likely true.)

Down, down, down. Would the fall never come to an end? "I wonder how many miles I've fallen by this time?" she
said aloud. "I must be getting somewhere near the centre of the earth. Let me see: that would be four thousand
miles down, I think" (for, you see, Alice had learnt several things of this sort in her lessons in the
schoolroom, and though this was not a very good opportunity for showing off her knowledge, as there was no one
to listen to her, still it was good practice to say it over) "yes, that's about the right distance, but then I
wonder what Latitude or Longitude I've got to?" (Alice had no idea what Latitude was, or Longitude either, but
thought they were nice grand words to say.)

Presently she began again. "I wonder if I shall fall right through the earth! How funny it'll seem to come out
among the people that walk with their heads downward! The Antipathies, I think" (she was rather glad there was
no one listening, this time, as it didn't sound at all the right word) "but I shall have to ask them what the
name of the country is, you know. Please, Ma'am, is this New Zealand or Australia?" (and she tried to curtsey
as she spoke: fancy curtseying as you're falling through the air! Do you think you could manage it?) "And what
an ignorant little girl she'll think me for asking! No, it'll never do to ask: perhaps I shall see it written
up somewhere."

Down, down, down. There was nothing else to do, so Alice soon began talking again. "Dinah'll miss me very much
to-night, I should think!" (Dinah was the cat.) "I hope they'll remember her saucer of milk at tea-time. Dinah
my dear! I wish you were down here with me! There are no mice in the air, I'm afraid, but you might catch a
bat, and that's very like a mouse, you know. But do cats eat bats, I wonder?"
"""

PROFILES = """\
# Your own target profiles, for --profiles. A row named after a built-in profile
# changes only the fields it gives; a new part gives at least arch, ram,
# heap_budget and allocator (usize_bits, expf, fpu and nan follow from arch).
# Sizes in bytes. `mcsa targets --profiles profiles.toml` shows the result.

[stm32f411]
heap_budget = 98304          # 96 KiB of the 128 KiB for the heap instead of 64 KiB

[my-board]
description = "my Cortex-M4F board"
arch = "thumbv7em"           # x86_64, wasm32, thumbv7em, thumbv7m, thumbv6m, riscv32imc, xtensa
ram = 65536
heap_budget = 32768
allocator = "tlsf"           # none, linked-list, tlsf, newlib, freertos-heap4, esp-idf
"""

CONFIG = """\
# A SparsityConfig for --config: the fields you leave out keep Rust's Default.
intra_partition_attention = true
boundary_cross_attention = true
max_cross_partition_edges = 8
"""


def _there(path: Path) -> str:
    """``q.npy``, or ``q.npy (a symlink to /gone/q.npy)`` for a link to nothing or to itself."""
    if os.path.islink(path) and not os.path.exists(path):
        return f"{path} (a symlink to {os.readlink(path)})"
    return str(path)


def _write_qkv(folder: Path) -> list[Path]:
    import numpy as np

    rng = np.random.default_rng(QKV_SEED)
    paths = []
    for name in "qkv":
        path = folder / f"{name}.npy"
        with atomic_output(str(path), "wb") as out:
            np.save(out, rng.integers(-64, 64, (QKV_SEQ_LEN, QKV_DIM)).astype(np.int8))
        paths.append(path)
    return paths


def _writer(name: str, text: str):
    def write(folder: Path) -> list[Path]:
        with atomic_output(str(folder / name)) as out:
            out.write(text)
        return [folder / name]
    return write


SAMPLES = {
    "qkv": (("q.npy", "k.npy", "v.npy"), _write_qkv,
            f"q.npy, k.npy, v.npy: int8, {QKV_SEQ_LEN} tokens x dim {QKV_DIM} (for `mcsa attention`)"),
    "book": (("book.txt",), _writer("book.txt", BOOK), "book.txt: an English text (for `mcsa quality capture`)"),
    "profiles": (("profiles.toml",), _writer("profiles.toml", PROFILES),
                 "profiles.toml: an override and a new board (for --profiles)"),
    "config": (("sparse.toml",), _writer("sparse.toml", CONFIG), "sparse.toml: a partial SparsityConfig (for --config)"),
}


@click.command()
@click.argument("names", nargs=-1, required=True, type=click.Choice([*SAMPLES, "all"]))
@click.option("--dir", "folder", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder to write them in (made if missing).")
@fail_on_input_errors(kernels=False)
def example(names, folder):
    """Write sample files to try the commands on. An existing file is never
    overwritten: the command refuses before writing anything.

    \b
    Samples:
      qkv       q.npy, k.npy, v.npy (int8, 128 tokens x dim 32)
      book      book.txt, an English text for `mcsa quality capture`
      profiles  profiles.toml, a profile override and a new board
      config    sparse.toml, a partial SparsityConfig

    \b
    Example:
      mcsa example qkv
      mcsa example all --dir samples
    """
    wanted = list(SAMPLES) if "all" in names else list(dict.fromkeys(names))
    target = Path(folder)
    existing = [_there(target / f) for n in wanted for f in SAMPLES[n][0] if os.path.lexists(target / f)]
    if existing:
        raise InputError(f"{', '.join(existing)} {'is' if len(existing) == 1 else 'are'} already there; nothing "
                         f"written (remove {'it' if len(existing) == 1 else 'them'}, or write elsewhere with --dir)")
    if os.path.exists(target) and not os.path.isdir(target):
        raise InputError(f"--dir {folder}: not a folder")
    if os.path.islink(target) and not os.path.exists(target):
        raise InputError(f"--dir {folder}: a symlink to {os.readlink(target)}, which does not exist")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"--dir {folder}: cannot make it: {err.strerror}") from None
    check_outputs({"--dir": str(target / SAMPLES[wanted[0]][0][0])})
    for name in wanted:
        SAMPLES[name][1](target)
        click.echo(f"wrote {SAMPLES[name][2]}" if folder == "." else f"wrote in {folder}: {SAMPLES[name][2]}")
