"""The ordered learngene: calibration, the importance permutation, and the ordered resize strategy."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

import zoo
from zoo.errors import InvalidConfigError
from zoo.importance import Calibration, contiguous_cut, depth_order, descending, read_meta, top_units


def _tiny_llama(folder, heads=4, kv_heads=2, hidden=32, layers=3, ffn=48):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, intermediate_size=ffn, max_position_embeddings=32,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # norms away from ones, so that permuting them is visible
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    model.save_pretrained(folder, safe_serialization=True)
    return model.eval()


def _built_by(strategy, src, folder, **sizes):
    """The model ``strategy`` (an ``OrderedStrategy`` of the test's own) builds at ``sizes`` from a weights-only
    ordered learngene of the source at ``src`` (a registry in ``folder``), bypassing zoo.materialize's choice."""
    from zoo.materialization import materialize

    reg = folder / "r.db"
    zoo.add_learngene(str(src), transform="ordered", name="o", registry=reg, calibrate="none")
    registry = zoo.open_registry(reg)
    info, cat = registry.get("o"), zoo.catalog()
    adapter = cat.architecture("llama")
    config = adapter.target_config(info.source_config, **sizes)
    bound = strategy.for_learngene(Calibration.from_bytes(info.calibration))
    with torch.no_grad():
        genome = materialize(registry.genes("o"), adapter.sizes(config), cat.transform("ordered"), bound,
                             info.transform_params, "restore")
    return adapter.build(config, genome)


def test_calibration_bytes_round_trip_and_metadata_reads_without_tensors():
    cal = Calibration({"hidden": torch.tensor([3.0, 1.0, 2.0]), "depth": torch.tensor([0.1, 0.5])},
                      {"data": "x", "samples": 4})
    data = cal.to_bytes()
    assert read_meta(data) == {"data": "x", "samples": 4}
    back = Calibration.from_bytes(data)
    assert torch.equal(back.scores["hidden"], cal.scores["hidden"]) and back.meta == cal.meta
    assert descending(back.scores["hidden"]).tolist() == [0, 2, 1]


def test_depth_order_pins_the_first_and_last_block_then_ranks_by_influence():
    cal = Calibration({"depth": torch.tensor([0.1, 0.9, 0.2, 0.8, 0.3])})
    assert depth_order(cal, 5).tolist() == [0, 4, 1, 3, 2]
    spread = depth_order(Calibration({}), 9).tolist()  # no influence measured: evenly spread, every layer once
    assert spread[:3] == [0, 8, 4] and sorted(spread) == list(range(9))


def test_contiguous_cut_drops_the_run_of_blocks_that_changes_the_stream_least():
    # 6 blocks, keep 3: a run of 3 starting at block 1 or 2 (never the first block, never the last)
    distance = torch.full((7, 7), 0.5)
    distance[1, 4], distance[2, 5] = 0.3, 0.2
    cal = Calibration({"stream_distance": distance})
    assert contiguous_cut(cal, 6, 3).tolist() == [0, 1, 5]  # blocks 2, 3, 4 dropped: h[2] -> h[5] changes least
    distance[1, 4] = 0.1
    assert contiguous_cut(cal, 6, 3).tolist() == [0, 4, 5]
    distance[0, 3] = distance[3, 6] = 0.0  # would drop the first or the last block: not candidates
    assert contiguous_cut(cal, 6, 3).tolist() == [0, 4, 5]
    assert contiguous_cut(cal, 6, 6) is None and contiguous_cut(Calibration({}), 6, 3) is None
    assert contiguous_cut(cal, 6, 1) is None  # one layer cannot keep both ends


def test_grouped_heads_are_kept_as_groups():
    # 2 KV groups of 2 query heads; head scores [0.1, 0.2 | 0.9, 0.3]: group 1 wins, and in it head 0
    from zoo.importance import select_units, top_heads

    scores = torch.tensor([0.1, 0.2, 0.9, 0.3])
    assert top_heads(scores, 2, 1, 1).tolist() == [2]
    assert top_heads(scores, 2, 2, 1).tolist() == [1, 2]  # in source order
    cal = Calibration({"hidden": torch.tensor([1.0, 2.0]), "heads": scores.reshape(1, 4)})
    q = torch.arange(8.0).reshape(2, 2, 1, 2)  # (kv_heads, q_per_kv, head_dim, hidden)
    kept = select_units(q, ("kv_heads", "q_per_kv", "head_dim", "hidden"), cal, 0, {"kv_heads": 1, "q_per_kv": 1,
                                                                                      "hidden": 1})
    assert kept.reshape(-1).tolist() == [5.0]  # head 2 (group 1, head 0), hidden channel 1


def test_ordered_learngene_at_keep_1_gives_the_source_back_exactly(tmp_path):
    src = tmp_path / "llama"
    source = _tiny_llama(src)
    reg = tmp_path / "r.db"
    info = zoo.add_learngene(str(src), transform="ordered", name="o", registry=reg, calibrate="none")
    assert info.transform == "ordered" and info.calibration_meta["data"].startswith("none")
    model = zoo.materialize("llama", learngene="o", registry=reg)
    for (name, a), (_, b) in zip(sorted(model.state_dict().items()), sorted(source.state_dict().items())):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5), name  # the z-score round trip, in float32


def test_keep_below_1_stores_a_consistent_sub_network(tmp_path):
    """At keep 0.5 the learngene holds the best half of each ranked axis; materialized at that size, the model is
    the source restricted to those units (the same units for every reader and writer)."""
    src = tmp_path / "llama"
    source = _tiny_llama(src, heads=4, kv_heads=2)
    reg = tmp_path / "r.db"
    zoo.add_learngene(str(src), transform="ordered", keep="hidden=0.5,ffn=0.5", name="o", registry=reg,
                      calibrate="none")
    cal = Calibration.from_bytes(zoo.show_learngene("o", registry=reg).calibration)
    hidden = zoo.importance.top_units(cal.scores["hidden"], 16)
    small = zoo.materialize("llama", hidden=16, ffn=24, heads=4, kv_heads=2, head_dim=8, learngene="o",
                            registry=reg)
    ffn = zoo.importance.top_units(cal.scores["ffn"][1], 24)
    want = source.model.layers[1].mlp.up_proj.weight[ffn][:, hidden]
    assert torch.allclose(small.model.layers[1].mlp.up_proj.weight, want, atol=1e-6)
    with pytest.raises(InvalidConfigError, match="only with --strategy ordered"):
        zoo.materialize("llama", learngene="o", registry=reg, strategy="select")


def test_calibrated_scores_rank_units_by_what_they_contribute(minilm_dir, tmp_path):
    reg = tmp_path / "r.db"
    info = zoo.add_learngene(str(minilm_dir), transform="ordered", name="o", registry=reg, calibrate_samples=8)
    meta = info.calibration_meta
    assert meta["data"] == "pydoc_data prose" and meta["samples"] == 8 and meta["tokens"] == 8 * 128
    cal = Calibration.from_bytes(info.calibration)
    assert cal.scores["hidden"].shape == (384,) and cal.scores["ffn"].shape == (6, 1536)
    assert cal.scores["heads"].shape == (6, 12) and cal.scores["depth"].shape == (6,)
    assert (cal.scores["depth"] > 0).all() and (cal.scores["ffn"] >= 0).all()
    distance = cal.scores["stream_distance"]  # block inputs and the last output, pairwise
    assert distance.shape == (7, 7) and torch.allclose(distance, distance.T, atol=1e-5)
    assert distance.diagonal().abs().max() < 1e-3 and (distance[0, 1:] > 0.05).all()
    # next to each other, the angular distance is the block's influence (1 - cos) seen through arccos
    assert torch.allclose(1 - torch.cos(torch.pi * distance.diagonal(1)), cal.scores["depth"], atol=2e-2)
    # a dead neuron (zero output weights) scores zero, whatever its activation
    assert "energy:attn.norm.weight" in cal.scores
    shown = zoo.show_learngene("o", registry=reg).to_json()
    assert shown["calibration"]["samples"] == 8


def test_shrinking_keeps_the_most_important_units_and_layers(minilm_dir, tmp_path):
    reg = tmp_path / "r.db"
    zoo.add_learngene(str(minilm_dir), transform="ordered", name="o", registry=reg, calibrate_samples=8)
    info = zoo.show_learngene("o", registry=reg)
    cal = Calibration.from_bytes(info.calibration)
    model = zoo.materialize("bert", layers=3, hidden=256, learngene="o", registry=reg)
    from transformers import AutoModel

    source = AutoModel.from_pretrained(minilm_dir)
    hidden = top_units(cal.scores["hidden"], 256)  # the 256 best channels, in their source order
    layers = [0, 1, 5]  # the default depth rule: the first layers and the last (docs/ablations.md)
    for j, layer in enumerate(layers):
        ffn = top_units(cal.scores["ffn"][layer], 1024)
        want = source.encoder.layer[layer].intermediate.dense.weight[ffn][:, hidden]
        got = model.encoder.layer[j].intermediate.dense.weight
        assert torch.allclose(got, want, atol=1e-5)


def test_growing_a_post_norm_feed_forward_width_copies_neurons_and_breaks_their_symmetry(tmp_path, tiny_bert_dir):
    """A post-norm source (BERT) grows by Net2Net copies with cancelling +N/-N noise (a pre-norm one by fresh
    units: see the test below): the grown model computes the source's hidden states."""
    from transformers import BertModel

    source = BertModel.from_pretrained(tiny_bert_dir).eval()
    reg = tmp_path / "r.db"
    zoo.add_learngene(str(tiny_bert_dir), transform="ordered", name="o", registry=reg, calibrate="none")
    grown = zoo.materialize("bert", ffn=96, learngene="o", registry=reg).eval()
    ids = torch.randint(5, 96, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(grown(input_ids=ids).last_hidden_state, source(input_ids=ids).last_hidden_state,
                              atol=1e-4)
    layer = grown.encoder.layer[0]
    up, down = layer.intermediate.dense.weight, layer.output.dense.weight
    # 64 -> 96 neurons: unit 0 is copied to units 0 and 1; their inputs are equal, their output columns differ by
    # the +N/-N noise (which cancels: the hidden states above are the source's)
    assert torch.allclose(up[0], up[1])
    assert not torch.allclose(down[:, 0], down[:, 1])


def test_growing_grouped_query_heads_keeps_q_k_v_and_o_consistent(tmp_path):
    """KV groups 2 -> 4 and the width 32 -> 64: heads are copied (grouped-query pairs) and the width grows by new
    channels, so the grown model computes the source's logits; q, o (grouped axes) and k, v (KV axis alone) must
    map their heads alike for that to hold."""
    src = tmp_path / "llama"
    source = _tiny_llama(src, heads=4, kv_heads=2, hidden=32)
    reg = tmp_path / "r.db"
    zoo.add_learngene(str(src), transform="ordered", name="o", registry=reg, calibrate="none")
    grown = zoo.materialize("llama", hidden=64, heads=8, kv_heads=4, learngene="o", registry=reg)
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():  # up to RMSNorm's eps (the width grows by zero channels, pre-norm)
        assert torch.allclose(grown(input_ids=ids).logits, source(input_ids=ids).logits, atol=5e-4)


def test_the_ordered_strategy_needs_an_ordered_learngene(tmp_path, tiny_bert_dir):
    reg = tmp_path / "r.db"
    zoo.add_learngene(str(tiny_bert_dir), transform="dct", name="d", registry=reg)
    with pytest.raises(InvalidConfigError, match="needs an ordered learngene"):
        zoo.materialize("bert", layers=1, learngene="d", registry=reg, strategy="ordered")


@pytest.mark.parametrize("kwargs, message", [
    ({"calibrate": "/nonexistent/data"}, "no such file or folder"),
    ({"calibrate_samples": 0}, "positive whole number"),
    ({"keep": "depth=0.5"}, "keeps every layer"),
])
def test_bad_calibration_input_is_one_clear_line(tmp_path, minilm_dir, kwargs, message):
    reg = tmp_path / "r.db"
    with pytest.raises(InvalidConfigError, match=message):
        zoo.add_learngene(str(minilm_dir), transform="ordered", name="o", registry=reg, **kwargs)
    assert zoo.list_learngenes(registry=reg) == []


def test_ordered_transform_meets_the_transform_contract():
    from zoo.testing import check_transform_inverse

    check_transform_inverse(zoo.catalog().transform("ordered"))


def test_calibrating_on_a_folder_of_text(tmp_path, minilm_dir):
    data = tmp_path / "texts"
    data.mkdir()
    (data / "a.md").write_text("Some words about the weather and the sea. " * 300)
    reg = tmp_path / "r.db"
    info = zoo.add_learngene(str(minilm_dir), transform="ordered", name="o", registry=reg, calibrate=str(data),
                             calibrate_samples=4)
    assert info.calibration_meta["data"] == str(data) and info.calibration_meta["samples"] == 4
    assert json.dumps(info.to_json())  # everything shown by `learngene show --json` serializes


def test_growing_a_pre_norm_source_with_fresh_units_is_function_preserving_at_any_width(tmp_path):
    """``grow="fresh"`` (the default for a pre-norm source such as Llama): new residual channels are zero in the
    stream (RMSNorm's gain is rescaled for them), new neurons have zero outputs, so the grown model computes the
    source's logits even at non-integer factors, and the new units are not copies of old ones."""
    from zoo_plugins.transforms.ordered import OrderedStrategy

    src = tmp_path / "llama"
    source = _tiny_llama(src)
    grown = _built_by(OrderedStrategy(grow="fresh"), src, tmp_path, hidden=40, heads=4, head_dim=8, ffn=72).eval()
    ids = torch.randint(0, 64, (2, 10), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        # up to RMSNorm's eps, which the zero channels do not scale down with the mean square
        assert torch.allclose(grown(input_ids=ids).logits, source(input_ids=ids).logits, atol=5e-4)
    up, down = grown.model.layers[0].mlp.up_proj.weight, grown.model.layers[0].mlp.down_proj.weight
    assert torch.allclose(up[:48, :32], source.model.layers[0].mlp.up_proj.weight, atol=1e-6)
    assert not torch.equal(up[48], up[0]) and torch.count_nonzero(down[:, 48:]) == 0
    assert torch.count_nonzero(grown.model.embed_tokens.weight[:, 32:]) == 0


def test_growth_follows_the_norm_placement_recorded_by_calibration():
    from zoo_plugins.transforms.ordered import OrderedStrategy

    pre = OrderedStrategy().for_learngene(Calibration({}, {"pre_norm": True}))
    post = OrderedStrategy().for_learngene(Calibration({}, {"pre_norm": False}))
    older = OrderedStrategy().for_learngene(Calibration({"energy:final_norm.weight": torch.ones(4)}))
    assert (pre.grow, pre.stack) == ("fresh", "zero") == (older.grow, older.stack)
    assert (post.grow, post.stack) == ("copy", "copy")
    assert OrderedStrategy(stack="half").for_learngene(Calibration({}, {"pre_norm": True})).stack == "half"


@pytest.mark.parametrize("rule, layers", [
    ("first", [0, 1, 2]), ("ends", [0, 1, 5]), ("last:2", [0, 4, 5]), ("spread", [0, 2, 5]),
    ("contiguous", [0, 1, 5]),  # a weights-only calibration measures no stream distances: ends
])
def test_depth_rules_pick_the_source_layers_a_shallower_target_keeps(tmp_path, rule, layers):
    from zoo_plugins.transforms.ordered import OrderedStrategy

    src = tmp_path / "llama"
    source = _tiny_llama(src, layers=6)
    model = _built_by(OrderedStrategy(depth=rule), src, tmp_path, layers=3)
    for j, layer in enumerate(layers):
        assert torch.allclose(model.model.layers[j].self_attn.q_proj.weight,
                              source.model.layers[layer].self_attn.q_proj.weight, atol=1e-6), (j, layer)
    if rule == "last:2":
        (tmp_path / "bad").mkdir()
        with pytest.raises(InvalidConfigError, match="unknown depth rule 'last:0'; valid: first, ends, last:K"):
            _built_by(OrderedStrategy(depth="last:0"), src, tmp_path / "bad", layers=3)


def test_the_depth_rule_comes_from_the_family_through_calibration(tmp_path):
    from zoo_plugins.transforms.ordered import OrderedStrategy

    assert OrderedStrategy().for_learngene(Calibration({}, {"depth_rule": "last:2"})).depth == "last:2"
    assert OrderedStrategy().for_learngene(Calibration({})).depth == "ends"  # older learngenes, other families
    assert OrderedStrategy().for_learngene(None).depth == "ends"
    assert OrderedStrategy(depth="first").for_learngene(Calibration({}, {"depth_rule": "last:2"})).depth == "first"
    src = tmp_path / "llama"
    _tiny_llama(src, layers=6)
    info = zoo.add_learngene(str(src), transform="ordered", name="o", registry=tmp_path / "r.db", calibrate="none")
    assert info.calibration_meta["depth_rule"] == zoo.catalog().architecture("llama").depth_rule == "contiguous"


@pytest.mark.parametrize("grow_units", ["spread", "important"])
def test_replicas_count_the_copies_growth_makes(tmp_path, tiny_bert_dir, grow_units):
    """``replicas`` (what zoo divides a ``per_copy`` start by) says how often each grown channel's source channel
    was copied: the copies are the grown word embeddings' equal columns."""
    from zoo.materialization import materialize
    from zoo_plugins.transforms.ordered import OrderedStrategy

    reg = tmp_path / "r.db"
    zoo.add_learngene(str(tiny_bert_dir), transform="ordered", name="o", registry=reg, calibrate="none")
    registry = zoo.open_registry(reg)
    info, records = registry.get("o"), registry.genes("o")
    strategy = OrderedStrategy(grow_units=grow_units).for_learngene(Calibration.from_bytes(info.calibration))
    sizes = {"vocab": 96, "hidden": 80}
    grown = materialize({"embed.tokens": records["embed.tokens"]}, sizes, zoo.catalog().transform("ordered"),
                        strategy, info.transform_params, "restore")["embed.tokens"].tensor
    equal = (grown.T[:, None, :] == grown.T[None, :, :]).all(-1).sum(-1).float()
    assert torch.equal(strategy.replicas(records["embed.tokens"], "hidden", 80), equal)
    assert set(equal.tolist()) == {2.0, 3.0}  # 32 -> 80: every channel copied, some three times
    assert strategy.replicas(records["embed.tokens"], "hidden", 24) is None  # shrinking
    assert replace(strategy, grow="fresh").replicas(records["embed.tokens"], "hidden", 80) is None
