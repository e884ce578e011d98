"""``DistillationMixin``: farm-haystack 1.26.4's distillation methods, reimplemented and fixed.

Three ways to use it, none of which patches Haystack behind your back:

1. The ready class: ``DistillableFARMReader(model_name_or_path=...)`` (a ``FARMReader`` subclass).
2. Your own subclass: ``class MyReader(DistillationMixin, MyFARMReaderSubclass): ...``.
3. An existing instance: ``reader = make_distillable(reader)`` switches that one object to a subclass with the
   mixin (its weights and settings are untouched; other ``FARMReader`` objects are not affected).

Example (tiny models; see the tutorials for real ones):
    >>> from haystack_distill.reader import DistillableFARMReader              # doctest: +SKIP
    >>> teacher = DistillableFARMReader("models/teacher-reader", use_gpu=False)  # doctest: +SKIP
    >>> student = DistillableFARMReader("models/student-reader", use_gpu=False)  # doctest: +SKIP
    >>> metrics = student.distil_prediction_layer_from(teacher, data_dir="data", train_filename="train.json",
    ...     dev_filename="dev.json", distillation_loss="kl_div", temperature=2.0,
    ...     distillation_loss_weight=0.75, save_dir="models/student-distilled")   # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from ..defaults import ATTENTION_WEIGHT
from .config import IntermediateLayerConfig, PredictionLayerConfig, UnlabeledFiles
from .data import unlabeled_names
from .intermediate import distil_intermediate_layers
from .prediction import distil_prediction_layer
from .presets import TINYBERT_INTERMEDIATE, TINYBERT_PREDICTION

LossArg = Union[str, Callable[..., Any]]


class DistillationMixin:
    """Adds ``distil_prediction_layer_from`` (and later stages) to a ``FARMReader`` (sub)class.

    Positional parameters keep farm-haystack 1.26.4's names, order and defaults; new options are keyword-only.
    """

    def distil_prediction_layer_from(
        self,
        teacher_model: Any,
        data_dir: str,
        train_filename: str,
        dev_filename: Optional[str] = None,
        test_filename: Optional[str] = None,
        use_gpu: Optional[bool] = None,
        devices: Optional[List[Any]] = None,
        batch_size: int = 10,
        teacher_batch_size: Optional[int] = None,
        n_epochs: int = 2,
        learning_rate: float = 3e-5,
        max_seq_len: Optional[int] = None,
        warmup_proportion: float = 0.2,
        dev_split: float = 0,
        evaluate_every: int = 300,
        save_dir: Optional[str] = None,
        num_processes: Optional[int] = None,
        use_amp: bool = False,
        checkpoint_root_dir: Path = Path("model_checkpoints"),
        checkpoint_every: Optional[int] = None,
        checkpoints_to_keep: int = 3,
        caching: bool = False,
        cache_path: Path = Path("cache/data_silo"),
        distillation_loss_weight: float = 0.5,
        distillation_loss: LossArg = "kl_div",
        temperature: float = 1.0,
        processor: Optional[Any] = None,
        grad_acc_steps: int = 1,
        early_stopping: Optional[Any] = None,
        *,
        seed: int = 42,
        kd_mask: str = "span",
        resume: Union[bool, str] = False,
        doc_stride: Optional[int] = None,
        max_query_length: Optional[int] = None,
        show_progress: bool = True,
        tokenizer_alignment: Optional[str] = None,
        teacher_top_k: Optional[int] = None,
        group_by_length: bool = False,
        hard_loss_padding: str = "padded",
        unlabeled_filename: UnlabeledFiles = None,
        pseudo_labels: bool = False,
        pseudo_label_threshold: float = 0.5,
    ) -> Dict[str, Any]:
        """Train this reader (the student) to match ``teacher_model``'s start/end distributions and the labels.

        Loss per batch: ``w * KD + (1 - w) * hard``, with ``w = distillation_loss_weight``; ``KD`` is
        ``(KD(start) + KD(end)) / 2`` at ``temperature`` (times ``T**2`` for ``"kl_div"``), and ``hard`` is
        Haystack's QA cross-entropy, also averaged over start and end. farm-haystack 1.26.4 sums the start and
        end KD instead, so its weight ``w`` gives KD twice the share ours does; to keep the balance of a Haystack
        setting pass ``haystack_distill.losses.haystack_equivalent_weight(w)`` (0.75 -> 6/7).

        Args (as in farm-haystack 1.26.4, with these fixes):
            teacher_model: a fine-tuned ``FARMReader``; its tokenizer must equal this reader's
                (else ``TokenizerMismatchError``, raised before any teacher work).
            data_dir, train_filename, dev_filename, test_filename: SQuAD files, validated up front. With a
                dev file (or ``dev_split``), EM/F1 are computed every ``evaluate_every`` steps and at the end.
            distillation_loss: ``"kl_div"``, ``"mse"``, ``"soft_ce"`` or a callable
                ``(student_logits, teacher_logits) -> scalar`` (called with those keywords if it declares
                them); all work, unlike 1.26.4 where only the two strings did.
            caching: keep the fp16 teacher logits under ``cache_path/teacher_outputs`` for later runs (keyed by
                teacher weights, tokenizers, max_seq_len, doc_stride, max_query_length and the train file).
                Without it they live in a temporary folder for this run. The teacher never runs on dev/test.
            checkpoint_root_dir, checkpoint_every: checkpoints go to ``checkpoint_root_dir/prediction_layer``.
            num_processes: accepted for compatibility; preprocessing uses the fast tokenizer in-process.
            save_dir: default ``./saved_models/<model name>`` as in Haystack; an existing folder that is not a
                previous output is refused.

        Keyword-only extras:
            seed: training seed (farm-haystack 1.26.4 always used 42).
            kd_mask: ``"span"`` (context tokens + no-answer, default), ``"padding"`` (all real tokens) or
                ``"none"`` (close to 1.26.4: every position up to the batch's longest feature, question and
                special tokens included; padding past it is left out).
            resume: ``True`` to continue from the newest checkpoint, or a checkpoint path; refuses a checkpoint of
                a different run.
            doc_stride, max_query_length: default to the reader's own values.
            tokenizer_alignment: ``"offsets"`` lets teacher and student use different tokenizers: the teacher reads
                its own tokenization of each student window and its start/end distributions are moved onto the
                student's tokens through character offsets (see :mod:`haystack_distill.reader.alignment`).
            teacher_top_k: keep only the ``k`` most likely start and end positions per feature (plus one value that
                gives the rest their exact total probability at ``temperature``) instead of all ``max_seq_len``:
                the cache shrinks from ``8 * max_seq_len`` to ``4 * (2k + 1)`` bytes per feature. For
                ``"kl_div"``/``"soft_ce"``; see :mod:`haystack_distill.reader.sparse_logits`.
            group_by_length: draw each batch from one 32-token length bucket (a little faster); needs
                ``hard_loss_padding`` ``"slices"`` or ``"batch"``. Off by default: batches stay random.
            hard_loss_padding: Haystack's hard QA loss takes its softmax over padding positions too, and Haystack
                pads every batch to ``max_seq_len``. ``"padded"`` (default) computes batches that way, so the loss
                is exactly Haystack's; it trains the best students (see BENCHMARKS.md). The faster options
                compute each random batch in 4 length-sorted slices cut to their longest feature (faster steps:
                most padding is skipped): ``"slices"`` estimates the padding's share of the loss from the padding
                a slice holds (:func:`haystack_distill.losses.span_cross_entropy`), ``"batch"`` uses the positions
                each slice happens to hold. KD and all other terms are unchanged by slicing. ``"max_seq_len"``,
                the old name of ``"slices"``, still works (with a FutureWarning).
            unlabeled_filename: a SQuAD file in ``data_dir`` of questions nobody labelled (a query log, augmented
                copies, :func:`haystack_distill.reader.transfer.make_transfer`'s output), or a list of such files.
                Their answers, if any, are ignored (a warning counts them). Their rows learn only from the teacher:
                KD at weight ``w``, no hard loss. They are mixed into the same batches, and the teacher pass covers
                them through the same cache (its key includes these files).
            pseudo_labels, pseudo_label_threshold: also train unlabelled rows on the teacher's best span (hard
                loss, as for a label) where the teacher gives it at least this probability (start times end, at
                temperature 1); other unlabelled rows keep KD alone.

        Returns:
            dict with ``loss``, ``global_step``, ``teacher_seconds``, ``teacher_rows`` (features whose teacher
            targets this process computed: 0 when cached, its share under torchrun), ``train_seconds``,
            ``save_dir``, ``labeled_features``/``unlabeled_features`` and, given dev/test data, ``em``/``f1`` and
            ``test_em``/``test_f1`` (percent).
        """
        if teacher_model is None:
            raise ValueError("teacher_model is None: pass the fine-tuned teacher FARMReader. To fine-tune on the "
                             "labels alone, call train_reader(...) instead.")
        return distil_prediction_layer(self, teacher_model, PredictionLayerConfig.from_arguments(locals()))

    def distil_intermediate_layers_from(
        self,
        teacher_model: Any,
        data_dir: str,
        train_filename: str,
        dev_filename: Optional[str] = None,
        test_filename: Optional[str] = None,
        use_gpu: Optional[bool] = None,
        devices: Optional[List[Any]] = None,
        batch_size: int = 10,
        teacher_batch_size: Optional[int] = None,
        n_epochs: int = 5,
        learning_rate: float = 5e-5,
        max_seq_len: Optional[int] = None,
        warmup_proportion: float = 0.2,
        dev_split: float = 0,
        evaluate_every: int = 300,
        save_dir: Optional[str] = None,
        num_processes: Optional[int] = None,
        use_amp: bool = False,
        checkpoint_root_dir: Path = Path("model_checkpoints"),
        checkpoint_every: Optional[int] = None,
        checkpoints_to_keep: int = 3,
        caching: bool = False,
        cache_path: Path = Path("cache/data_silo"),
        distillation_loss: LossArg = "mse",
        distillation_loss_weight: float = 0.5,
        temperature: float = 1.0,
        processor: Optional[Any] = None,
        grad_acc_steps: int = 1,
        early_stopping: Optional[Any] = None,
        *,
        seed: int = 42,
        layer_mapping: Union[str, Dict[int, int]] = "uniform",
        embedding_weight: float = 1.0,
        hidden_weight: float = 1.0,
        attention_weight: float = ATTENTION_WEIGHT,
        attention_loss: str = "scores",
        kd_mask: str = "span",
        resume: Union[bool, str] = False,
        doc_stride: Optional[int] = None,
        max_query_length: Optional[int] = None,
        show_progress: bool = True,
        group_by_length: bool = False,
        unlabeled_filename: UnlabeledFiles = None,
    ) -> Dict[str, Any]:
        """TinyBERT stage 1: match the teacher's embeddings, hidden states and attention, layer by layer.

        Works for any student shape: fewer layers (``layer_mapping``), a smaller width (trained projections, saved
        as ``projections.safetensors``) and fewer heads (head-averaged attention). The loss is
        ``(1 - w) * intermediate + w * span_KD`` with ``w = distillation_loss_weight`` and the span KD using
        ``distillation_loss`` at ``temperature`` (pass ``distillation_loss_weight=0`` for pure stage 1).
        The teacher runs online in chunks of ``teacher_batch_size``. farm-haystack 1.26.4 accepted and ignored
        these four arguments, never trained its projections and compared post-softmax attention unmasked.

        Keyword-only extras:
            layer_mapping: ``"uniform"`` (TinyBERT: student layer i <- last teacher layer of block i),
                ``"last"`` (the top teacher layers) or an explicit ``{student_layer: teacher_layer}`` dict (0-based).
            embedding_weight, hidden_weight, attention_weight: weights of the three intermediate terms (attention:
                the default attention weight, :data:`~haystack_distill.defaults.ATTENTION_WEIGHT`; its pre-softmax
                score MSE is far larger than the hidden-state MSE, so TinyBERT's equal weights let it drown the
                hidden states; see BENCHMARKS.md, "Student quality").
            attention_loss: ``"scores"`` (MSE of masked pre-softmax scores), ``"kl"`` (KL of attention
                distributions; needs eager attention) or ``"none"``.
            seed, kd_mask, resume, doc_stride, max_query_length: as in :meth:`distil_prediction_layer_from`
                (checkpoints go to ``checkpoint_root_dir/intermediate_layers``).
            group_by_length: draw each batch from one 32-token length bucket. Either way batches are computed
                in 4 length-sorted slices cut to their longest feature: no term of this stage counts padding.
            unlabeled_filename: more questions (a SQuAD file in ``data_dir`` or a list of them, answers ignored)
                to match the teacher on; this stage uses no labels, so they train exactly like the labelled ones.

        Returns the same metrics dict as :meth:`distil_prediction_layer_from`, plus the last value of each term.
        """
        return distil_intermediate_layers(self, teacher_model, IntermediateLayerConfig.from_arguments(locals()))

    def distil_tinybert_from(self, teacher_model: Any, data_dir: str, train_filename: str, save_dir: str, *,
                             augmented_train_filename: Optional[str] = None, dev_filename: Optional[str] = None,
                             intermediate: Union[Dict[str, Any], bool, None] = None,
                             prediction: Optional[Dict[str, Any]] = None,
                             prediction_on_augmented: bool = True,
                             unlabeled_filename: UnlabeledFiles = None,
                             augmented_as: str = "labeled") -> Dict[str, Dict[str, Any]]:
        """TinyBERT's task distillation in one call: the intermediate layers, then prediction-layer KD, with
        the settings that train the best students (see BENCHMARKS.md, "Student quality").

        1. Intermediate layers (stage 1, on the augmented file when given), saved to
           ``save_dir/stage1_intermediate``; ``intermediate=False`` skips it. Defaults here
           (:data:`~haystack_distill.reader.presets.TINYBERT_INTERMEDIATE`): one epoch at lr 1e-4, batch 16, the
           hidden states and embeddings only (the default attention weight, no span KD).
        2. Prediction layer, saved to ``save_dir/stage2_prediction``: on the augmented file too when given and
           ``prediction_on_augmented`` (the teacher labels every augmented copy), else on the original file.
           Defaults here (:data:`~haystack_distill.reader.presets.TINYBERT_PREDICTION`): lr 2e-4, batch 16, T=2,
           KD weight 6/7.

        Unlabelled questions (``unlabeled_filename``, a SQuAD file in ``data_dir``, answers ignored) join both
        stages: they learn only from the teacher (:meth:`distil_prediction_layer_from`). With
        ``augmented_as="unlabeled"`` the augmented file goes the same way, in both stages, beside the original
        labelled file and any ``unlabeled_filename``, so no augmented copy trains on an answer span that its word
        swaps may have broken. ``"labeled"`` (default) keeps the behaviour above.

        ``intermediate``/``prediction`` hold keyword arguments per stage; they override those defaults. Start from
        a student cut from the base (not fine-tuned) encoder with :func:`~haystack_distill.reader.student_from_teacher`;
        a general-distillation student (:func:`haystack_distill.general.distil_general`) helps only when its GD
        teacher's last layers carry token-level information (GD toward a sentence-embedding model made readers worse).

        Example:
            >>> student = DistillableFARMReader("models/minilm-3l")  # doctest: +SKIP
            >>> student.distil_tinybert_from(teacher, "data", "train.json", "models/tiny",
            ...     dev_filename="dev.json")  # doctest: +SKIP
        """
        if augmented_as not in ("labeled", "unlabeled"):
            raise ValueError(f"augmented_as={augmented_as!r}: use 'labeled' (augmented copies keep their answers) "
                             "or 'unlabeled' (they learn only from the teacher).")
        if augmented_as == "unlabeled" and augmented_train_filename is None:
            raise ValueError("augmented_as='unlabeled' needs augmented_train_filename.")
        as_unlabeled = augmented_as == "unlabeled"
        labeled_file = train_filename if as_unlabeled else augmented_train_filename or train_filename
        copies = [augmented_train_filename] if as_unlabeled and augmented_train_filename else []
        unlabeled = [*unlabeled_names(unlabeled_filename), *copies]
        stage1: Dict[str, Any] = {}
        if intermediate is not False:
            stage1 = self.distil_intermediate_layers_from(
                teacher_model, data_dir=data_dir, train_filename=labeled_file, unlabeled_filename=unlabeled,
                save_dir=str(Path(save_dir) / "stage1_intermediate"),
                **{**TINYBERT_INTERMEDIATE, **(intermediate if isinstance(intermediate, dict) else {})})
        on_augmented = augmented_train_filename is not None and prediction_on_augmented
        stage2 = self.distil_prediction_layer_from(
            teacher_model, data_dir=data_dir, train_filename=labeled_file if on_augmented else train_filename,
            unlabeled_filename=unlabeled if on_augmented else unlabeled_names(unlabeled_filename),
            dev_filename=dev_filename,
            save_dir=str(Path(save_dir) / "stage2_prediction"), **{**TINYBERT_PREDICTION, **(prediction or {})})
        return {"intermediate": stage1, "prediction": stage2}

    def train_reader(self, data_dir: str, train_filename: str, dev_filename: Optional[str] = None, *,
                     batch_size: int = 10, n_epochs: int = 2, learning_rate: float = 1e-5,
                     save_dir: Optional[str] = None, seed: int = 42, **kwargs: Any) -> Dict[str, Any]:
        """Plain fine-tuning (no teacher) through the same loop, e.g. to build a teacher or a no-KD baseline."""
        config = PredictionLayerConfig(**{"distillation_loss_weight": 0.0, **kwargs}, data_dir=data_dir,
                                       train_filename=train_filename, dev_filename=dev_filename,
                                       batch_size=batch_size, n_epochs=n_epochs, learning_rate=learning_rate,
                                       save_dir=save_dir, seed=seed)
        return distil_prediction_layer(self, None, config)


def _farm_reader_class() -> type:
    from haystack.nodes import FARMReader

    return FARMReader


def make_distillable(reader: Any) -> Any:
    """Give an existing ``FARMReader`` (or subclass) instance the mixin's methods; returns the same object.

    The object's class becomes ``Distillable<Class>``, a subclass of its class and :class:`DistillationMixin`;
    nothing else changes, and no other reader or Haystack class is touched.
    """
    if isinstance(reader, DistillationMixin):
        return reader
    if not isinstance(reader, _farm_reader_class()):
        raise TypeError(f"make_distillable expects a FARMReader, got {type(reader).__name__}.")
    cls = type(reader)
    # (cls, mixin) keeps CPython's instance layout compatible; the mixin's methods are copied into the new class
    # so they take precedence over FARMReader's own distillation methods.
    methods = {name: value for name, value in vars(DistillationMixin).items() if callable(value)}
    reader.__class__ = type(f"Distillable{cls.__name__}", (cls, DistillationMixin), {"__module__": __name__, **methods})
    return reader
