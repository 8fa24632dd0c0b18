"""Attention heads as coupled units (tests/compress/transformer_zoo.py, float64, checkpoint-like weights).

Independent truth: the same model with the removed units' member slices zeroed (q/k/v rows and
biases of a head, the o-projection's columns reading it; FFN hidden units), evaluated at batch
sizes and sequence lengths the capture never saw. The compressed model is the user's class running
its own forward, which reads the patched head counts.
"""
from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import pytest
import torch

from sparsefw.compress import channel_groups, count_parameters, rebuild, remove_filters
from sparsefw.graph.attention import HeadedMultiheadAttention
from transformer_zoo import VOCAB, ZOO, build, masked_by_plan

HEADS = {"bert": 2, "gpt2": 2, "llama": 2, "nanogpt": 2, "vit": 2, "torch_encoder": 2}  # head spaces


def _new_inputs(name, x):
    """Inputs of other batch sizes and lengths (positions: at most the 8 the embeddings hold)."""
    g = torch.Generator().manual_seed(1)
    if name == "vit":
        return [torch.randn(b, 3, 8, 8, generator=g, dtype=x.dtype) for b in (1, 5)]
    lengths = (5, 13) if name == "llama" else (3, 7)
    return [torch.randint(1, VOCAB, (b, t), generator=g) for b, t in zip((1, 5), lengths)]


def _relative(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_model_has_one_head_space_per_layer(name):
    """nanoGPT's heads are found but stay: its forward views them by the residual width C, so a
    model with one head fewer fails to run (tried on the example inputs)."""
    model, x = build(name)
    heads = [g for g in channel_groups(model, x, include_fixed=True) if g.kind == "heads"]
    assert len(heads) == HEADS[name]
    for group in heads:
        assert group.size == 2 and {m.role for m in group.members} == {"out", "in"}
        if name == "nanogpt":
            assert "does not follow a smaller head count" in group.fixed
        else:
            assert group.fixed is None


@pytest.mark.parametrize("name", sorted(ZOO))
def test_coupled_removal_of_heads_and_ffn_units_is_exact_at_new_sizes(name):
    model, x = build(name, pretrained=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        compressed, recipe = remove_filters(model, 0.5, x, coupled=True, return_recipe=True)
    assert type(compressed) is type(model)
    assert count_parameters(compressed) < count_parameters(model)
    masked = masked_by_plan(model, recipe["slices"])
    rebuilt = rebuild(model, json.loads(json.dumps(recipe)))
    rebuilt.load_state_dict(compressed.state_dict())
    with torch.no_grad():
        for inputs in _new_inputs(name, x):
            expected = masked(inputs)
            assert _relative(compressed(inputs), expected) <= 1e-5
            assert _relative(rebuilt(inputs), expected) <= 1e-5
    assert not [str(w.message) for w in caught if "attention heads" in str(w.message)]
    kept_heads = name == "nanogpt"   # heads fixed by the analysis: only the FFN units shrink
    layer = compressed.transformer.h[0] if kept_heads else None
    assert not kept_heads or (layer.c_attn.out_features, layer.c_fc.out_features) == (48, 32)


def _removed(name):
    model, x = build(name)
    return remove_filters(model, 0.5, x, coupled=True)


def test_head_attributes_follow_the_removal():
    """BERT: num_attention_heads 2 → 1, all_head_size 32 → 16, head size kept; GPT-2: num_heads,
    split_size and Conv1D.nf, the lm_head tie kept; Llama (4 query heads, 2 KV heads): one KV head
    and its two query heads leave, head_dim and num_key_value_groups stay."""
    bert = _removed("bert")
    layer = bert.layer[0]
    assert (layer.num_attention_heads, layer.attention_head_size, layer.all_head_size) == (1, 16, 16)
    assert layer.query.weight.shape == (16, 32) and layer.attention_output.weight.shape == (32, 16)
    gpt2 = _removed("gpt2")
    block = gpt2.h[0]
    assert (block.num_heads, block.head_dim, block.split_size) == (1, 8, 8)
    assert (block.c_attn.nf, tuple(block.c_attn.weight.shape), block.c_fc.nf) == (24, (16, 24), 32)
    assert gpt2.lm_head.weight is gpt2.wte.weight
    llama = _removed("llama")
    layer = llama.layers[0]
    assert (layer.head_dim, layer.num_key_value_groups) == (8, 2)
    assert layer.q_proj.out_features == 16 and layer.k_proj.out_features == 8
    assert layer.o_proj.in_features == 16 and layer.gate_proj.out_features == 48


@pytest.mark.parametrize("name", ["gpt2", "llama"])
def test_a_query_group_leaves_with_its_kv_head(name):
    """The unit of a head space: rows h·d … (h+1)·d of q, k and v (GQA: the query rows of the
    group), columns of o; every member slice covers its dim exactly once."""
    model, x = build(name)
    group = next(g for g in channel_groups(model, x) if g.kind == "heads")
    shapes = dict(model.named_parameters())
    for member in group.members:
        positions = sorted(member.index.flatten().tolist())
        assert len(positions) == len(set(positions))
        assert member.index.shape[0] == 2 and member.index.shape[1] in (8, 16)
    q = [m for m in group.members if m.name.endswith(("q_proj.weight", "c_attn.weight"))]
    assert q and all(shapes[m.name].shape[m.dim] >= m.index.numel() for m in q)


@pytest.mark.parametrize("name, path", [("vit", "encoder.0.self_attention"), ("torch_encoder", "encoder.layers.0.self_attn")])
def test_multihead_attention_loses_heads_and_stays_one(name, path):
    """nn.MultiheadAttention: num_heads 2 → 1, in_proj_weight rows 48 → 24 (q, k, v of the kept
    head), out_proj columns 16 → 8, embed_dim (the residual width) and head_dim kept; computed head
    by head, still an nn.MultiheadAttention."""
    mha = _removed(name).get_submodule(path)
    assert isinstance(mha, torch.nn.MultiheadAttention) and isinstance(mha, HeadedMultiheadAttention)
    assert (mha.num_heads, mha.head_dim, mha.embed_dim) == (1, 8, 16)
    assert mha.in_proj_weight.shape == (24, 16) and mha.out_proj.weight.shape == (16, 8)


def test_constrain_gets_head_units_as_coupled_regions():
    """One source of truth: the coupled regions include one per head space, over the q/k/v rows
    (and biases) of each head."""
    import sparsefw
    from sparsefw.constraints import CoupledGroupKSupportBall

    for name, q in (("bert", "layer.0.query.weight"), ("gpt2", "h.0.c_attn.weight"),
                    ("llama", "layers.0.q_proj.weight"), ("vit", "encoder.0.self_attention.in_proj_weight")):
        model, x = build(name)
        groups = sparsefw.constrain(model, "coupled_group_k_support", k=0.5, example_inputs=x)
        regions = [g for g in groups if isinstance(g["constraint"], CoupledGroupKSupportBall)]
        named = dict(model.named_parameters())
        holding = [g for g in regions if any(p is named[q] for p in g["params"])]
        assert len(holding) == 1, name


class _SDPAGroupedQuery(torch.nn.Module):
    """Grouped-query attention by scaled_dot_product_attention(enable_gqa=True), no repeat_kv: query
    head h reads KV head h // 2."""

    def __init__(self):
        super().__init__()
        self.num_heads, self.num_key_value_heads, self.head_dim = 4, 2, 8
        self.q, self.k, self.v = torch.nn.Linear(16, 32), torch.nn.Linear(16, 16), torch.nn.Linear(16, 16)
        self.o = torch.nn.Linear(32, 16)

    def forward(self, x):
        b, t, _ = x.shape
        q = self.q(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        k, v = (f(x).view(b, t, self.num_key_value_heads, self.head_dim).transpose(1, 2) for f in (self.k, self.v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
        return x + self.o(y.transpose(1, 2).reshape(b, t, self.num_heads * self.head_dim))


def test_sdpa_grouped_query_attention_keeps_query_groups_with_their_kv_head():
    torch.manual_seed(0)
    model = _SDPAGroupedQuery().double().eval()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    compressed, recipe = remove_filters(model, 0.5, x, coupled=True, return_recipe=True)
    assert (compressed.num_heads, compressed.num_key_value_heads) == (2, 1)
    kept_kv = recipe["slices"]["k.weight"][0]
    kept_q = recipe["slices"]["q.weight"][0]
    assert kept_q == [h * 8 + i for h in range(4) if h // 2 * 8 in kept_kv for i in range(8)]
    with torch.no_grad():
        y = torch.randn(3, 11, 16, dtype=torch.float64)
        assert _relative(compressed(y), masked_by_plan(model, recipe["slices"])(y)) <= 1e-5


class _ConfigAttention(torch.nn.Module):
    """A forward that reads its sizes from a shared `config` (as Hugging Face modules keep one) and
    the dtype from a layer's weight."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        width = config.num_attention_heads * config.head_dim
        self.q, self.k, self.v = (torch.nn.Linear(16, width) for _ in range(3))
        self.o = torch.nn.Linear(width, 16)

    def forward(self, x):
        x = x.to(self.q.weight.dtype)
        shape = (*x.shape[:-1], self.config.num_attention_heads, self.config.head_dim)
        q, k, v = (f(x).view(shape).transpose(1, 2) for f in (self.q, self.k, self.v))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        return x + self.o(y.reshape(*x.shape[:-1], self.config.num_attention_heads * self.config.head_dim))


def test_a_forward_reading_config_fields_follows_the_patched_config():
    from types import SimpleNamespace
    torch.manual_seed(0)
    config = SimpleNamespace(num_attention_heads=4, head_dim=4, hidden_size=16)
    model = torch.nn.Sequential(_ConfigAttention(config), _ConfigAttention(config)).double().eval()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    compressed, recipe = remove_filters(model, 0.5, x, coupled=True, return_recipe=True)
    assert compressed[0].config is compressed[1].config and compressed[0].config.num_attention_heads == 2
    assert config.num_attention_heads == 4 and compressed[0].config.head_dim == 4   # the original untouched
    with torch.no_grad():
        y = torch.randn(3, 9, 16, dtype=torch.float64)
        assert _relative(compressed(y), masked_by_plan(model, recipe["slices"])(y)) <= 1e-5


class _DerivedHeadDimAttention(_ConfigAttention):
    """Hugging Face's convention: head_dim = config.head_dim, or hidden_size // num_attention_heads
    where the config has none."""

    def __init__(self, config):
        super().__init__(SimpleNamespace(**{**vars(config), "head_dim": self.head_size(config)}))
        self.config = config

    @staticmethod
    def head_size(config):
        return config.head_dim or config.hidden_size // config.num_attention_heads

    def forward(self, x):
        self.config.head_dim, derived = self.head_size(self.config), self.config.head_dim is None
        try:
            return super().forward(x)
        finally:
            if derived:
                self.config.head_dim = None


def test_a_config_without_head_dim_gets_it_written_so_a_model_rebuilt_from_it_fits():
    torch.manual_seed(0)
    model = _DerivedHeadDimAttention(SimpleNamespace(num_attention_heads=4, hidden_size=16, head_dim=None)).double()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    compressed, recipe = remove_filters(model, 0.5, x, coupled=True, return_recipe=True)
    assert compressed.config.num_attention_heads == 2 and compressed.config.head_dim == 4
    rebuilt = _DerivedHeadDimAttention(compressed.config).double()
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in compressed.parameters()]
    with torch.no_grad():
        y = torch.randn(3, 9, 16, dtype=torch.float64)
        assert _relative(compressed(y), masked_by_plan(model, recipe["slices"])(y)) <= 1e-5


class _DefaultMultiheadAttention(torch.nn.Module):
    """nn.MultiheadAttention called with its defaults (need_weights=True: the averaged weights are
    computed and dropped), batch first or not."""

    def __init__(self, batch_first):
        super().__init__()
        self.ln = torch.nn.LayerNorm(16)
        self.attn = torch.nn.MultiheadAttention(16, 4, batch_first=batch_first)

    def forward(self, x):
        h = self.ln(x)
        return x + self.attn(h, h, h)[0]


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention_with_its_defaults_loses_heads_exactly(batch_first):
    torch.manual_seed(0)
    model = _DefaultMultiheadAttention(batch_first).double().eval()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    compressed, recipe = remove_filters(model, 0.5, x, coupled=True, return_recipe=True)
    assert compressed.attn.num_heads == 2 and compressed.attn.in_proj_weight.shape == (24, 16)
    with torch.no_grad():
        y = torch.randn(3, 9, 16, dtype=torch.float64)
        assert _relative(compressed(y), masked_by_plan(model, recipe["slices"])(y)) <= 1e-5


class _FusedGateUp(torch.nn.Module):
    """Phi-3's MLP: one gate_up_proj, chunked in two by the forward (sizes follow the tensor)."""

    def __init__(self):
        super().__init__()
        self.gate_up_proj = torch.nn.Linear(16, 64)
        self.down_proj = torch.nn.Linear(32, 16)

    def forward(self, x):
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return x + self.down_proj(torch.nn.functional.silu(gate) * up)


def test_a_fused_gate_up_projection_loses_units_from_both_halves():
    torch.manual_seed(0)
    model = _FusedGateUp().double().eval()
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    (group,) = channel_groups(model, x)
    assert (group.kind, group.size) == ("split", 32)
    compressed, recipe = remove_filters(model, 0.5, x, coupled=True, return_recipe=True)
    kept = recipe["slices"]["gate_up_proj.weight"][0]
    assert len(kept) == 32 and [k + 32 for k in kept if k < 32] == [k for k in kept if k >= 32]
    with torch.no_grad():
        y = torch.randn(3, 9, 16, dtype=torch.float64)
        assert _relative(compressed(y), masked_by_plan(model, recipe["slices"])(y)) <= 1e-5
