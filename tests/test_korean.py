"""Korean↔English specifics: BLEU tokenised for the target, Hangul in heatmaps, odd Korean text, markup, recipes."""

import json
import logging

import pytest
import sacrebleu
import yaml

from pipeline.common import PipelineError
from pipeline.config import Paths, load_params
from pipeline.overrides import RECIPES, apply_recipe, set_params
from pipeline.scoring import bleu_metric
from pipeline.stages import build, clean, download, embed, evaluate, tokenizer, train
from pipeline.text import strip_markup
from tests.conftest import ROOT, SHARED, write_params

HYPOTHESIS, REFERENCE = "나는 어제 도서관에서 책을 읽었다", "나는 어제 도서관에서 책을 읽었어요"


def test_bleu_on_a_korean_target_segments_with_mecab():
    ko = bleu_metric("ko")
    assert "tok:ko-mecab" in str(ko.get_signature())
    mecab = ko.corpus_score([HYPOTHESIS], [[REFERENCE]]).score
    plain = sacrebleu.BLEU(tokenize="13a").corpus_score([HYPOTHESIS], [[REFERENCE]]).score
    assert mecab > plain + 10  # 13a sees '읽었다' and '읽었어요' as two unrelated words
    assert "tok:13a" in str(bleu_metric("en").get_signature())


def test_a_target_without_its_bleu_tokenizer_is_one_line():
    try:
        import MeCab  # noqa: F401 (present only where sacrebleu[ja] is installed)
    except ImportError:
        with pytest.raises(PipelineError, match=r"BLEU on a 'ja' target needs the ja-mecab tokenizer: "
                                                r"pip install 'sacrebleu\[ja\]'"):
            bleu_metric("ja")
    else:
        pytest.skip("sacrebleu[ja] is installed here")


def test_heatmap_font_has_glyphs_for_every_korean_token_drawn(tmp_path):
    import warnings

    from matplotlib import font_manager, ft2font

    from pipeline.stages.evaluate import heatmap, heatmap_fonts

    tokens = ["▁나는", "▁어제", "▁도서관", "에서", "▁책", "을", "▁읽었다", "</s>"]
    families = heatmap_fonts()
    fonts = [ft2font.FT2Font(font_manager.findfont(f, fallback_to_default=False)) for f in families]
    for char in "".join(tokens):
        assert any(f.get_char_index(ord(char)) for f in fonts), f"no font in {families} draws {char!r}"
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "Glyph ... missing from font" would be a warning
        heatmap({"source": tokens, "target": ["▁I", "▁read", "</s>"],
                 "weights": np.full((3, len(tokens)), 1 / len(tokens))}).savefig(tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 5000


def test_odd_korean_text_passes_every_data_stage(tmp_path):
    from pipeline.corpora.sample_ko_en import generate

    odd = ["ㄱㄴㄷ 자모만 있는 문장", "ＦＵＬＬ　ＷＩＤＴＨ 전각 문자 １２３", "大韓民國 국민은 法 앞에 평등하다",
           "漢字 混用 文章입니다", "\u1100\u1161 조합형 자모", "ﾊﾝｶｸ 반각 가나"]
    pairs = [*generate(600, seed=3), *((k, f"odd sentence {i}") for i, k in enumerate(odd * 5))]
    (tmp_path / "c.ko").write_text("".join(k + "\n" for k, _ in pairs), encoding="utf-8")
    (tmp_path / "c.en").write_text("".join(e + "\n" for _, e in pairs), encoding="utf-8")
    for normalize in ("NFKC", "NFC"):
        root = tmp_path / normalize
        root.mkdir()
        params = load_params(write_params(root, {
            "data": {"corpus": "custom", "custom": {"train": {"src": {"url": str(tmp_path / "c.ko")},
                                                              "tgt": {"url": str(tmp_path / "c.en")}}}},
            "clean": {"normalize": normalize, "strip_markup": True}}))
        paths = Paths(root)
        for stage in (download, clean, tokenizer, embed, build):
            stage.run(params, paths)
        report = json.loads((paths.metrics / "clean.json").read_text())
        assert report["kept_pairs"] > 500


def test_inline_markup_becomes_plain_text():
    assert strip_markup("Both :meth:`str.join` and ``format`` help") == "Both str.join and format help"
    assert strip_markup("sys.stdin에서 ``input``\\을 사용하거나") == "sys.stdin에서 input을 사용하거나"
    assert strip_markup(":ref:`the tutorial <tut-intro>` and :func:`~os.path.join`") == "the tutorial and join"
    assert strip_markup("see `Python <https://python.org>`_ and :c:func:`PyObject_New`") \
        == "see Python and PyObject_New"
    assert strip_markup("a `quoted` word, no markup") == "a `quoted` word, no markup"  # not a reST construct
    assert strip_markup("there *may* be, **Source code:** Lib/os.py") == "there may be, Source code: Lib/os.py"
    assert strip_markup("*name*\\은 문자열, **JANG**-oh") == "name은 문자열, JANG-oh"
    for code in ("f(*args, **kwargs)", "2**32 and a * b * c", "x*y*z", "****"):  # not emphasis
        assert strip_markup(code) == code


def test_recipes_apply_in_place(tmp_path):
    params_file = tmp_path / "params.yaml"
    params_file.write_text((ROOT / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    set_params(params_file, {"data.corpus": "custom", "data.custom": {  # an old corpus: nothing of it may survive
        "train": {"table": {"url": "old.tsv", "format": "tsv"}}, "valid": {"table": {"url": "old-valid.tsv"}}}})
    for recipe, (src, tgt) in (("ko-en", ("ko", "en")), ("en-ko", ("en", "ko"))):
        apply_recipe(params_file, recipe)
        params = load_params(params_file)
        assert (params.data.corpus, params.data.custom, params.data.src, params.data.tgt) == (None, None, src, tgt)
        assert [t.name for t in params.data.test] == ["flores200", "news", "jhe"]
        assert params.data.test[0].files["ko"].mirror == "ko-en/flores200.devtest.ko.gz"
        assert "open" in [t.name for t in params.data.train] and params.registry.model_name == f"nmt-{recipe}"
    text = params_file.read_text(encoding="utf-8")
    assert "# sample-ko-en (embedded, synthetic)" in text and text.count("\ndata:") == 1  # comments kept
    with pytest.raises(PipelineError, match="no recipe 'klingon'; the recipes are: en-ko, ko-en"):
        apply_recipe(params_file, "klingon")


@pytest.mark.slow
def test_an_en_ko_run_is_scored_with_a_korean_tokenizer(tmp_path):
    params = load_params(write_params(tmp_path, {"data": {"src": "en", "tgt": "ko", "sample_pairs": 800},
                                                 "train": {"epochs": 1}, "evaluate": {"beam_size": 1}}))
    paths = Paths(tmp_path)
    for stage in (download, clean, tokenizer, embed, build, train, evaluate):
        stage.run(params, paths)
    scores = json.loads((paths.metrics / "eval.json").read_text())
    assert "tok:ko-mecab" in scores["bleu_signature"] and "nc:6|nw:0" in scores["chrf_signature"]


def test_the_two_recipes_name_the_same_sources():
    ko_en, en_ko = (yaml.safe_load((RECIPES / f"{r}.yaml").read_text(encoding="utf-8"))["data"]
                    for r in ("ko-en", "en-ko"))
    assert {k: v for k, v in ko_en.items() if k not in ("src", "tgt")} == \
        {k: v for k, v in en_ko.items() if k not in ("src", "tgt")}


@pytest.mark.skipif(not (SHARED / "corpora" / "ko-en").exists(), reason="../shared/corpora not present")
def test_the_ko_en_recipe_runs_from_a_mirror_and_names_what_it_lacks(tmp_path, monkeypatch, caplog):
    """The project's ../shared/corpora as a user's mirror, offline: open.train and the three test sets come from
    it; every other source the recipe names is reported missing by name, in one line, and the run goes on."""
    params_file = tmp_path / "params.yaml"
    params_file.write_text((ROOT / "params.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    apply_recipe(params_file, "ko-en")
    params = load_params(params_file)
    monkeypatch.setenv("NMT_DATA_MIRROR", str(SHARED / "corpora"))
    monkeypatch.setenv("NMT_OFFLINE", "1")
    with caplog.at_level(logging.WARNING, logger="pipeline.stages.download"):
        got = download.run(params, Paths(tmp_path))
    assert [(i["name"], i["lines"]) for i in got["sources"]["train"]] == [("open", 78125)]
    assert [(i["name"], i["lines"]) for i in got["sources"]["test"]] == [("flores200", 1012), ("news", 2000),
                                                                         ("jhe", 720)]
    named = [s.name for s in params.data.train] + [params.data.valid.name]
    missing = [m["name"] for m in got["missing"]]
    assert sorted(missing) == sorted(set(named) - {"open"})
    lines = [r.getMessage() for r in caplog.records]
    for name in missing:
        line, = [ln for ln in lines if ln.startswith(f"source '{name}' ")]
        assert "\n" not in line and "missing, going on without it" in line
