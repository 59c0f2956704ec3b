"""One pydantic model of ``params.yaml``, validated once, plus the fixed artifact paths.

Every section is named after the stage that reads it (``data`` is read by ``download``), so DVC's
``params:`` lists in ``dvc.yaml`` and the sections here stay one-to-one. ``params.yaml`` lists every
field with the same value as the defaults here (a test checks it): DVC only sees the file.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pipeline import corpora
from pipeline.common import PipelineError, merged
from pipeline.decoding import Decoding
from pipeline.text import Preprocessing

SPLITS = ("train", "valid", "test")
DECODING = Decoding()  # the decoding defaults live with the decoding settings
PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0.0, lt=1.0)]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FileSource(Section):
    url: str | None = None  # http(s)://, file:// or a local path; null: a file only a mirror holds
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    member: str | None = None  # glob of a member inside a .tar(.gz)/.zip; .gz files and members are decompressed
    # where NMT_DATA_MIRROR holds this file (a path inside the mirror; the member itself or the archive);
    # default <source name>/<file name of url>
    mirror: str | None = None

    @model_validator(mode="after")
    def _somewhere(self) -> FileSource:
        if self.url is None and self.mirror is None:
            raise ValueError("give the file's url, or its mirror path (a file only a mirror holds)")
        return self


class TableSource(FileSource):
    """One TSV/CSV file holding both sides."""

    format: Literal["tsv", "csv"] = "tsv"
    src_column: int | str = 0  # index, or name when header is true
    tgt_column: int | str = 1
    header: bool = False


class SplitSource(Section):
    src: FileSource | None = None
    tgt: FileSource | None = None
    table: TableSource | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> SplitSource:
        if (self.table is None) == (self.src is None or self.tgt is None) or (self.table and (self.src or self.tgt)):
            raise ValueError("give either src and tgt files, or one table")
        return self


class Source(Section):
    """One corpus of a run in ``data.train``, ``data.valid`` or ``data.test``: where its pairs come from (one
    kind: ``corpus``, ``sacrebleu``, a file per language, or a table) and what travels with the model about it.
    Files are keyed by language (``files: {ko: ..., en: ...}``), so one list serves both directions."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")  # its row in the reports, its test-set metric names
    corpus: str | None = None  # a registry name, hf:<dataset>[:<config>] or sample-ko-en: its split of the list's role
    split: str | None = None  # that corpus's split, when not the list's (train, valid, test; HF: data.hf.splits)
    sacrebleu: str | None = None  # a test set sacrebleu downloads by name (wmt14, iwslt17, ...): valid/test only
    files: dict[str, FileSource] | None = None  # language -> its file (line-aligned)
    table: TableSource | None = None  # both sides in one file: src_column/tgt_column as data.src/data.tgt
    weight: Annotated[float, Field(gt=0.0)] = 1.0  # train: 2 = every pair twice, 0.5 = a seeded half
    tag: str | None = Field(default=None, pattern=r"^<[\w-]+>$")  # train: a token put before each source
    licence: str | None = None  # as upstream states it: it travels with the model (MLflow, model card)
    homepage: str | None = None  # where a user reads about it
    optional: bool = False  # true: a run goes on without it when it cannot be had (said in one line)

    @model_validator(mode="after")
    def _one_kind(self) -> Source:
        kinds = [k for k, v in (("corpus", self.corpus), ("sacrebleu", self.sacrebleu), ("table", self.table),
                                ("files", self.files)) if v is not None]
        if len(kinds) != 1:
            raise ValueError(f"source '{self.name}': give one of corpus, sacrebleu, files (one per language) or a "
                             f"table (got {', '.join(kinds) or 'none'})")
        if self.corpus is not None and corpora.kind(self.corpus) not in ("registry", "hf", "sample"):
            raise ValueError(f"source '{self.name}': unknown corpus '{self.corpus}'; choose one of "
                             f"{corpora.SAMPLE}, {', '.join(corpora.CORPORA)} or hf:<dataset>[:<config>]")
        return self

    @property
    def kind(self) -> str:
        """How the download stage gets it: ``registry``, ``hf``, ``sacrebleu``, ``table`` or ``files``."""
        if self.corpus is not None:
            return corpora.kind(self.corpus) or "registry"
        return "sacrebleu" if self.sacrebleu else "table" if self.table else "files"


class HFSource(Section):
    """Column mapping for ``corpus: hf:<dataset>[:<config>]`` (HF ``datasets``)."""

    src_column: str | None = None  # dotted path in a row; default translation.<src>
    tgt_column: str | None = None
    splits: dict[Literal["train", "valid", "test"], str] = {"train": "train", "valid": "validation", "test": "test"}


class Data(Section):
    """The run's corpora: one ``corpus`` (its own train, valid and test splits), and/or the lists ``train``
    (more training corpora, merged), ``valid`` and ``test`` (named test sets, each scored; the first decides
    promotion). ``corpus: null`` takes the lists alone."""

    corpus: str | None = "sample-ko-en"  # sample-ko-en | a registry name | hf:<dataset>[:<config>] | custom | null
    src: str = "ko"
    tgt: str = "en"
    sample_pairs: PositiveInt = 24000  # sample-ko-en only
    seed: int = 1
    offline: bool = False  # use the download cache (and NMT_DATA_MIRROR) only
    hf: HFSource = HFSource()
    custom: dict[Literal["train", "valid", "test"], SplitSource] | None = None  # corpus: custom
    train: list[Source] = []
    valid: Source | None = None
    test: list[Source] = []
    monolingual: list[Source] = []  # target-language text for back-translation: files: {<tgt>: ...}, or a corpus

    @model_validator(mode="after")
    def _known_corpus(self) -> Data:
        if self.src == self.tgt:
            raise ValueError(f"src and tgt are both '{self.src}'")
        if self.corpus is None:
            if not self.train:
                raise ValueError("corpus is null and train lists no source; name a corpus or list train sources")
        else:
            kind, langs = corpora.kind(self.corpus), corpora.languages(self.corpus)
            if kind is None:
                raise ValueError(f"unknown corpus '{self.corpus}'; choose one of {corpora.describe()}")
            if kind == "custom" and (not self.custom or "train" not in self.custom):
                raise ValueError("corpus 'custom' needs data.custom.train (src and tgt files, or a table)")
            if langs is not None and {self.src, self.tgt} != set(langs):
                raise ValueError(f"corpus '{self.corpus}' has languages {langs[0]} and {langs[1]}, "
                                 f"not {self.src}/{self.tgt}")
        for role, sources in (("train", self.train), ("test", self.test)):
            names = [s.name for s in sources]
            if len(set(names)) != len(names):
                raise ValueError(f"two {role} sources share a name ({', '.join(names)}); names must differ")
        if any(s.sacrebleu for s in self.train):
            raise ValueError("a sacrebleu test set cannot be a train source")
        for source in [*self.train, *self.test, *([self.valid] if self.valid else [])]:
            if source.files is not None and set(source.files) != {self.src, self.tgt}:
                raise ValueError(f"source '{source.name}': files are for {', '.join(source.files)}; give one for "
                                 f"each of {self.src} and {self.tgt}")
        for source in self.monolingual:
            if source.files is not None and set(source.files) != {self.tgt}:
                raise ValueError(f"monolingual source '{source.name}': give one file, of the target language "
                                 f"({self.tgt}): files: {{{self.tgt}: ...}}")
            if source.table is not None or source.sacrebleu is not None:
                raise ValueError(f"monolingual source '{source.name}': give files: {{{self.tgt}: ...}} or a corpus "
                                 "(its target side)")
        return self

    @property
    def name(self) -> str:
        """What the run's data is called (registry and run names): the corpus, else the first train source."""
        return self.corpus or self.train[0].name


class LanguageID(Section):
    """fastText's lid.176 (pipeline/langid.py): a side whose language gets a probability below its threshold
    (among the model's three best guesses) removes the pair; 0 turns that side's check off."""

    src: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    tgt: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1


class Clean(Section):
    normalize: Literal["NFKC", "NFC", "none"] = "NFKC"
    min_words: PositiveInt = 1
    max_words: PositiveInt = 80
    max_ratio: Annotated[float, Field(ge=1.0)] = 3.0  # longer/shorter side, in words
    min_script_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.4  # letters in the language's script; 0 = off
    language_id: LanguageID = LanguageID()
    korean_morphemes: bool = False  # split a Korean source into morphemes (kiwipiepy) before subwords
    strip_markup: bool = False  # inline reST/Sphinx markup (``code``, :func:`x`, *em*) to plain text, both sides
    valid_fraction: Fraction = 0.04  # used only when the corpus has no valid split
    test_fraction: Fraction = 0.04
    seed: int = 1

    @functools.cached_property
    def preprocessing(self) -> Preprocessing:
        """What is done to every sentence before the tokenizer: training pairs and translator input alike
        (built once: the clean stage asks for it for every pair)."""
        return Preprocessing(self.normalize, self.strip_markup, self.korean_morphemes)


class Tokenize(Section):
    model: Literal["bpe", "unigram"] = "bpe"
    vocab_size: Annotated[int, Field(ge=100)] = 4000
    joint: bool = False
    min_frequency: PositiveInt = 2  # bpe only
    byte_fallback: bool = False  # unseen characters become UTF-8 byte tokens instead of <unk>
    limit_alphabet: PositiveInt | None = None  # bpe: keep only the most frequent characters as base symbols

    @model_validator(mode="after")
    def _room_for_bytes(self) -> Tokenize:
        if self.byte_fallback and self.vocab_size < 512:
            raise ValueError("byte_fallback needs vocab_size >= 512 (256 of it are byte tokens)")
        return self


class Word2VecOptions(Section):
    algorithm: Literal["skipgram", "cbow"] = "skipgram"
    negative: PositiveInt = 5  # negative samples


class GloveOptions(Section):
    x_max: Annotated[float, Field(gt=0.0)] = 100.0  # weighting f(x) = min(1, (x / x_max)^alpha)
    alpha: Annotated[float, Field(gt=0.0)] = 0.75
    lr: Annotated[float, Field(gt=0.0)] = 0.05  # AdaGrad's initial learning rate
    batch_size: PositiveInt = 50_000  # co-occurrence cells per update
    memory_mb: PositiveInt = 1024  # bound on the co-occurrence counting's temporary arrays


class Embed(Section):
    """Subword embedding pretraining; ``method`` picks the block below that is used."""

    method: Literal["word2vec", "glove", "none"] = "word2vec"
    dim: PositiveInt = 128  # = model.emb_dim with train.embeddings: pretrained
    window: PositiveInt = 5  # context tokens on each side
    min_count: PositiveInt = 1  # rarer pieces get random vectors
    epochs: PositiveInt = 5
    seed: int = 1
    workers: PositiveInt = 1  # word2vec threads; 1 gives the same vectors on every run
    word2vec: Word2VecOptions = Word2VecOptions()
    glove: GloveOptions = GloveOptions()


class Build(Section):
    max_len: Annotated[int, Field(gt=0, le=65535)] = 128  # subword tokens, incl. BOS/EOS; longer pairs are dropped
    # upper bounds of max(src, tgt); max_len ends the last. A batch is drawn from one bucket (pipeline.dataset):
    # they bound its padding, and let build sort a corpus of any size one bucket at a time
    buckets: list[PositiveInt] = [8, 12, 16, 24, 32, 48, 64, 96]
    max_tokens: PositiveInt = 6000  # token budget of one batch: max length x sentences, padding included

    @model_validator(mode="after")
    def _sorted(self) -> Build:
        if self.buckets != sorted(set(self.buckets)):
            raise ValueError("buckets must be strictly increasing")
        return self


class RNNOptions(Section):
    cell: Literal["gru", "lstm"] = "gru"
    layers: PositiveInt = 1
    bidirectional: bool = True
    attention: Literal["none", "bahdanau", "luong_dot", "luong_general", "luong_concat"] = "bahdanau"
    input_feeding: bool = True  # luong_* only: feed the attentional state into the next step


class TransformerOptions(Section):
    heads: PositiveInt = 4
    ff_dim: PositiveInt = 1024
    enc_layers: PositiveInt = 3
    dec_layers: PositiveInt = 3
    positions: Literal["sinusoidal", "learned"] = "sinusoidal"
    norm: Literal["pre", "post"] = "pre"
    tie_embeddings: bool = False  # output layer = target embeddings (and = source ones with tokenize.joint)
    max_positions: PositiveInt = 512


class Model(Section):
    """Shared sizes, then one block per architecture; ``arch`` picks the block that is used.

    Both blocks stay in the file so that switching architecture is a one-key change (``dvc exp run
    -S model.arch=transformer``) and ``dvc params diff`` shows every setting of both.
    """

    arch: Literal["rnn", "transformer"] = "rnn"
    emb_dim: PositiveInt = 128  # = embed.dim with pretrained embeddings; = hidden for a transformer
    hidden: PositiveInt = 256  # RNN decoder state / annotation size (hidden/2 per encoder direction); d_model
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.1
    rnn: RNNOptions = RNNOptions()
    transformer: TransformerOptions = TransformerOptions()

    @model_validator(mode="after")
    def _shapes(self) -> Model:
        if self.arch == "transformer":
            if self.emb_dim != self.hidden:
                raise ValueError(f"a transformer needs emb_dim == hidden (got {self.emb_dim} and {self.hidden})")
            if self.hidden % self.transformer.heads:
                raise ValueError(f"hidden ({self.hidden}) must be divisible by transformer.heads "
                                 f"({self.transformer.heads})")
        elif self.rnn.bidirectional and self.hidden % 2:
            raise ValueError("hidden must be even for a bidirectional encoder")
        return self

    def fields(self, src_vocab: int, tgt_vocab: int, joint_vocab: bool) -> dict[str, Any]:
        """Keyword arguments of ``pipeline.models.build_model`` for the chosen architecture."""
        sizes = {"src_vocab": src_vocab, "tgt_vocab": tgt_vocab, "hidden": self.hidden, "dropout": self.dropout}
        if self.arch == "transformer":
            return {"arch": "transformer", **sizes, **self.transformer.model_dump(), "joint_vocab": joint_vocab}
        return {"arch": "rnn", **sizes, "emb_dim": self.emb_dim, **self.rnn.model_dump()}


class Train(Section):
    experiment: str = "nmt"
    embeddings: Literal["pretrained", "random"] = "pretrained"
    freeze_embeddings: bool = False
    epochs: PositiveInt = 6
    max_minutes: Annotated[float, Field(gt=0.0)] | None = None  # training time budget; stops after the step
    # a budget in optimiser steps: the same compute for every run of a comparison, however busy the machine
    max_steps: PositiveInt | None = None
    lr: Annotated[float, Field(gt=0.0)] = 2e-3
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    scheduler: Literal["constant", "noam", "cosine", "wsd"] = "constant"
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    decay_fraction: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2  # wsd: the last share of the run that decays
    label_smoothing: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    clip: Annotated[float, Field(gt=0.0)] = 1.0
    accumulate: PositiveInt = 1  # batches per optimiser step (x processes under torchrun)
    scheduled_sampling: Literal["none", "linear", "inverse_sigmoid"] = "none"
    teacher_forcing_min: Annotated[float, Field(ge=0.0, le=1.0)] = 0.75  # floor of the decayed ratio
    sampling_k: Annotated[float, Field(gt=1.0)] = 500.0  # inverse_sigmoid: k / (k + exp(step / k))
    early_stopping: Annotated[int, Field(ge=0)] = 0  # epochs without improvement before stopping; 0 = off
    early_stopping_metric: Literal["loss", "bleu"] = "loss"  # on the valid split
    checkpoint_every: PositiveInt = 200  # optimiser steps
    keep_checkpoints: PositiveInt = 2  # step checkpoints kept besides last.pt and best.pt
    average_last: Annotated[int, Field(ge=0)] = 0  # average the last N step checkpoints into the model; 0 = off
    seed: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"  # auto: pipeline.device.choose_amp
    compile: bool = False  # torch.compile the model
    # Transformer: keep each layer's input only, recompute the rest in backward: a layer's activations in memory
    # instead of every layer's, for about a third more time per step; the same result
    recompute_layers: bool = False
    threads: int = 0  # torch intra-op threads on CPU; 0 = all cores
    processes: PositiveInt = 1  # > 1: DDP, the train stage relaunches itself under torchrun
    nodes: PositiveInt = 1  # > 1: DDP over machines sharing the project folder, through a c10d rendezvous
    rendezvous: str | None = Field(default=None, pattern=r"^[\w.\-]+:\d+$")  # host:port every node joins

    @model_validator(mode="after")
    def _rendezvous(self) -> Train:
        if self.nodes > 1 and not self.rendezvous:
            raise ValueError(f"nodes is {self.nodes}: set rendezvous to the host:port every node can reach "
                             "(the c10d rendezvous, on one of the machines)")
        return self

    @model_validator(mode="after")
    def _averaging(self) -> Train:
        if self.average_last == 1 or self.average_last > self.keep_checkpoints:
            raise ValueError(f"average_last ({self.average_last}) must be 0 (off), or 2 to keep_checkpoints "
                             f"({self.keep_checkpoints}): only kept checkpoints can be averaged")
        return self


class Evaluate(Section):
    """Decoding (the same for evaluate, ``translate`` and the served model) and what evaluate reports."""

    beam_size: PositiveInt = DECODING.beam_size  # 1 = greedy
    length_penalty: Annotated[float, Field(ge=0.0)] = DECODING.length_penalty  # GNMT alpha
    max_len_a: Annotated[float, Field(gt=0.0)] = DECODING.max_len_a  # hypothesis length limit: a * source length + b
    max_len_b: PositiveInt = DECODING.max_len_b
    samples: Annotated[int, Field(ge=0)] = 50
    heatmaps: Annotated[int, Field(ge=0)] = 4  # attention heatmaps logged to MLflow


class Registry(Section):
    """The MLflow Model Registry: evaluate registers every model there; promotion moves ``@champion``."""

    model_name: str | None = None  # default nmt-<corpus>-<src>-<tgt>, e.g. nmt-multi30k-de-en
    criterion: Literal["auto", "bleu", "chrf"] = "auto"  # auto: chrF for Chinese/Japanese/Korean targets, else BLEU
    # a new version becomes @champion only if sacrebleu's paired bootstrap test puts it ahead with p below
    # this; null: any higher score wins
    significance: Annotated[float, Field(gt=0.0, lt=1.0)] | None = 0.05


class Backtranslate(Section):
    """Back-translation (Sennrich et al. 2016): a reverse-direction model (target -> source) translates the
    monolingual target-language text of ``data.monolingual``; the synthetic pairs join train as a source of
    their own (``backtranslated`` in metrics/clean.json), their source side optionally behind a tag (tagged
    back-translation, Caswell et al. 2019). Off by default: the stage then only writes a marker."""

    enabled: bool = False
    model: str | None = None  # the reverse model: a model file (from the project root) or models:/<name>@<alias>
    tag: str | None = Field(default="<bt>", pattern=r"^<[\w-]+>$")  # before each synthetic source; null: untagged
    weight: Annotated[float, Field(gt=0.0)] = 1.0  # as a train source's weight


STUDENT = {  # the default student: a Transformer with one decoder layer (the decoder dominates decoding time)
    "model": {"arch": "transformer", "emb_dim": 256, "hidden": 256, "dropout": 0.1,
              "transformer": {"heads": 4, "ff_dim": 1024, "enc_layers": 3, "dec_layers": 1}},
    "train": {"embeddings": "random"},
}


class Distill(Section):
    """Sequence-level knowledge distillation (Kim & Rush 2016), as mozilla/translations ships its models: the
    trained model (the teacher) translates the train split with the evaluate section's decoding; a smaller
    student is trained on those translations and evaluated like any model, on CTranslate2 when ``quantization``
    is set, and registered as ``<registry name>-student``. Off by default: the student stages then only write
    a marker, in well under a second (``pipeline/switch.py``)."""

    enabled: bool = False
    # more ensemble members beside models/model.pt: model files of the same two tokenizers, or step checkpoints
    # of this run (paths from the project root). DVC does not track them: the report records their sha256.
    ensemble: list[str] = []
    student: dict[str, dict[str, Any]] = STUDENT  # params sections (model, train, build) overlaid for the student
    quantization: Literal["int8", "int8_float32", "float32", "none"] = "int8"  # CTranslate2; none: PyTorch

    @model_validator(mode="after")
    def _student_sections(self) -> Distill:
        unknown = set(self.student) - {"model", "train", "build"}
        if unknown:
            raise ValueError(f"student may set the model, train and build sections, not {', '.join(sorted(unknown))}")
        return self


class Params(Section):
    data: Data = Data()
    clean: Clean = Clean()
    tokenize: Tokenize = Tokenize()
    embed: Embed = Embed()
    build: Build = Build()
    model: Model = Model()
    train: Train = Train()
    evaluate: Evaluate = Evaluate()
    registry: Registry = Registry()
    distill: Distill = Distill()
    backtranslate: Backtranslate = Backtranslate()

    @model_validator(mode="after")
    def _backtranslation_inputs(self) -> Params:
        if self.backtranslate.enabled and not (self.backtranslate.model and self.data.monolingual):
            raise ValueError("backtranslate.enabled: true needs backtranslate.model (a target-to-source model) and "
                             "data.monolingual (target-language text)")
        return self

    @model_validator(mode="after")
    def _embedding_sizes_agree(self) -> Params:
        if self.clean.korean_morphemes and self.data.src != "ko":
            raise ValueError("clean.korean_morphemes applies to a Korean source only (data.src: ko)")
        if self.train.recompute_layers and self.model.arch != "transformer":
            raise ValueError("train.recompute_layers applies to model.arch: transformer only; set it to false")
        if self.train.embeddings == "pretrained":
            if self.embed.method == "none":
                raise ValueError("train.embeddings is 'pretrained' but embed.method is 'none'")
            if (self.train.freeze_embeddings and self.model.arch == "transformer"
                    and self.model.transformer.tie_embeddings):
                # the output layer is the target embedding table: freezing one freezes the other
                raise ValueError("train.freeze_embeddings with model.transformer.tie_embeddings would freeze "
                                 "the output layer too; fine-tune the embeddings or untie them")
            if self.embed.dim != self.model.emb_dim:
                raise ValueError(f"model.emb_dim ({self.model.emb_dim}) must equal embed.dim "
                                 f"({self.embed.dim}) when train.embeddings is 'pretrained'")
        return self

    @model_validator(mode="after")
    def _valid_student(self) -> Params:
        if self.distill.student:  # the student's own params (they set no student of theirs)
            try:
                self.student()
            except ValidationError as exc:
                err = exc.errors()[0]
                key = ".".join(str(p) for p in err["loc"])
                raise ValueError(f"distill.student: the student is not valid: {key}: "
                                 f"{err['msg'].removeprefix('Value error, ')}") from None
        student_arch = self.distill.student.get("model", {}).get("arch", self.model.arch)
        if self.distill.enabled and self.distill.quantization != "none" and student_arch != "transformer":
            # said here, not after the student has trained: CTranslate2 converts Transformers only
            raise ValueError(f"distill.quantization: '{self.distill.quantization}' exports the student to "
                             f"CTranslate2, which takes a Transformer, and the student is an {student_arch}; "
                             "set distill.quantization: none or distill.student.model.arch: transformer")
        return self

    def student(self) -> Params:
        """The student's params (``--role student``): ``distill.student``'s sections over these."""
        params = merged(self.model_dump(), self.distill.student)
        params["distill"]["student"] = {}
        return Params.model_validate(params)


def _line_of(text: str, loc: tuple[Any, ...]) -> int | None:
    """1-based line of the YAML key at ``loc``, or of its closest existing parent."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in loc:
        if not isinstance(node, yaml.MappingNode):
            break
        for k, v in node.value:
            if k.value == str(key):
                line, node = k.start_mark.line + 1, v
                break
        else:
            break
    return line


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The field names of the section at ``loc`` (for "unknown key" messages)."""
    model: Any = Params
    for key in loc:
        field = model.model_fields.get(str(key)) if isinstance(model, type) else None
        annotation = getattr(field, "annotation", None)
        if annotation is None:
            return []
        # dict[..., Section] / Section | None: the section type
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return sorted(model.model_fields) if isinstance(model, type) else []


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate the params file; raise a one-line PipelineError naming file, line and key."""
    path = Path(path)
    if not path.exists():
        raise PipelineError(f"{path}: file not found; run from the project root, where params.yaml is")
    return parse_params(path.read_text(encoding="utf-8"), path)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int, first: int):
        super().__init__(f"duplicate key '{key}' (first on line {first}); keep one of them")
        self.line = line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys without a word; DVC's parser refuses them, so a params file
    with one would pass validation here and then fail inside ``dvc repro`` with a traceback."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in first:
                raise _DuplicateKey(key, key_node.start_mark.line + 1, first[key])
            first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def parse_params(text: str, path: Path) -> Params:
    """Validate params text; errors name ``path``, the line and the key."""
    try:
        raw = yaml.load(text, Loader=_UniqueKeyLoader)
    except _DuplicateKey as exc:
        raise PipelineError(f"{path}:{exc.line}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise PipelineError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if raw is None:  # DVC would fail on it later, inside a stage, with a traceback
        raise PipelineError(f"{path}: empty; it must hold the params sections (the project's own: git checkout "
                            f"{path.name})")
    if not isinstance(raw, dict):
        raise PipelineError(f"{path}: not a mapping of params sections (got {type(raw).__name__})")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if not loc and (named := re.match(r"([a-z_]+(?:\.[a-z_]+)+): (.*)", msg)):  # a check across sections
            loc, msg = tuple(named.group(1).split(".")), named.group(2)  # names the key it is about
        key = ".".join(str(p) for p in loc) or "(top level)"
        line = _line_of(text, loc)
        where = f"{path}:{line}" if line else str(path)
        if err["type"] == "extra_forbidden":
            known = _known_keys(loc[:-1])
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            msg = f"unknown key; did you mean '{close[0]}'?" if close else f"unknown key; valid: {', '.join(known)}"
        elif loc and not isinstance(err["input"], dict):
            msg += f" (got {err['input']!r})"
        raise PipelineError(f"{where}: {key}: {msg}") from None


ROLES = ("teacher", "student")


@dataclass(frozen=True)
class Paths:
    """Where each stage reads and writes; the same paths are spelled out in dvc.yaml.

    ``role``: the teacher is the project's model; the student (``distill``) has folders of its own for its
    corpus (the distilled one), dataset, model, checkpoints, metrics, reports and curves, and shares the rest:
    the tokenizers, the embeddings and the held-out splits as downloaded."""

    root: Path = Path(".")
    role: Literal["teacher", "student"] = "teacher"

    def _own(self, teacher: Path, student: Path) -> Path:
        return self.root / (student if self.role == "student" else teacher)

    @property
    def raw(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def clean(self) -> Path:
        """The corpus the stages after clean read: for the student, the distilled one (``distill``)."""
        return self._own(Path("data/clean"), Path("data/distilled"))

    @property
    def original(self) -> Path:
        """The held-out splits as downloaded, line for line: what evaluation translates and scores against."""
        return self.root / "data" / "clean" / "original"

    @property
    def sources(self) -> Path:
        """Every source of the run: provenance, licence, what cleaning kept; the test sets in order."""
        return self.root / "data" / "clean" / "sources.json"

    def test_set(self, name: str, lang: str) -> Path:
        """One test set as downloaded (``original/tests/<name>.<lang>``); the first is also ``original/test.*``."""
        return self.original / "tests" / f"{name}.{lang}"

    @property
    def backtranslated(self) -> Path:
        """The back-translated pairs, in ``data/raw``'s layout (``pipeline.raw``): one more train source."""
        return self.root / "data" / "backtranslated"

    @property
    def tokenizer(self) -> Path:
        return self.root / "data" / "tokenizer"

    @property
    def embeddings(self) -> Path:
        return self.root / "data" / "embeddings"

    @property
    def dataset(self) -> Path:
        return self._own(Path("data/dataset"), Path("data/student"))

    @property
    def model(self) -> Path:
        return self._own(Path("models"), Path("models/student"))

    @property
    def checkpoints(self) -> Path:
        return self._own(Path("checkpoints"), Path("checkpoints/student"))

    @property
    def metrics(self) -> Path:
        return self._own(Path("metrics"), Path("metrics/student"))

    @property
    def reports(self) -> Path:
        return self._own(Path("reports"), Path("reports/student"))

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log_file(self, stage: str, rank: int = 0) -> Path:
        """``logs/<stage>.log`` (the student's prefixed ``student_``); under DDP each other rank keeps its own."""
        label = stage if self.role == "teacher" else f"{self.role}_{stage}"
        return self.logs / (f"{label}.log" if rank == 0 else f"{label}.rank{rank}.log")

    @property
    def curves(self) -> Path:
        return self._own(Path("dvclive"), Path("dvclive/student"))

    @property
    def ct2(self) -> Path:
        """The CTranslate2 export of the student that evaluate scores and registers."""
        return self.model / "ct2"
