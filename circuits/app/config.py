"""What a run depends on: :class:`DiscoverConfig` nests one config per phase, and
:class:`EvaluateConfig` says how a saved circuit is evaluated again.

The attribution and evaluation phases take the library's own configs
(:class:`circuits.graph.build.BuildConfig`, :class:`circuits.evaluation.ablation.EvalConfig`); the
others are here. Every field names its command-line flag in its metadata (``flag``: a long option,
a positional name, or None for a field the command line does not set; ``help``, ``choices``,
``type``: an argparse type of :data:`circuits.app.commands.TYPES`; ``action``: ``"store_true"`` or
``"optional_bool"``; ``invert``: the flag means the field's negation; ``group``: a mutually
exclusive group; ``zero_is_none``: a flag value of 0 means None), and
:func:`circuits.app.commands.add_config_options` builds the options from it, so the default of each
setting is written once, here or in the library's config.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from circuits.app.loading import COMPOSITIONS, TOY
from circuits.errors import CircuitError, check_counts
from circuits.evaluation.ablation import EvalConfig
from circuits.graph.build import BuildConfig

MODEL_HELP = "'toy' (default), a saved toy-model folder, or a HuggingFace name"
DEVICE_HELP = "torch device; default CUDA when present, else CPU"
COMPOSITION_CHOICES = ("transcoders", "sae", "mixed")


@dataclass(frozen=True)
class DataConfig:
    """The task and its parts (:func:`circuits.data.splits.load_data`): ``n_attribution`` attribution
    examples (seed ``seed``), ``n_eval`` held-out ones (seed ``seed + 1``) and ``n_selection`` selection
    examples that choose the circuit's size (seed ``seed + 2``); ``schema``: a task file's schema CSV."""

    task: str = field(
        default="ioi",
        metadata={
            "flag": "task",
            "positional": True,
            "help": "built-in task name (see `circuits tasks list`) or JSONL task file",
        },
    )
    schema: str | None = field(default=None, metadata={"flag": "--schema", "help": "schema CSV of a JSONL task file"})
    n_attribution: int = field(
        default=128,
        metadata={
            "flag": "--examples",
            "type": "positive_int",
            "help": "attribution examples (default 128; see --edge-examples)",
        },
    )
    n_selection: int = field(default=128, metadata={"flag": None})
    n_eval: int = field(
        default=64,
        metadata={
            "flag": "--eval-examples",
            "type": "positive_int",
            "help": "held-out evaluation examples (default 64)",
        },
    )
    seed: int = field(
        default=0, metadata={"flag": "--seed", "type": "seed", "help": "attribution seed; evaluation uses seed + 1"}
    )

    def __post_init__(self) -> None:
        check_counts(
            {"--examples": self.n_attribution, "--eval-examples": self.n_eval, "n_selection": self.n_selection}
        )


@dataclass(frozen=True)
class ModelConfig:
    """The model and what replaces its sublayers.

    ``dictionaries``: a dictionary-set folder, ``"neurons"`` (the identity / MLP-neuron baseline),
    ``"release:NAME"`` (a SAELens release) or None (the model's shipped set; the toy model only).
    ``composition`` (:data:`circuits.app.loading.COMPOSITIONS`): ``"transcoders"`` (embed SAE and MLP
    transcoders; attention is not replaced, so its computation runs inside the edges, as in
    circuit-tracer), ``"sae"`` (embed, attn, mlp, resid: Sparse Feature Circuits' graph) or ``"mixed"``
    (embed, attn, transcoder, resid).
    """

    model: str = field(default=TOY, metadata={"flag": "--model", "help": MODEL_HELP})
    dictionaries: str | None = field(
        default=None,
        metadata={
            "flag": "--dictionaries",
            "help": "dictionary set: a folder, 'neurons', or release:NAME (default: the toy model's shipped set)",
        },
    )
    composition: str = field(
        default="transcoders",
        metadata={
            "flag": "--composition",
            "choices": COMPOSITION_CHOICES,
            "help": "transcoders on the MLPs with attention left in the edges (default, as circuit-tracer), SAEs on "
            "embed/attn/mlp/resid (Sparse Feature Circuits), or transcoders in place of the MLP SAEs",
        },
    )
    device: str | None = field(default=None, metadata={"flag": "--device", "help": DEVICE_HELP})

    def __post_init__(self) -> None:
        if self.composition not in COMPOSITIONS:
            raise CircuitError(f"unknown composition {self.composition!r}; expected one of {', '.join(COMPOSITIONS)}")


@dataclass(frozen=True)
class SelectionConfig:
    """How the circuit is chosen: the top ``n_nodes`` nodes by |effect|, or the nodes with |effect| >=
    ``node_threshold``, or (neither given) the smallest top-N whose faithfulness on the selection
    examples reaches ``faithfulness`` (with ``confidence``: its bootstrap lower bound at that
    confidence does)."""

    n_nodes: int | None = field(
        default=None,
        metadata={
            "flag": "--nodes",
            "type": "positive_int",
            "group": "size",
            "help": "circuit: the top N nodes by |effect|",
        },
    )
    node_threshold: float | None = field(
        default=None,
        metadata={
            "flag": "--node-threshold",
            "type": "non_negative_float",
            "group": "size",
            "help": "circuit: every node with |effect| >= T",
        },
    )
    faithfulness: float = field(
        default=0.9,
        metadata={
            "flag": "--faithfulness",
            "type": "fraction",
            "group": "size",
            "help": "circuit (default): the smallest top-N reaching this faithfulness on fresh selection examples "
            "(default 0.9)",
        },
    )
    confidence: float | None = field(
        default=0.9,
        metadata={
            "flag": "--confidence",
            "type": "confidence",
            "zero_is_none": True,
            "help": "with --faithfulness: the size must reach it at this one-sided bootstrap confidence (default "
            "0.9; 0 disables)",
        },
    )

    @property
    def by_faithfulness(self) -> bool:
        """Whether the size is chosen on the selection examples (neither a size nor a threshold given)."""
        return self.n_nodes is None and self.node_threshold is None

    def __post_init__(self) -> None:
        if self.n_nodes is not None and self.node_threshold is not None:
            raise CircuitError("choose the circuit by --nodes or by --node-threshold, not both")
        if self.n_nodes is not None and self.n_nodes < 1:
            raise CircuitError(f"--nodes must be at least 1, got {self.n_nodes}")
        if self.node_threshold is not None and not 0 <= self.node_threshold < float("inf"):
            raise CircuitError(f"--node-threshold must be a finite number >= 0, got {self.node_threshold}")
        if not 0 < self.faithfulness <= 1:
            raise CircuitError(f"the target faithfulness must be in (0, 1], got {self.faithfulness}")
        if self.confidence is not None and not 0 < self.confidence < 1:
            raise CircuitError(f"the confidence must be in (0, 1), got {self.confidence}")


@dataclass(frozen=True)
class CurveConfig:
    """The faithfulness curves: ``points`` of the node curve's log grid (the chosen size is added), the
    edge curve (``edge_curve``) on the first ``edge_examples`` held-out examples (None: all)."""

    points: int = field(
        default=8,
        metadata={
            "flag": "--curve-points",
            "type": "positive_int",
            "help": "points of the node curve's log grid (default 8; the chosen size is added)",
        },
    )
    edge_curve: bool = field(
        default=True,
        metadata={
            "flag": "--no-edge-curve",
            "action": "store_true",
            "invert": True,
            "help": "skip edge-level evaluation and the edge curve",
        },
    )
    edge_examples: int | None = field(default=16, metadata={"flag": None})

    def __post_init__(self) -> None:
        check_counts({"--curve-points": self.points}, {"edge_examples (CurveConfig)": self.edge_examples})


@dataclass(frozen=True)
class LabelConfig:
    """Feature labels (top-activating contexts, :func:`circuits.labels.label_circuit`) on the
    toy corpus or ``corpus`` (a text file, one text per line)."""

    enabled: bool = field(
        default=True,
        metadata={
            "flag": "--no-labels",
            "action": "store_true",
            "invert": True,
            "help": "skip feature labels (top-activating contexts) in the diagram and report",
        },
    )
    corpus: str | None = field(
        default=None,
        metadata={
            "flag": "--label-corpus",
            "help": "text file, one text per line, whose top-activating contexts label the features (default: the "
            "toy corpus)",
        },
    )

    def __post_init__(self) -> None:
        if not self.enabled and self.corpus is not None:
            raise CircuitError(f"--label-corpus {self.corpus} has no use with --no-labels: drop one of the two")
        if self.enabled and self.corpus is not None:
            from circuits.data.corpus import corpus_lines

            corpus_lines(self.corpus)  # a missing, non-UTF-8 or blank file fails now, not after the run


@dataclass(frozen=True)
class DiscoverConfig:
    """Everything a discovery run depends on, one config per phase (see :mod:`circuits.app.pipeline`).

    ``evaluation.ablate_embed`` False (the default, Sparse Feature Circuits' convention) keeps the
    embedding live in every evaluation, and the circuit is chosen among the other nodes
    (:func:`circuits.app.pipeline.circuit_candidates`).
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    attribution: BuildConfig = field(default_factory=BuildConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    curves: CurveConfig = field(default_factory=CurveConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)

    def __post_init__(self) -> None:
        edge_examples, n_attribution = self.attribution.edge_examples, self.data.n_attribution
        if edge_examples is not None and edge_examples > n_attribution:
            raise CircuitError(
                f"--edge-examples {edge_examples} is more than the {n_attribution} attribution examples "
                f"(--examples): give at most {n_attribution}, or leave it out to use them all"
            )


@dataclass(frozen=True)
class EvaluateConfig:
    """A saved circuit evaluated again (:func:`circuits.app.reevaluation.evaluate_saved`).

    The examples default to the held-out part circuit.json records; ``seed``, ``n_eval`` and ``rows``
    override it (:func:`circuits.data.splits.evaluation_split`). ``model``, ``dictionaries``,
    ``ablation``, ``ablate_errors`` and ``ablate_embed`` default (None) to those of the run that made it.
    """

    circuit: str = field(
        metadata={"flag": "circuit", "positional": True, "help": "circuit.json written by `circuits discover`"}
    )
    task: str = field(metadata={"flag": "task", "positional": True, "help": "built-in task name or JSONL task file"})
    schema: str | None = field(
        default=None,
        metadata={
            "flag": "--schema",
            "help": "schema CSV of a JSONL task file (default: the one the run used; refused for a built-in task)",
        },
    )
    model: str | None = field(
        default=None, metadata={"flag": "--model", "help": "default: the model recorded in the circuit"}
    )
    dictionaries: str | None = field(
        default=None, metadata={"flag": "--dictionaries", "help": "default: the dictionaries recorded in the circuit"}
    )
    ablation: str | None = field(
        default=None,
        metadata={
            "flag": "--ablation",
            "choices": ("mean", "patch", "zero"),
            "help": "what an ablated node takes: the counterfactual mean, each example's own counterfactual, or "
            "zero (default: as the run that made the circuit)",
        },
    )
    ablate_errors: bool | None = field(
        default=None,
        metadata={
            "flag": "--keep-errors",
            "action": "optional_bool",
            "invert": True,
            "help": "never ablate error nodes (default: as the run that made the circuit)",
        },
    )
    ablate_embed: bool | None = field(
        default=None,
        metadata={
            "flag": "--keep-embed",
            "action": "optional_bool",
            "invert": True,
            "help": "never ablate the embedding (default: as the run that made the circuit)",
        },
    )
    n_eval: int | None = field(
        default=None,
        metadata={
            "flag": "--eval-examples",
            "type": "positive_int",
            "help": "held-out examples evaluated on (default: as many as the run held out; for a task file, "
            "counted from the first held-out row)",
        },
    )
    seed: int | None = field(
        default=None,
        metadata={
            "flag": "--seed",
            "type": "seed",
            "help": "built-in task: evaluation seed (default: the run's held-out seed)",
        },
    )
    rows: tuple[int, int] | None = field(
        default=None,
        metadata={
            "flag": "--rows",
            "type": "rows",
            "metavar": "START:STOP",
            "help": "task file: evaluate its examples START to STOP-1 (0-based, in file order) instead of the "
            "recorded held-out rows; also evaluates a file changed since the run (with a warning)",
        },
    )
    allow_other_task: bool = field(
        default=False,
        metadata={
            "flag": "--allow-other-task",
            "action": "store_true",
            "help": "evaluate on a task other than the circuit's own (transfer), with a warning: a built-in task "
            "at its held-out seed, a task file from its first row, as many examples as the run held out",
        },
    )
    edges: bool = field(
        default=True,
        metadata={"flag": "--no-edges", "action": "store_true", "invert": True, "help": "skip edge-level evaluation"},
    )
    device: str | None = field(default=None, metadata={"flag": "--device", "help": DEVICE_HELP})
