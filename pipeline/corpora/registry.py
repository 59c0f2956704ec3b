"""Named corpora: where each split of each language lives upstream, and its checksum when known.

A mirror (``NMT_DATA_MIRROR``) serves the same files as ``<mirror>/<corpus name>/<file name>``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteFile:
    url: str
    sha256: str | None = None
    member: str | None = None  # glob of the member inside a .tar.gz/.zip


@dataclass(frozen=True)
class Corpus:
    languages: tuple[str, str]  # the default direction: (source, target)
    files: dict[str, dict[str, RemoteFile]]  # split -> language -> file
    description: str


_M30K = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw"
_M30K_SHA = {
    "train.de": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    "train.en": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    "val.de": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    "val.en": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    "test_2016_flickr.de": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    "test_2016_flickr.en": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
}
_KPC = "https://github.com/jungyeul/korean-parallel-corpora/raw/master/korean-english-news-v1"

CORPORA: dict[str, Corpus] = {
    "multi30k": Corpus(
        languages=("de", "en"),
        files={split: {lang: RemoteFile(f"{_M30K}/{name}.{lang}.gz", _M30K_SHA[f"{name}.{lang}"])
                       for lang in ("de", "en")}
               for split, name in (("train", "train"), ("valid", "val"), ("test", "test_2016_flickr"))},
        description="Multi30k task 1 (Elliott et al. 2016): 29k German-English image descriptions",
    ),
    "ko-en-news": Corpus(
        languages=("ko", "en"),
        # upstream publishes no checksums for these archives
        files={split: {lang: RemoteFile(f"{_KPC}/korean-english-park.{name}.tar.gz", None, f"*.{lang}")
                       for lang in ("ko", "en")}
               for split, name in (("train", "train"), ("valid", "dev"), ("test", "test"))},
        description="Korean-English news (Park, Hong and Cha 2016, CC BY-SA 3.0): about 94k pairs",
    ),
}
