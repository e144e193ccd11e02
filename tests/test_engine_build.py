"""The llama.cpp warmlm installs: llama-cpp-python 0.3.36 with scripts/engine's patch, whose
flash attention runs the tiled kernel for a short prompt chunk after a history (a returning
chat turn) where upstream runs its row-at-a-time kernel. Both kernels compute the same
attention but round differently (the row-at-a-time one takes Q and V in f16), and through the
layers that moves logits by up to about 0.5 (Qwen) or 1.6 (SmolLM2): as much as llama.cpp's
own other path, attention without flash attention, moves them. So the patched kernel's logits
must be as close to upstream's as upstream's are to that path, with the same top tokens up to
a near-tie.

Which kernel runs is fixed per process (the patch reads GGML_FA_TILED_MIN_ROWS once; 64 is
upstream's choice), so each side runs in its own subprocess."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import QWEN, SMOLLM, installed, model_path

ROOT = Path(__file__).resolve().parents[1]
PATCH = next((ROOT / "scripts" / "engine").glob("llama-cpp-python-*.patch"))
# (history, new tokens) of each chunk: below, at and above the patch's 8-row threshold, and
# 64 rows, where upstream tiles too
CHUNKS = ((400, 5), (400, 8), (400, 21), (700, 63), (300, 64))
NEAR_TIE = 1.0  # a top token may differ where upstream's top two logits are this close
SLACK = 1.5  # patched vs upstream may differ by this × upstream vs no flash attention (≤ 1.09×)

PROBE = """
import json
import sys
import numpy as np
from pathlib import Path
from warmlm.engine.runner import BatchToken, ModelRunner

path, out, chunks = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
r = ModelRunner(path, n_ctx=2048, n_seq_max=2, n_batch=512, threads=2, flash_attn=sys.argv[4])
text = " ".join(f"Entry {i}: the keeper logged ship number {i * 7 % 13}." for i in range(200))
tokens = r.tokenize(text)
rows = []
for history, new in chunks:
    r.clear()
    for start in range(0, history, 512):
        end = min(start + 512, history)
        r.decode([BatchToken(tokens[p], p, 0, False) for p in range(start, end)])
    r.decode([BatchToken(tokens[p], p, 0, True) for p in range(history, history + new)])
    rows += [r.logits(i) for i in range(new)]
np.save(out, np.stack(rows))
r.close()
"""


def test_the_installed_engine_is_the_patched_build() -> None:
    label = re.search(r'^\+__version__ = "(.+)"$', PATCH.read_text(), re.M)
    assert label, "the patch sets the version label"
    assert importlib.metadata.version("llama_cpp_python") == label.group(1)


def logits(model: str, tmp: Path, min_rows: str, flash_attn: str = "on") -> np.ndarray:
    out = tmp / f"logits-{min_rows}-{flash_attn}.npy"
    env = {**os.environ, "GGML_FA_TILED_MIN_ROWS": min_rows}
    cmd = [
        sys.executable,
        "-c",
        PROBE,
        str(model_path(model)),
        str(out),
        json.dumps(CHUNKS),
        flash_attn,
    ]
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, timeout=600)
    return np.load(out)


def chunks(rows: np.ndarray) -> list[np.ndarray]:
    return np.split(rows, np.cumsum([n for _, n in CHUNKS])[:-1])


@pytest.mark.parametrize(
    "model",
    [
        SMOLLM,
        pytest.param(QWEN, marks=pytest.mark.qwen),
    ],
)
def test_the_tiled_kernel_gives_the_row_at_a_time_kernels_logits(
    model: str, tmp_path: Path
) -> None:
    if not installed(model):
        pytest.skip(f"{model} not installed")
    patched, upstream = logits(model, tmp_path, "8"), logits(model, tmp_path, "64")
    no_flash = logits(model, tmp_path, "64", "off")
    assert patched.shape == upstream.shape == (sum(n for _, n in CHUNKS), patched.shape[1])
    # the patch changes the kernel where it means to, and only there: a chunk both builds run
    # through the same kernel is bit-equal
    same = [np.array_equal(p, u) for p, u in zip(chunks(patched), chunks(upstream), strict=True)]
    assert same == [True, False, False, False, True]
    for p, u, off in zip(chunks(patched), chunks(upstream), chunks(no_flash), strict=True):
        assert np.abs(p - u).max() <= SLACK * np.abs(u - off).max()
        at_patched_top = u[np.arange(len(u)), p.argmax(axis=1)]
        assert (at_patched_top >= u.max(axis=1) - NEAR_TIE).all()
