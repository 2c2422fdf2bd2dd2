"""``circuits dictionaries train|report``: train a model's dictionary set and measure its quality.

Both commands read the toy language (``circuits.toy.language.generate_corpus``), tokenized by the
model's tokenizer; sentences are grouped by token length so that no batch needs padding.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

from circuits.app.commands import (
    add_model_options,
    add_output_options,
    non_negative_float,
    positive_float,
    positive_int,
    seed,
)

ALL_KINDS = ("embed", "attn", "mlp", "transcoder", "resid")
REPORT_SEED_OFFSET = 1_000_003  # the report's sentences are drawn apart from the training ones


def register(sub) -> None:
    dicts = sub.add_parser("dictionaries", help="train a dictionary set (SAEs and transcoders) or report its quality")
    dsub = dicts.add_subparsers(dest="dictionaries_command", metavar="ACTION", required=True)

    train = dsub.add_parser("train", help="train SAEs and transcoders on every site of a model (seeded)")
    add_model_options(train)
    where = train.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="folder to write the set into")
    where.add_argument(
        "--replace-shipped", action="store_true", help="rewrite the package's shipped toy set (for maintainers)"
    )
    train.add_argument(
        "--architecture",
        choices=("topk", "relu"),
        default="topk",
        help="TopK (default) or ReLU trained with an L1 penalty",
    )
    train.add_argument("--expansion", type=positive_int, default=8, help="features per input dimension (default 8)")
    train.add_argument("--d-sae", type=positive_int, default=None, help="number of features (overrides --expansion)")
    train.add_argument(
        "-k", "--k", type=positive_int, default=16, help="active features per token for TopK (default 16)"
    )
    train.add_argument(
        "--l1", type=non_negative_float, default=None, help="L1 coefficient for ReLU dictionaries (larger is sparser)"
    )
    train.add_argument(
        "--kinds", nargs="+", choices=ALL_KINDS, default=list(ALL_KINDS), help="site kinds to train (default all)"
    )
    train.add_argument(
        "--sentences", type=positive_int, default=12000, help="toy-language sentences whose activations are trained on"
    )
    train.add_argument("--steps", type=positive_int, default=None, help="optimizer steps per dictionary")
    train.add_argument("--batch-size", type=positive_int, default=None, help="activations per step")
    train.add_argument("--lr", type=positive_float, default=None, help="Adam learning rate (default 5e-3)")
    train.add_argument(
        "--seed", type=seed, default=0, help="seed of the initialisation and of the training sentences (default 0)"
    )
    train.add_argument(
        "--half", action="store_true", help="store weights at float16 (the shipped toy set does; halves the size)"
    )
    train.add_argument("--quiet", action="store_true", help="no progress bars")
    train.set_defaults(func=_train)

    report = dsub.add_parser("report", help="L0, variance explained, dead features and CE loss recovered per site")
    add_model_options(report)
    add_output_options(report)
    report.add_argument(
        "--dictionaries",
        default=None,
        help="a dictionary-set folder, 'neurons' (the identity baseline) or 'release:NAME' (a SAELens pretrained "
        "release, needs the hub); default for the toy model: the shipped set",
    )
    report.add_argument(
        "--sentences", type=positive_int, default=2000, help="held-out toy-language sentences to measure on"
    )
    report.add_argument(
        "--seed", type=seed, default=0, help="seed of the held-out sentences (drawn apart from training's)"
    )
    report.set_defaults(func=_report)


def corpus_batches(tokenizer, n_sentences: int, seed: int, n_ctx: int, batch_size: int = 128) -> list:
    """Token batches of ``n_sentences`` toy-language sentences, each batch of one length (no padding), shuffled."""
    from circuits.data.corpus import toy_corpus

    corpus = toy_corpus(tokenizer, n_sentences, seed, max_len=n_ctx)
    batches = [batch.tokens for batch in corpus.batches(batch_size)]
    random.Random(seed).shuffle(batches)
    return batches


def _n_ctx(model) -> int:
    return int(getattr(model.cfg, "n_ctx", 1024) or 1024)


def _train(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from circuits.app.loading import TOY, load_model
    from circuits.toy.model import shipped_dictionary_set
    from replacement.dictionaries import DictionaryConfig
    from replacement.errors import DictionaryError
    from replacement.sites import model_sites
    from replacement.train import SetTrainConfig, TrainConfig, train_set

    if args.l1 is not None and args.architecture != "relu":
        raise DictionaryError(
            f"--l1 is the L1 penalty of ReLU dictionaries; with --architecture {args.architecture} it has no "
            "effect: add --architecture relu or drop --l1"
        )
    if args.replace_shipped and args.model != TOY:
        raise DictionaryError(
            f"--replace-shipped: only the toy model has a shipped dictionary set, not {args.model!r}; give --out"
        )
    from circuits.files import check_output_dir
    from replacement.dictionaries import INDEX_FILE

    # the set replaces the folder as a whole, so it must be new, empty or an earlier dictionary set
    if args.replace_shipped:
        check_output_dir(shipped_dictionary_set(), "the shipped dictionary folder", replaces=INDEX_FILE)
    else:
        check_output_dir(args.out, "--out", replaces=INDEX_FILE)
    out = shipped_dictionary_set() if args.replace_shipped else Path(args.out)
    started = time.perf_counter()
    loaded = load_model(args.model, device=args.device)
    model = loaded.model
    tcfg = TrainConfig(seed=args.seed)
    overrides = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "l1_coefficient": args.l1}
    tcfg = replace(tcfg, **{k: v for k, v in overrides.items() if v is not None})
    dcfg = DictionaryConfig(architecture=args.architecture, expansion=args.expansion, d_sae=args.d_sae, k=args.k)
    sites = model_sites(int(model.cfg.n_layers), tuple(args.kinds))
    batches = corpus_batches(loaded.tokenizer, args.sentences, args.seed, _n_ctx(model))
    name = f"{loaded.name}-{args.architecture}-{dcfg.width(int(model.cfg.d_model))}"
    dset, results = train_set(
        model,
        batches,
        sites,
        SetTrainConfig(dcfg, tcfg),
        name=name,
        model_name=loaded.name,
        progress=not args.quiet,
        n_batches=len(batches),
    )
    dset.info["corpus"] = {
        "source": "circuits.toy.language.generate_corpus",
        "sentences": args.sentences,
        "seed": args.seed,
    }
    dset.save(out, weights_dtype="float16" if args.half else None)
    seconds = time.perf_counter() - started
    print(f"{'site':<15} {'kind':<11} {'train fvu':>9} {'l0':>6} {'dead':>6}")
    for site in dset.sites:
        r = results[site.name]
        print(f"{site.name:<15} {site.kind:<11} {r.fvu:>9.4f} {r.l0:>6.1f} {r.dead_fraction:>6.3f}")
    print(f"trained {len(dset)} dictionaries in {seconds:.0f} s; saved to {out}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from circuits.app.loading import check_dictionaries, load_dictionaries, load_model
    from replacement.report import quality_report

    check_dictionaries(args.dictionaries)
    loaded = load_model(args.model, device=args.device)
    dset = load_dictionaries(loaded, args.dictionaries)
    batches = corpus_batches(loaded.tokenizer, args.sentences, args.seed + REPORT_SEED_OFFSET, _n_ctx(loaded.model))
    report = quality_report(loaded.model, dset, batches, progress=not args.quiet)
    if args.json:
        print(json.dumps(report.as_dict()))
        return 0
    print(f"dictionary set {dset.name!r} on {report.n_tokens} held-out tokens; clean CE {report.ce_clean:.4f}")
    print(
        f"{'site':<15} {'kind':<11} {'L0':>6} {'var.expl':>9} {'dead':>6} {'CE rec.':>8} {'CE spliced':>11} {'CE zero':>8}"
    )
    for name, q in report.sites.items():
        print(
            f"{name:<15} {q.kind:<11} {q.l0:>6.1f} {q.variance_explained:>9.4f} {q.dead_fraction:>6.3f} "
            f"{q.ce_recovered:>8.4f} {q.ce_spliced:>11.4f} {q.ce_zero_ablated:>8.4f}"
        )
    print(
        f"all SAE sites spliced at once: CE {report.ce_all_spliced:.4f} (all zeroed {report.ce_all_zero_ablated:.4f}), "
        f"recovered {report.all_spliced_ce_recovered:.4f}"
    )
    return 0
