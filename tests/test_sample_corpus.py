import random
import re

import pytest

from pipeline.corpora.sample_ko_en import (
    KoVerb,
    generate,
    has_batchim,
    indefinite,
    instrumental,
    particle,
    sentence_pair,
)


def test_default_size_is_distinct_and_seeded():
    pairs = list(generate(20000, seed=1))
    assert len({ko for ko, _ in pairs}) == 20000
    assert pairs[:50] == list(generate(50, seed=1))
    assert pairs[:50] != list(generate(50, seed=2))


@pytest.mark.parametrize(("word", "consonant"), [("책", True), ("사과", False), ("물", True), ("커피", False)])
def test_batchim(word, consonant):
    assert has_batchim(word) is consonant


def test_particles_follow_the_final_consonant():
    assert particle("책", "을", "를") == "책을"
    assert particle("사과", "을", "를") == "사과를"
    assert particle("선생님", "은", "는") == "선생님은"
    assert particle("친구", "과", "와") == "친구와"
    assert instrumental("펜") == "펜으로"
    assert instrumental("버스") == "버스로"
    assert instrumental("지하철") == "지하철로"  # ㄹ takes 로


@pytest.mark.parametrize(("verb", "expected"), [
    (KoVerb("읽", "읽어"), ["읽었다.", "읽는다.", "읽을 것이다.", "읽었어요.", "읽어요.", "읽습니다."]),
    (KoVerb("가", "가"), ["갔다.", "간다.", "갈 것이다.", "갔어요.", "가요.", "갑니다."]),
    (KoVerb("만들", "만들어"), ["만들었다.", "만든다.", "만들 것이다.", "만들었어요.", "만들어요.", "만듭니다."]),
    (KoVerb("듣", "들어", "들을"), ["들었다.", "듣는다.", "들을 것이다.", "들었어요.", "들어요.", "듣습니다."]),
    (KoVerb("돕", "도와", "도울"), ["도왔다.", "돕는다.", "도울 것이다.", "도왔어요.", "도와요.", "돕습니다."]),
])
def test_conjugation(verb, expected):
    got = [verb.conjugate(t, "plain", False) for t in ("past", "present", "future")] + \
        [verb.conjugate("past", "polite", False), verb.conjugate("present", "polite", False),
         verb.conjugate("present", "formal", False)]
    assert got == expected


def test_negation_and_questions():
    read, study = KoVerb("읽", "읽어"), KoVerb("공부하", "공부해")
    assert read.negate("past", "plain", False, long_form=False) == "안 읽었다."
    assert read.negate("past", "polite", True, long_form=True) == "읽지 않았어요?"
    assert study.negate("present", "formal", False, long_form=False) == "공부하지 않습니다."  # 하다: long form
    assert read.conjugate("present", "formal", True) == "읽습니까?"


def test_english_articles():
    assert indefinite("apple") == "an apple"
    assert indefinite("old book") == "an old book"
    assert indefinite("umbrella") == "an umbrella"
    assert indefinite("university") == "a university"
    assert indefinite("hour") == "an hour"
    assert indefinite("red bag") == "a red bag"


def test_sentences_are_well_formed():
    rng = random.Random(0)
    for _ in range(3000):
        ko, en = sentence_pair(rng)
        assert en[0].isupper() and en[-1] in ".?"
        assert (ko[-1] == "?") == (en[-1] == "?")
        assert not re.search(r"\ba [aeiou]", en.replace("a u", "")), en  # no "a apple"
        assert "  " not in ko and "  " not in en
        if en.startswith(("He ", "She ", "Minsu ")) and " every " in en and en.endswith("."):
            assert en.split()[1] in ("does", "will") or en.split()[1].endswith("s"), en  # agreement
        if en.startswith(("I ", "They ", "We ")) and " every " in en and en.endswith("."):
            assert en.split()[1] in ("do", "will") or not en.split()[1].endswith("s"), en
