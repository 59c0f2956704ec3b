"""Embedding pretraining: GloVe's co-occurrences and loss, and both trainers on planted structure."""

import itertools
import json
import random

import numpy as np
import pytest

from pipeline import glove
from pipeline.common import PipelineError
from pipeline.config import Embed, load_params
from pipeline.stages import embed
from tests.conftest import write_params


def test_cooccurrence_equals_a_brute_force_count():
    rng = random.Random(0)
    sentences = [np.array([rng.randrange(7) for _ in range(rng.randint(1, 9))]) for _ in range(60)]
    window = 3
    expected = np.zeros((7, 7))
    for s in sentences:
        for i, j in itertools.permutations(range(len(s)), 2):
            if abs(i - j) <= window:
                expected[s[i], s[j]] += 1.0 / abs(i - j)
    counts = glove.cooccurrence(iter(sentences), 7, window, memory_mb=1).toarray()  # many tiny chunks
    np.testing.assert_allclose(counts, expected)
    np.testing.assert_allclose(glove.cooccurrence(iter(sentences), 7, window).toarray(), expected)


def _planted(n: int = 3000, seed: int = 0) -> tuple[list[np.ndarray], list[int], list[int]]:
    """Two classes of words (ids 10-14 and 20-24), each seen only among its own class's context words."""
    rng = random.Random(seed)
    a, b = list(range(10, 15)), list(range(20, 25))
    ctx_a, ctx_b = list(range(30, 40)), list(range(40, 50))
    sentences = []
    for _ in range(n):
        words, ctx = (a, ctx_a) if rng.random() < 0.5 else (b, ctx_b)
        sentences.append(np.array([rng.choice(ctx), rng.choice(ctx), rng.choice(words), rng.choice(ctx)]))
    return sentences, a, b


def _separation(vectors: np.ndarray, a: list[int], b: list[int]) -> tuple[float, float]:
    unit = {i: vectors[i] / np.linalg.norm(vectors[i]) for i in a + b}
    within = np.mean([unit[i] @ unit[j] for group in (a, b) for i, j in itertools.combinations(group, 2)])
    across = np.mean([unit[i] @ unit[j] for i in a for j in b])
    return float(within), float(across)


@pytest.mark.parametrize("method", ["glove", "word2vec"])
def test_same_class_tokens_end_up_nearer_than_cross_class_ones(method):
    sentences, a, b = _planted()
    cfg = Embed(method=method, dim=16, window=3, epochs=20)  # word2vec has not separated them after 5
    vectors, trained, _ = embed.TRAINERS[method](sentences, 60, cfg)
    assert trained[a + b].all() and not trained[:10].any()  # ids that never occur are not "trained"
    within, across = _separation(vectors, a, b)
    assert within > across + 0.3, (within, across)
    again, _, _ = embed.TRAINERS[method](sentences, 60, cfg)
    assert np.array_equal(vectors, again)  # deterministic for a seed


def test_glove_loss_falls():
    sentences, _, _ = _planted(1000)
    counts = glove.cooccurrence(sentences, 60, 3)
    _, losses = glove.train(counts, dim=8, epochs=10, seed=1, progress=False)
    assert losses[-1] < 0.5 * losses[0] and all(b <= a * 1.01 for a, b in itertools.pairwise(losses))


def test_glove_embed_stage_writes_vectors_neighbours_and_word2vec_text(tiny_project, tmp_path):
    from gensim.models import KeyedVectors
    from tokenizers import Tokenizer

    _, paths = tiny_project
    glove_params = load_params(write_params(tmp_path, {"embed": {"method": "glove", "dim": 16, "window": 4,
                                                                "epochs": 5}}))
    (tmp_path / "data").mkdir()
    for d in ("clean", "tokenizer"):
        (tmp_path / "data" / d).symlink_to(getattr(paths, d))
    out = type(paths)(tmp_path)
    info = embed.run(glove_params, out)
    assert info["method"] == "glove" and info["src_coverage"] > 0.5 and len(info["src_epoch_losses"]) == 5
    matrix = np.load(out.embeddings / "src.npy")
    kv = KeyedVectors.load_word2vec_format(str(out.embeddings / "src.vec"))
    tokens = [Tokenizer.from_file(str(paths.tokenizer / "src.json")).id_to_token(i) for i in range(len(matrix))]
    assert kv.vectors.shape == matrix.shape and np.allclose(kv[tokens], matrix, atol=1e-5)
    rows = (out.embeddings / "neighbours.tsv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("side\ttoken\tneighbour_1") and len(rows) == 1 + 2 * embed.SHOWN
    assert json.loads((out.embeddings / "info.json").read_text()) == info


def test_bad_embedding_input_is_one_line(tmp_path, tiny_project):
    with pytest.raises(PipelineError, match=r"embed.glove.x_max: Input should be greater than 0"):
        load_params(write_params(tmp_path, {"embed": {"glove": {"x_max": 0}}}))
    with pytest.raises(PipelineError, match=r"model.emb_dim \(16\) must equal embed.dim \(32\)"):
        load_params(write_params(tmp_path, {"embed": {"dim": 32}}))
    params, paths = tiny_project
    (tmp_path / "data" / "clean").mkdir(parents=True)
    (tmp_path / "data" / "tokenizer").symlink_to(paths.tokenizer)
    for lang in ("ko", "en"):
        (tmp_path / "data" / "clean" / f"train.{lang}").write_text("")
    with pytest.raises(PipelineError, match=r"train.ko is empty: nothing to train embeddings on"):
        embed.run(params, type(paths)(tmp_path))
    for lang in ("ko", "en"):
        (tmp_path / "data" / "clean" / f"train.{lang}").write_text(
            (paths.clean / f"train.{lang}").read_text(encoding="utf-8"), encoding="utf-8")
    too_rare = params.model_copy(update={"embed": params.embed.model_copy(update={"min_count": 10**9})})
    with pytest.raises(PipelineError, match=r"^embed.min_count: fewer than two source pieces occur 1000000000 times"):
        embed.run(too_rare, type(paths)(tmp_path))
