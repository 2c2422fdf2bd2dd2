"""The replacement model against the original model: exactness, edits, gradients, freezing."""

from __future__ import annotations

import pytest
import torch

from replacement.dictionaries import DictionaryConfig, create_dictionary
from replacement.errors import DictionaryError, SiteError
from replacement.model import NodeEdit, ReplacementModel
from replacement.sites import MIXED_KINDS, SAE_KINDS, Site, model_sites

TOL = 1e-4  # fp32 rounding of decode(f) + (x - decode(f)) through 3 layers


def fresh_dictionaries(model, kinds, architecture="relu", seed=0):
    """Randomly initialised dictionaries (scaled so that many features fire)."""
    d = model.cfg.d_model
    out = {}
    for i, site in enumerate(model_sites(model.cfg.n_layers, kinds)):
        sae = create_dictionary(site, d, DictionaryConfig(architecture=architecture, expansion=2, k=8), seed=seed + i)
        out[site.name] = sae
    return out


@pytest.fixture(scope="module")
def tokens(toy):
    from circuits.data.tasks import make_task

    task = make_task("ioi", toy.tokenizer, n=6)
    return task.batch(toy.tokenizer.pad_id)


@pytest.mark.parametrize("kinds", [SAE_KINDS, ("transcoder",), MIXED_KINDS], ids=["saes", "transcoders", "mixed"])
@pytest.mark.parametrize("architecture", ["relu", "topk"])
def test_replaced_toy_model_is_exact(toy, tokens, kinds, architecture):
    rm = ReplacementModel(toy.model, fresh_dictionaries(toy.model, kinds, architecture))
    with torch.no_grad():
        ref = toy.model(tokens.clean)
        run = rm.run(tokens.clean)
    assert (run.logits - ref).abs().max().item() <= TOL
    # the dictionaries really are imperfect: the error terms carry something
    assert max(r.error.abs().max().item() for r in run.records.values()) > 1e-2
    for site in rm.sites:
        rec = run.records[site.name]
        recon = rm.dictionaries[site.name].decode(rec.features) + rec.error
        assert torch.allclose(recon, rec.output, atol=1e-5)


def test_splicing_without_errors_changes_the_output(toy, tokens):
    rm = ReplacementModel(toy.model, fresh_dictionaries(toy.model, SAE_KINDS))
    zero_errors = {s: NodeEdit(error=torch.zeros(1, 1, toy.model.cfg.d_model)) for s in rm.site_names}
    with torch.no_grad():
        ref = toy.model(tokens.clean)
        spliced = rm.run(tokens.clean, zero_errors).logits
    assert (spliced - ref).abs().max().item() > 1e-2


def test_zero_ablating_a_feature_matches_a_hand_made_hook(toy, tokens):
    rm = ReplacementModel(toy.model, fresh_dictionaries(toy.model, SAE_KINDS))
    site = rm.site("L1.mlp")
    sae = rm.dictionaries[site.name]
    with torch.no_grad():
        f = rm.run(tokens.clean).records[site.name].features
    # the most active feature at position 3
    feat = int(f[:, 3].sum(0).argmax())
    assert f[:, 3, feat].abs().max() > 0
    mask = torch.zeros_like(f, dtype=torch.bool)
    mask[:, 3, feat] = True
    with torch.no_grad():
        edited = rm.run(tokens.clean, {site.name: NodeEdit(torch.zeros(1), mask)}).logits

        def by_hand(x, hook):
            acts = sae.encode(x)
            x = x.clone()
            x[:, 3] -= acts[:, 3, feat, None] * sae.W_dec[feat]
            return x

        with toy.model.hooks(fwd_hooks=[(site.hook_out, by_hand)]):
            hand = toy.model(tokens.clean)
    assert (edited - hand).abs().max().item() <= TOL
    assert (edited - toy.model(tokens.clean)).abs().max().item() > 1e-3


def test_patching_every_embedding_node_reproduces_the_counterfactual_run(toy, tokens):
    rm = ReplacementModel(toy.model, fresh_dictionaries(toy.model, SAE_KINDS))
    assert tokens.clean.shape == tokens.corrupted.shape
    with torch.no_grad():
        corr = rm.run(tokens.corrupted).records["embed"]
        edit = NodeEdit(corr.features, None, corr.error, None)
        patched = rm.run(tokens.clean, {"embed": edit}).logits
        ref = toy.model(tokens.corrupted)
    assert (patched - ref).abs().max().item() <= TOL


def test_downstream_dictionaries_re_encode_the_changed_stream(toy, tokens):
    rm = ReplacementModel(toy.model, fresh_dictionaries(toy.model, SAE_KINDS))
    with torch.no_grad():
        clean = rm.run(tokens.clean).records
        f = clean["L0.attn"].features
        edited = rm.run(
            tokens.clean, {"L0.attn": NodeEdit(torch.zeros(1), torch.ones_like(f, dtype=torch.bool))}
        ).records
    assert torch.equal(edited["embed"].features, clean["embed"].features)  # upstream untouched
    assert not torch.allclose(edited["L0.resid"].features, clean["L0.resid"].features)  # re-encoded


def test_mean_ablation_uses_reference_means(toy, tokens):
    rm = ReplacementModel(toy.model, fresh_dictionaries(toy.model, SAE_KINDS))
    means = rm.mean_activations(tokens.corrupted, tokens.corrupted_lengths)
    f_mean, e_mean = means["L1.attn"]
    with torch.no_grad():
        recs = rm.activations(tokens.corrupted).records
    real = recs["L1.attn"].features[:, 2].mean(0)  # IOI prompts are long enough: no padding at 2
    assert torch.allclose(f_mean[0, 2], real, atol=1e-6)
    run = rm.run(tokens.clean, {"L1.attn": NodeEdit(f_mean, None, e_mean, None)})
    out = run.records["L1.attn"].output
    expected = rm.dictionaries["L1.attn"].decode(f_mean) + e_mean
    assert torch.allclose(out, expected.expand_as(out), atol=1e-5)


def test_site_gradients_are_the_original_models(toy, tokens):
    """Gradients at every site output equal the plain model's gradients at those hooks."""
    rm = ReplacementModel(toy.model, fresh_dictionaries(toy.model, SAE_KINDS))
    run = rm.run_with_grads(tokens.clean)
    grads = run.site_grads(run.logits[:, -1, 5].sum())
    captured = {}

    def keep(x, hook):
        x = x.detach().requires_grad_(True)
        captured["x"] = x
        return x

    site = rm.site("L1.resid")
    with torch.enable_grad(), toy.model.hooks(fwd_hooks=[(site.hook_out, keep)]):
        logits = toy.model(tokens.clean)
        (g,) = torch.autograd.grad(logits[:, -1, 5].sum(), [captured["x"]])
    assert torch.allclose(grads["L1.resid"], g, atol=1e-5)


def test_frozen_patterns_and_scales(toy, tokens):
    rm = ReplacementModel(toy.model, fresh_dictionaries(toy.model, SAE_KINDS))
    same = rm.freeze(tokens.clean)
    other = rm.freeze(tokens.corrupted)
    assert any("hook_pattern" in k for k in same.values) and any("hook_scale" in k for k in same.values)
    with torch.no_grad():
        ref = toy.model(tokens.clean)
        assert (rm.run(tokens.clean, frozen=same).logits - ref).abs().max() <= TOL
        assert (rm.run(tokens.clean, frozen=other).logits - ref).abs().max() > 1e-3


def test_unknown_site_and_bad_dictionaries_are_clear_errors(toy, tokens):
    dicts = fresh_dictionaries(toy.model, SAE_KINDS)
    rm = ReplacementModel(toy.model, dicts)
    with pytest.raises(SiteError, match=r"L7.attn"):
        rm.run(tokens.clean, {"L7.attn": NodeEdit()})
    narrow = create_dictionary(Site("attn", 0), 32, DictionaryConfig(architecture="relu", expansion=2))
    with pytest.raises(DictionaryError, match="d_in"):
        ReplacementModel(toy.model, {**dicts, "L0.attn": narrow})
    with pytest.raises(SiteError, match="no hook"):
        ReplacementModel(
            toy.model, {"L9.attn": create_dictionary(Site("attn", 9), 96, DictionaryConfig(architecture="relu"))}
        )
    with pytest.raises(SiteError, match="both write"):
        ReplacementModel(toy.model, fresh_dictionaries(toy.model, ("mlp", "transcoder")))


def test_hooks_are_removed_after_a_run_that_raises(toy, tokens):
    rm = ReplacementModel(toy.model, fresh_dictionaries(toy.model, SAE_KINDS))
    with pytest.raises(RuntimeError):
        rm.run(tokens.clean, {"L0.attn": NodeEdit(torch.zeros(3, 3, 3, 3), torch.ones(1, dtype=torch.bool))})
    with torch.no_grad():
        assert torch.equal(toy.model(tokens.clean), toy.model(tokens.clean))
    assert all(len(hp.fwd_hooks) == 0 for hp in toy.model.hook_dict.values() if hasattr(hp, "fwd_hooks"))


def test_exact_on_a_small_random_huggingface_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    from circuits.app.loading import load_model
    from circuits.toy.language import vocabulary
    from circuits.toy.tokenizer import WordTokenizer

    tok = WordTokenizer.from_words(vocabulary())
    torch.manual_seed(0)
    hf = GPT2LMHeadModel(
        GPT2Config(
            n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=tok.vocab_size, attn_implementation="eager"
        )
    )
    loaded = load_model("tiny-gpt2", device="cpu", hf_model=hf, hf_tokenizer=tok.hf)
    model = loaded.model
    for kinds in (SAE_KINDS, MIXED_KINDS):
        rm = ReplacementModel(model, fresh_dictionaries(model, kinds))
        toks = torch.tensor([tok.encode("Then , John and Mary went to the store . John gave a ring to")])
        with torch.no_grad():
            ref = model(toks)
            out = rm.run(toks)
        assert (out.logits - ref).abs().max().item() <= TOL
        assert max(r.error.abs().max().item() for r in out.records.values()) > 1e-3
