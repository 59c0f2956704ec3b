"""Text normalisation shared by the clean stage and the translator, so a sentence typed at
``translate`` is prepared exactly as the training sources were.

* ``normalise``: Unicode normalisation, HTML entities and tags, control characters, whitespace.
* ``script_ratio``: the share of letters written in a language's script (the wrong-script filter).
* ``korean_morphemes``: optional Korean pre-segmentation with kiwipiepy.
* ``strip_markup``: inline reST/Sphinx markup (roles, literals, links, emphasis) to its plain text
  (software documentation corpora).
* ``Preprocessing``: the three above in their order, as one setting of a model.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

from pipeline.common import PipelineError

_TAG = re.compile(r"<[^<>]{1,200}>")
_SPACE = re.compile(r"\s+")
# control (Cc) and format (Cf) characters, line/paragraph separators; a regex is ~20x faster than a per-char loop
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
                      "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]")


def normalise(text: str, form: str) -> str:
    """Unicode-normalise, unescape HTML, drop tags and control characters, squeeze whitespace."""
    if form != "none":
        text = unicodedata.normalize(form, text)
    if "&" in text:
        text = html.unescape(text)
    if "<" in text:
        text = _TAG.sub(" ", text)
    text = _CONTROL.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


# ``literal``, :role:`text` (:c:func:, :ref:`title <target>`, ~ and ! prefixes), `link <url>`_; reST's
# backslash escape after them (``input``\을: no space before the Korean particle) goes too
_RST = re.compile(r"``(?P<literal>.+?)``(?:\\ ?)?"
                  r"|:(?:[\w+.-]+:)?[\w+.-]+:`(?P<role>[^`]+)`(?:\\ ?)?"
                  r"|`(?P<link>[^`]+?)`__?(?:\\ ?)?")
_TARGET = re.compile(r"\s*<[^<>]*>$")
# *emphasis* and **strong**: reST requires a non-space right inside both marks and no word character or
# backslash before the opening one, which keeps f(*args, **kwargs), 2**32 and a * b * c as they are
_EMPHASIS = re.compile(r"(?<![\w*\\])(\*\*?)(?=[^\s*])(?P<text>[^*]+?)(?<=\S)\1(?!\*)(?:\\ ?)?")


def _plain(match: re.Match) -> str:
    if match.group("literal") is not None:
        return match.group("literal")
    text = _TARGET.sub("", match.group("role") or match.group("link")).strip()
    if text.startswith("~"):  # Sphinx shows only the last part of ~module.name
        text = text[1:].rsplit(".", 1)[-1]
    return text.removeprefix("!")


def strip_markup(text: str) -> str:
    """Inline reST markup to plain text: ``code`` -> code, :func:`len` -> len, :ref:`Title <t>` -> Title,
    *word* -> word, **Note:** -> Note:."""
    if "`" in text:
        text = _RST.sub(_plain, text)
    if "*" in text:
        text = _EMPHASIS.sub(r"\g<text>", text)
    return text


# Letters of the script each language is written in; languages not listed are not checked.
_LATIN = r"A-Za-z\u00c0-\u024f"
SCRIPTS = {
    "ko": r"\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f", "ja": r"\u3040-\u30ff\u4e00-\u9fff",
    "zh": r"\u4e00-\u9fff\u3400-\u4dbf", "ru": r"\u0400-\u04ff", "uk": r"\u0400-\u04ff",
    "ar": r"\u0600-\u06ff", "el": r"\u0370-\u03ff", "he": r"\u0590-\u05ff", "hi": r"\u0900-\u097f",
    "th": r"\u0e00-\u0e7f",
    **dict.fromkeys(("en", "de", "fr", "es", "it", "pt", "nl", "sv", "da", "no", "fi", "pl", "cs", "ro", "tr",
                     "hu", "id", "vi", "ms", "et", "lv", "lt", "sk", "sl", "hr", "ca"), _LATIN),
}
_LETTER = re.compile(r"[^\W\d_]")


def script_ratio(text: str, lang: str) -> float | None:
    """Share of the letters of ``text`` written in ``lang``'s script (None: language not checked)."""
    if lang not in SCRIPTS:
        return None
    letters = len(_LETTER.findall(text))
    return len(re.findall(f"[{SCRIPTS[lang]}]", text)) / letters if letters else 1.0


_KIWI = None


def korean_morphemes(text: str) -> str:
    """Korean split into morphemes with kiwipiepy: '책을 읽었다' -> '책 을 읽 었 다'."""
    global _KIWI
    if _KIWI is None:  # one analyser per process (pool workers included); it loads a model
        try:
            from kiwipiepy import Kiwi
        except ImportError:
            raise PipelineError("clean.korean_morphemes needs kiwipiepy: pip install -e '.[korean]'") from None
        _KIWI = Kiwi()
    return " ".join(token.form for token in _KIWI.tokenize(text))


@dataclass(frozen=True)
class Preprocessing:
    """What happens to a sentence before the tokenizer sees it: the one definition that the clean stage
    applies to the training pairs and the translator (``translate``, evaluate, serving) to every input.

    Order matters: markup first (``normalise``'s tag filter would take ``title <target>`` apart), then
    normalisation; Korean morphemes last and on the source only (the clean stage's word-count filters
    run between the two, on words rather than morphemes)."""

    normalize: str = "NFKC"
    strip_markup: bool = False
    korean_morphemes: bool = False

    def text(self, sentence: str) -> str:
        """Markup and normalisation: the target side, and the source before its morphemes."""
        return normalise(strip_markup(sentence) if self.strip_markup else sentence, self.normalize)

    def morphemes(self, sentence: str) -> str:
        return korean_morphemes(sentence) if self.korean_morphemes else sentence

    def source(self, sentence: str) -> str:
        """A source sentence as the model was trained on it."""
        return self.morphemes(self.text(sentence))
