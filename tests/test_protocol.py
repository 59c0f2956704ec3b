"""The evaluation protocol: a corpus's own test split is translated and scored whole, against its references
exactly as downloaded; scores carry confidence intervals; promotion needs a significant gain."""

import json
import random

import pytest
import sacrebleu

from pipeline.config import Paths, load_params
from pipeline.corpora.sample_ko_en import generate
from pipeline.scoring import corpus_scores, paired_test
from pipeline.stages import build, clean, download, embed, evaluate, tokenizer, train
from pipeline.stages.promote import significant
from tests.conftest import write_params

TRAIN = list(generate(1500, seed=3))
# what real test sets hold: a duplicate pair, a source also in train, a line far longer than any training
# sentence, full-width characters and HTML entities on both sides, an empty line
TEST = [
    ("나는 어제 도서관에서 책을 읽었다", "I read a book at the library yesterday"),
    ("나는 어제 도서관에서 책을 읽었다", "I read a book at the library yesterday"),
    TRAIN[7],
    ("그녀는 커피를 마셨어요 " * 120, "She drank coffee " * 120),
    ("ＡＢＣ 회사는 &quot;좋다&quot;", "Ｆｕｌｌ ｗｉｄｔｈ &amp; <b>tags</b> ref"),
    ("", ""),
    ("우리는 학교에 갔다", "We went to school"),
]

SECOND = [("우리는 학교에 갔다", "We went to school"), ("나는 책을 읽었다", "I read a book"), TRAIN[9]]


def _write(path, lines):
    path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8"))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("protocol")
    files = {}
    for split, pairs in (("train", TRAIN), ("test", TEST)):
        for side, i, lang in (("src", 0, "ko"), ("tgt", 1, "en")):
            files.setdefault(split, {})[side] = {"url": str(root / f"{split}.{lang}")}
            _write(root / f"{split}.{lang}", [p[i] for p in pairs])
    second = {}
    for i, lang in ((0, "ko"), (1, "en")):
        second[lang] = {"url": str(root / f"second.{lang}")}
        _write(root / f"second.{lang}", [p[i] for p in SECOND])
    params = load_params(write_params(root, {"data": {"corpus": "custom", "custom": files, "test": [
                                                 {"name": "second", "files": second, "licence": "CC0"}]},
                                             "train": {"epochs": 1}, "evaluate": {"beam_size": 2}}))
    paths = Paths(root)
    for stage in (download, clean, tokenizer, embed, build, train):
        stage.run(params, paths)
    return params, paths


def test_the_corpus_test_split_is_scored_whole_against_its_own_references(project):
    params, paths = project
    report = json.loads((paths.metrics / "clean.json").read_text())
    assert report["splits"]["test"] == len(TEST) and report["held_out"]["test"] == "given"
    test_sources = {s for s, _ in TEST}
    overlap = sum(s in test_sources for s, _ in TRAIN)  # TRAIN[7] at least
    assert report["removed"]["train_source_in_test:custom"] == overlap >= 1  # the overlap left train, not the test set
    assert not test_sources & set((paths.clean / "train.ko").read_text(encoding="utf-8").splitlines())
    assert (paths.original / "test.en").read_bytes() == (paths.root / "test.en").read_bytes()
    assert (paths.original / "test.ko").read_bytes() == (paths.root / "test.ko").read_bytes()

    metrics = evaluate.run(params, paths)
    hyps = (paths.reports / "test.hyp").read_text(encoding="utf-8").split("\n")[:-1]
    refs = [t for _, t in TEST]
    assert metrics["test_pairs"] == len(TEST) == len(hyps)
    assert hyps[5] == ""  # an empty line translates to an empty line; the long one is cut, not dropped
    assert metrics["bleu"] == round(sacrebleu.corpus_bleu(hyps, [refs]).score, 2)  # the raw references
    assert metrics["chrf"] == round(sacrebleu.corpus_chrf(hyps, [refs]).score, 2)
    for name in ("bleu", "chrf", "chrfpp"):
        assert metrics[f"{name}_ci"] >= 0 and "bs:1000" in metrics[f"{name}_signature"]
    assert "nw:2" in metrics["chrfpp_signature"]


def test_every_test_set_is_scored_and_promotion_names_the_judged_one(project):
    from pipeline.stages import promote
    from pipeline.tracking import connect

    params, paths = project
    metrics = json.loads((paths.metrics / "eval.json").read_text()) if (paths.metrics / "eval.json").exists() \
        else evaluate.run(params, paths)
    assert list(metrics["test_sets"]) == ["custom", "second"] and metrics["judged_on"] == "custom"
    hyps = (paths.reports / "tests" / "second.hyp").read_text(encoding="utf-8").splitlines()
    second = metrics["test_sets"]["second"]
    assert second["pairs"] == len(SECOND) == len(hyps)
    assert second["bleu"] == round(sacrebleu.corpus_bleu(hyps, [[t for _, t in SECOND]]).score, 2)
    assert {"bleu_ci", "chrf_ci", "chrfpp_ci", "bleu_signature"} <= set(second)
    assert metrics["test_sets"]["custom"]["bleu"] == metrics["bleu"]
    report = json.loads((paths.metrics / "clean.json").read_text())
    assert report["removed"]["train_source_in_test:second"] == 1  # TRAIN[9]
    client = connect(paths.root).MlflowClient()
    run = client.get_run(json.loads((paths.model / "run.json").read_text())["run_id"])
    for name in ("custom", "second"):
        assert run.data.metrics[f"test/{name}/bleu"] == metrics["test_sets"][name]["bleu"]
        assert f"test/{name}/chrf_ci" in run.data.metrics
    version = client.get_model_version(metrics["model_name"], metrics["model_version"])
    assert version.tags["judged_on"] == "custom" and version.tags["test_sets"] == "custom,second"
    card = (paths.reports / "model_card.md").read_text(encoding="utf-8")
    assert "| second |" in card and "CC0" in card and "custom (judged)" in card
    decision = promote.run(params, paths)
    assert decision["test_set"] == "custom" and decision["reason"].startswith("on test set custom: ")


def test_the_model_input_is_prepared_as_translate_prepares_it(project):
    from pipeline.inference.translator import Translator

    _, paths = project
    translator = Translator.from_file(paths.model / "model.pt")
    prepared = (paths.clean / "test.ko").read_text(encoding="utf-8").splitlines()  # what the valid loss reads
    assert prepared == [translator.preprocessing.source(s) for s, _ in TEST]
    assert prepared[4] == 'ABC 회사는 "좋다"'


# --- promotion by significance ---------------------------------------------------------------------------

REFS = [t for _, t in generate(1000, seed=11)]


def _degraded(n: int, seed: int) -> list[str]:
    """A system that loses the last two words of ``n`` references picked at random (by ``seed``)."""
    picked = set(random.Random(seed).sample(range(len(REFS)), n))
    return [" ".join(r.split()[:-2]) if i in picked else r for i, r in enumerate(REFS)]


def test_a_model_that_outputs_almost_nothing_still_gets_scores_and_intervals():
    """sacrebleu's own chrF bootstrap raises TypeError on this (a resample with no hypothesis n-gram)."""
    references = [f"sentence number {i} is here" for i in range(30)]
    hypotheses = ["sentence"] + [""] * 29
    with pytest.raises(TypeError):
        sacrebleu.CHRF().corpus_score(hypotheses, [references], n_bootstrap=1000)
    scores = corpus_scores(hypotheses, references, "en")
    assert scores["chrf"] == round(sacrebleu.corpus_chrf(hypotheses, [references]).score, 2) > 0
    assert 0 < scores["chrf_ci"] < scores["chrf"] * 3 and scores["bleu_ci"] == 0.0


def test_a_candidate_better_by_noise_is_not_promoted():
    champion = _degraded(100, seed=1)
    swapped = list(champion)  # the same hypotheses with two sentences swapped: higher by chance
    swapped[4], swapped[5] = swapped[5], swapped[4]
    rerun = _degraded(96, seed=2)  # a rerun that errs on other sentences, and on four fewer of them
    for candidate, against in ((champion, swapped), (rerun, champion)):
        assert corpus_scores(candidate, REFS, "en")["bleu"] > corpus_scores(against, REFS, "en")["bleu"]
        better, why = significant(candidate, against, REFS, "en", "bleu", 0.05)
        assert not better and "not significantly better (p = " in why, why
        assert significant(candidate, against, REFS, "en", "bleu", None)[0]  # significance: null, any gain


def test_a_clearly_better_candidate_is_promoted():
    weak, strong = _degraded(200, seed=1), _degraded(100, seed=2)
    better, why = significant(strong, weak, REFS, "en", "bleu", 0.05)
    assert better and "significantly" in why
    assert paired_test(strong, weak, REFS, "en", "chrf")["p_value"] < 0.05
    assert not significant(weak, strong, REFS, "en", "bleu", 0.05)[0]  # and never the other way round
