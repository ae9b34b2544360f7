"""zoo.testing, the kit plugin authors test with, run the way they run it: pytest loads it from its ``pytest11``
entry point (no conftest), good components pass its checks and broken ones fail them with a message naming the
fault."""

from __future__ import annotations

import transformers

pytest_plugins = ["pytester"]
# pytester runs inner sessions in this process and drops the modules they imported afterwards; torch cannot import
# its operator libraries twice, so everything the inner tests need is imported here, once.
transformers.BertModel  # noqa: B018  (transformers imports lazily)
import zoo.cli  # noqa: E402,F401
import zoo_plugins.architectures.bert, zoo_plugins.transforms.dct  # noqa: E401,E402,F401

TINY_BERT = """
from transformers import BertConfig, BertModel
from zoo_plugins.architectures.bert import BertAdapter

def tiny_bert():
    return BertModel(BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=64,
                                vocab_size=100, max_position_embeddings=32, type_vocab_size=2))
"""


def outcome(pytester, source, *args, **expected):
    pytester.makepyfile(test_plugin=source)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", *args)
    result.assert_outcomes(**expected)
    return result


def test_fixtures_come_from_the_pytest11_entry_point(pytester):
    source = """
        import os, types, zoo

        class Nothing:
            name = "nothing"
            description = "registers nothing useful"

            def resize(self, coeffs, axes, target_shape, transform, params):
                raise NotImplementedError

        def plugin():
            module = types.ModuleType("kit_plugin")
            @zoo.hookimpl
            def register_resize_strategies(register):
                register(Nothing())
            module.register_resize_strategies = register_resize_strategies
            return module

        def test_registry(zoo_registry):
            assert os.environ["ZOO_REGISTRY"] == str(zoo_registry) and not zoo_registry.exists()

        def test_register_plugin_and_cli(zoo_register_plugin, zoo_cli):
            assert zoo_register_plugin(plugin(), name="kit-plugin") == "kit-plugin"
            result = zoo_cli("plugins", "--json")
            assert result.exit_code == 0 and '"kit-plugin"' in result.output and '"runtime"' in result.output

        def test_plugin_was_unregistered_after_its_test():
            assert "nothing" not in zoo.catalog().resize_strategies
    """
    outcome(pytester, source, passed=3)
    # and it is the entry point named "zoo" that provides them
    outcome(pytester, source, "-p", "no:zoo", passed=1, errors=2)


def test_adapter_round_trip_passes_and_catches_broken_adapters(pytester):
    result = outcome(pytester, TINY_BERT + """
from dataclasses import replace
from zoo.testing import check_adapter_round_trip

class CopyPaste(BertAdapter):  # the key maps copied from the query maps: keys go unread, queries written twice
    weights = tuple(replace(w, key=w.key.replace(".key.", ".query.")) for w in BertAdapter.weights)

class HalfDone(BertAdapter):  # custom extraction (reversed query rows, as a rotary permutation) never undone
    def to_genome(self, state_dict, config):
        genome = super().to_genome(state_dict, config)
        q = genome["attn.q.weight"]
        genome["attn.q.weight"] = replace(q, tensor=q.tensor.flip(2))
        return genome

class ForgotNorm(BertAdapter):  # no map for the embedding LayerNorm
    weights = tuple(w for w in BertAdapter.weights if w.gene != "embed.norm.weight")

def test_good():
    model = check_adapter_round_trip(BertAdapter(), tiny_bert)
    assert model.config.num_hidden_layers == 2

def test_copy_paste():
    check_adapter_round_trip(CopyPaste(), tiny_bert)

def test_half_done():
    check_adapter_round_trip(HalfDone(), tiny_bert)

def test_forgot_a_weight():
    check_adapter_round_trip(ForgotNorm(), tiny_bert)
""", passed=1, failed=3)
    result.stdout.fnmatch_lines([
        "*adapter 'bert': build() raised InvalidConfigError: gene for 'encoder.layer.0.attention.self.query.weight' "
        "has shape (4, 8, 32) + (4, 8, 32), model wants (32, 32)*",
        "*adapter 'bert' does not round-trip: 2 of 39 weights differ*",
        "*differ: encoder.layer.0.attention.self.query.weight (max error *), encoder.layer.1.attention.self.query.weight*",
        "*adapter 'bert' does not round-trip: 1 of 39 weights differ*",
        "*differ: embeddings.LayerNorm.weight*",
        "*no gene covers (random init): embeddings.LayerNorm.weight*",
    ])


def test_resize_check_passes_and_catches_a_config_bug(pytester):
    result = outcome(pytester, TINY_BERT + """
import torch
from zoo.testing import check_resize

class KeepsLayers(BertAdapter):  # a derived-config bug: the layer count is reset to the source's
    def finish_config(self, config, sizes):
        config["num_hidden_layers"] = 2
        return config

def test_good():
    model = check_resize(BertAdapter(), tiny_bert, layers=3, hidden=48, keep=0.5)
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.num_attention_heads) == (3, 48, 6)
    assert model(input_ids=torch.tensor([[1, 2, 3]])).last_hidden_state.shape == (1, 3, 48)

def test_default_sizes_grow_depth_and_heads():
    model = check_resize(BertAdapter(), tiny_bert)
    assert (model.config.num_hidden_layers, model.config.num_attention_heads) == (3, 5)

def test_keeps_layers():
    check_resize(KeepsLayers(), tiny_bert, layers=3)
""", passed=2, failed=1)
    result.stdout.fnmatch_lines(["*asked for layers=3, but adapter.sizes(target_config(...)) gives depth=2*"])


def test_transform_inverse_passes_and_catches_broken_transforms(pytester):
    result = outcome(pytester, """
from zoo.testing import check_transform_inverse
from zoo_plugins.transforms.dct import DCT

class Lossy(DCT):  # analysis scaled, synthesis not compensated
    name = "lossy"
    def analyze(self, x, dim, keep, **params):
        return 0.5 * super().analyze(x, dim, keep, **params)

class IgnoresSize(DCT):  # synthesizes at the stored length whatever is asked
    name = "ignores-size"
    def synthesize(self, coeffs, dim, size, **params):
        return super().synthesize(coeffs, dim, coeffs.shape[dim], **params)

def test_dct_by_name():
    check_transform_inverse("dct")

def test_dwt_with_a_parameter():
    check_transform_inverse("dwt", params={"wavelet": "db2"}, shape=(4, 6, 16))

def test_lossy():
    check_transform_inverse(Lossy())

def test_ignores_size():
    check_transform_inverse(IgnoresSize())

class Clipped(DCT):  # invertible at keep=n, but not linear: clips the kept block
    name = "clipped"
    def analyze(self, x, dim, keep, **params):
        out = super().analyze(x, dim, keep, **params)
        return out if keep == x.shape[dim] else out.clamp(-1, 1)

class MixesFibers(DCT):  # linear, but each fiber's block depends on its neighbours (adds their mean)
    name = "mixes-fibers"
    def analyze(self, x, dim, keep, **params):
        out = super().analyze(x, dim, keep, **params)
        other = (dim + 1) % x.dim()
        return out if keep == x.shape[dim] else out + out.mean(dim=other, keepdim=True)

def test_clipped():
    check_transform_inverse(Clipped())

def test_mixes_fibers():
    check_transform_inverse(MixesFibers())
""", passed=2, failed=4)
    result.stdout.fnmatch_lines([
        "*transform 'lossy' is not inverted along axis 0 (length 5)*max error*",
        "*transform 'ignores-size': synthesize((1, 8, 12), dim=0, size=4) has shape (1, 8, 12), want (4, 8, 12)*",
        "*transform 'clipped': analyze along axis 0 is not linear (max error *)*",
        "*transform 'mixes-fibers': analyze along axis 0 of a slice along axis 1 differs from the same slice*",
    ])


def test_resize_strategy_check_catches_a_strategy_that_resizes_the_vocabulary(pytester):
    result = outcome(pytester, """
from zoo.testing import check_resize_strategy

import torch
from zoo.genes import resizable

class EveryAxis:
    name = "every-axis"
    description = "synthesizes resizable axes and crops or zero-pads the others to whatever is asked"
    def resize(self, coeffs, axes, target_shape, transform, params):
        for dim, (role, size) in enumerate(zip(axes, target_shape)):
            if resizable(role):
                coeffs = transform.synthesize(coeffs, dim, size, **params)
            elif size != coeffs.shape[dim]:
                pad = torch.zeros(*[abs(size - n) if d == dim else n for d, n in enumerate(coeffs.shape)])
                coeffs = torch.cat([coeffs, pad], dim) if size > coeffs.shape[dim] else coeffs.narrow(dim, 0, size)
        return coeffs

def test_spectral():
    check_resize_strategy("spectral")

def test_wavelet_with_dwt():
    check_resize_strategy("wavelet", transform="dwt")

def test_every_axis():
    check_resize_strategy(EveryAxis())
""", passed=2, failed=1)
    result.stdout.fnmatch_lines(["*resize strategy 'every-axis' resized axis 'vocab', which is never resized*"])


def test_cli_visibility_check(pytester):
    result = outcome(pytester, """
from zoo.testing import check_cli_lists

def test_bert():
    row = check_cli_lists("bert", architectures=["bert"], in_process=True)
    assert row["module"] == "zoo_plugins.architectures.bert" and row["hooks"] == ["register_architectures"]

def test_not_installed():
    check_cli_lists("zoo-nope", in_process=True)

def test_wrong_kind():
    check_cli_lists("bert", transforms=["dct"], in_process=True)
""", passed=1, failed=2)
    result.stdout.fnmatch_lines([
        "*`zoo plugins --json` does not list 'zoo-nope'; it lists *bert*entry point in group 'zoo'*",
        "*zoo plugin 'bert' does not register transforms dct; it registers none*",
    ])
