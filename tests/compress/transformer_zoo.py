"""Transformer zoo: small transformers written the way popular model libraries write them, built from
config-like arguments (d 16–32, 2 layers), initialised as those libraries do (`library_init`: weights
N(0, 0.02²), biases 0, norm scales 1), with `pretrained_like` for checkpoint-like weights.

    vit          zoo_layers.TinyViT (HF patch embedding, torchvision block with nn.MultiheadAttention), 2 blocks
    bert         BERT-style encoder: word/position/type embeddings + LayerNorm, separate query/key/value,
                 post-LN blocks, pooler (dense + tanh) and classifier; heads by num_attention_heads,
                 attention_head_size, all_head_size as Hugging Face's BertSelfAttention
    gpt2         GPT-2-style decoder: (in, out)-stored `Conv1D` layers (x @ W + b by addmm), pre-LN,
                 causal mask, split(split_size), GELU as its tanh formula, lm_head tied to the token
                 embedding
    llama        Llama-style decoder: `LlamaRMSNorm`, rotary embeddings, grouped-query attention (4 query
                 heads, 2 KV heads, repeat_kv, SDPA), gated SiLU MLP, no biases, untied head
    torch_encoder  nn.TransformerEncoder (2 nn.TransformerEncoderLayer) over an embedding, mean-pooled head
    nanogpt      a hand-written GPT block (nanoGPT): its own `LayerNorm` module, nn.Linear c_attn/c_proj,
                 tied head; its forward views heads by the residual width C (`view(B, T, C)`), so
                 its heads cannot shrink without changing the forward

`ZOO[name] = (constructor, example input)`; every input is an int64 token batch (2, 8) except the ViT's
images (2, 3, 8, 8).
"""
from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from zoo_layers import EncoderBlock, TinyViT

VOCAB, SEQ = 50, 8


# ---- ViT: the layer zoo's TinyViT with two blocks ------------------------------------------------
class ViT(TinyViT):
    def __init__(self, hidden_size=16, num_classes=5):
        super().__init__(hidden_size, num_classes)
        self.encoder = nn.Sequential(EncoderBlock(hidden_size), EncoderBlock(hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, 5, hidden_size))

    def forward(self, pixel_values):
        embeddings = self.patch_embeddings(pixel_values)
        cls = self.cls_token.expand(embeddings.shape[0], -1, -1).to(embeddings.dtype)
        x = self.encoder(torch.cat([cls, embeddings], dim=1) + self.pos_embed)
        return self.classifier(self.layernorm(x)[:, 0])


# ---- BERT ----------------------------------------------------------------------------------------
def _split_heads(x, heads):
    b, t, d = x.shape
    return x.view(b, t, heads, d // heads).transpose(1, 2)


class BertLayer(nn.Module):
    """Hugging Face's BertSelfAttention: the forward reads num_attention_heads, attention_head_size
    and all_head_size."""

    def __init__(self, d, heads, inner):
        super().__init__()
        self.num_attention_heads, self.attention_head_size = heads, d // heads
        self.all_head_size = heads * self.attention_head_size
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.attention_output = nn.Linear(d, d)
        self.attention_norm = nn.LayerNorm(d, eps=1e-12)
        self.intermediate = nn.Linear(d, inner)
        self.output = nn.Linear(inner, d)
        self.output_norm = nn.LayerNorm(d, eps=1e-12)

    def transpose_for_scores(self, x):
        return x.view(x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)).permute(0, 2, 1, 3)

    def forward(self, x):
        q, k, v = (self.transpose_for_scores(f(x)) for f in (self.query, self.key, self.value))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.attention_head_size)
        context = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).contiguous()
        context = context.view(context.size()[:-2] + (self.all_head_size,))
        x = self.attention_norm(x + self.attention_output(context))
        return self.output_norm(x + self.output(F.gelu(self.intermediate(x))))


class Bert(nn.Module):
    def __init__(self, d=32, heads=2, layers=2, num_labels=3):
        super().__init__()
        self.word_embeddings = nn.Embedding(VOCAB, d, padding_idx=0)
        self.position_embeddings = nn.Embedding(SEQ, d)
        self.token_type_embeddings = nn.Embedding(2, d)
        self.embeddings_norm = nn.LayerNorm(d, eps=1e-12)
        self.layer = nn.ModuleList(BertLayer(d, heads, 2 * d) for _ in range(layers))
        self.pooler = nn.Linear(d, d)
        self.classifier = nn.Linear(d, num_labels)

    def forward(self, input_ids):
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = self.embeddings_norm(x + self.token_type_embeddings(torch.zeros_like(input_ids)))
        for layer in self.layer:
            x = layer(x)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


# ---- GPT-2 ---------------------------------------------------------------------------------------
class Conv1D(nn.Module):
    """Hugging Face's Conv1D: a Linear whose weight is stored (in, out) = (nx, nf)."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


def _causal_attention(q, k, v):
    t = q.shape[-2]
    mask = torch.ones(t, t, dtype=torch.bool, device=q.device).tril()
    scores = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~mask, float("-inf"))
    return scores.softmax(-1) @ v


class GPT2Block(nn.Module):
    """Hugging Face's GPT2Attention and GPT2MLP in one block: split(self.split_size), heads by
    num_heads and head_dim, merged by num_heads·head_dim; the MLP's GELU as its tanh formula."""

    def __init__(self, d, heads):
        super().__init__()
        self.num_heads, self.head_dim, self.split_size = heads, d // heads, d
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn, self.attn_proj = Conv1D(3 * d, d), Conv1D(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc, self.mlp_proj = Conv1D(4 * d, d), Conv1D(d, 4 * d)

    def forward(self, x):
        q, k, v = self.c_attn(self.ln_1(x)).split(self.split_size, dim=2)
        shape = x.size()[:-1] + (self.num_heads, self.head_dim)
        y = _causal_attention(*(t.view(shape).permute(0, 2, 1, 3) for t in (q, k, v)))
        y = y.permute(0, 2, 1, 3).contiguous()
        x = x + self.attn_proj(y.view(y.size()[:-2] + (self.num_heads * self.head_dim,)))
        h = self.c_fc(self.ln_2(x))
        h = 0.5 * h * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * torch.pow(h, 3.0))))
        return x + self.mlp_proj(h)


class GPT2(nn.Module):
    def __init__(self, d=16, heads=2, layers=2):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(VOCAB, d), nn.Embedding(SEQ, d)
        self.h = nn.ModuleList(GPT2Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, VOCAB, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, input_ids):
        x = self.wte(input_ids) + self.wpe(torch.arange(input_ids.shape[1], device=input_ids.device))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# ---- Llama ---------------------------------------------------------------------------------------
class LlamaRMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.variance_epsilon = eps

    def forward(self, x):
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.variance_epsilon))


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class LlamaRotaryEmbedding(nn.Module):
    def __init__(self, dim, base=10000.0):
        super().__init__()
        self.register_buffer("inv_freq", 1.0 / base ** (torch.arange(0, dim, 2).float() / dim), persistent=False)

    def forward(self, x, positions):
        freqs = positions[:, None].to(self.inv_freq.dtype) * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def _repeat_kv(x, n_rep):
    """Hugging Face's repeat_kv: (b, kv, t, d) → (b, kv·n_rep, t, d), KV head j serving query
    heads j·n_rep … (j+1)·n_rep − 1."""
    b, kv, t, d = x.shape
    if n_rep == 1:
        return x
    return x[:, :, None, :, :].expand(b, kv, n_rep, t, d).reshape(b, kv * n_rep, t, d)


class LlamaDecoderLayer(nn.Module):
    """Hugging Face's LlamaAttention (grouped-query: num_key_value_heads KV heads, the forward reads
    head_dim and num_key_value_groups, views with -1) and gated MLP, SDPA attention."""

    def __init__(self, d, heads, kv_heads, inner):
        super().__init__()
        self.head_dim, self.num_key_value_groups = d // heads, heads // kv_heads
        self.input_layernorm = LlamaRMSNorm(d)
        self.q_proj = nn.Linear(d, heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(d, kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(heads * self.head_dim, d, bias=False)
        self.rotary = LlamaRotaryEmbedding(self.head_dim)
        self.post_attention_layernorm = LlamaRMSNorm(d)
        self.gate_proj, self.up_proj = nn.Linear(d, inner, bias=False), nn.Linear(d, inner, bias=False)
        self.down_proj = nn.Linear(inner, d, bias=False)

    def forward(self, x):
        h = self.input_layernorm(x)
        shape = (*x.shape[:-1], -1, self.head_dim)
        q, k, v = (f(h).view(shape).transpose(1, 2) for f in (self.q_proj, self.k_proj, self.v_proj))
        cos, sin = self.rotary(x, torch.arange(x.shape[1], device=x.device))
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        k, v = _repeat_kv(k, self.num_key_value_groups), _repeat_kv(v, self.num_key_value_groups)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.o_proj(y.transpose(1, 2).reshape(*x.shape[:-1], -1))
        h = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class Llama(nn.Module):
    def __init__(self, d=32, heads=4, kv_heads=2, layers=2):
        super().__init__()
        self.embed_tokens = nn.Embedding(VOCAB, d)
        self.layers = nn.ModuleList(LlamaDecoderLayer(d, heads, kv_heads, 3 * d) for _ in range(layers))
        self.norm = LlamaRMSNorm(d)
        self.lm_head = nn.Linear(d, VOCAB, bias=False)

    def forward(self, input_ids):
        x = self.embed_tokens(input_ids)
        for layer in self.layers:
            x = layer(x)
        return self.lm_head(self.norm(x))


# ---- nn.TransformerEncoder -----------------------------------------------------------------------
class TorchEncoder(nn.Module):
    def __init__(self, d=16, heads=2, layers=2, num_classes=4):
        super().__init__()
        self.embedding = nn.Embedding(VOCAB, d)
        layer = nn.TransformerEncoderLayer(d, heads, 2 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, num_classes)

    def forward(self, input_ids):
        return self.head(self.encoder(self.embedding(input_ids)).mean(1))


# ---- nanoGPT -------------------------------------------------------------------------------------
class LayerNorm(nn.Module):
    """nanoGPT's LayerNorm with an optional bias."""

    def __init__(self, ndim, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class NanoBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = LayerNorm(d), LayerNorm(d)
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.c_fc, self.mlp_proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        q, k, v = self.c_attn(self.ln_1(x)).split(x.shape[-1], dim=2)
        y = _causal_attention(*(_split_heads(t, self.heads) for t in (q, k, v)))
        x = x + self.c_proj(y.transpose(1, 2).reshape(x.shape))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x))))


class NanoGPT(nn.Module):
    def __init__(self, d=16, heads=2, layers=2):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(wte=nn.Embedding(VOCAB, d), wpe=nn.Embedding(SEQ, d),
                                              h=nn.ModuleList(NanoBlock(d, heads) for _ in range(layers)),
                                              ln_f=LayerNorm(d)))
        self.lm_head = nn.Linear(d, VOCAB, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # nanoGPT ties this way round

    def forward(self, idx):
        t = self.transformer
        x = t.wte(idx) + t.wpe(torch.arange(idx.shape[1], device=idx.device))
        for block in t.h:
            x = block(x)
        return self.lm_head(t.ln_f(x))


# ---- initialisation ------------------------------------------------------------------------------
def is_norm_scale_module(module: nn.Module) -> bool:
    """LayerNorm, RMSNorm and GroupNorm layers, the libraries' own classes included."""
    return type(module).__name__.endswith(("LayerNorm", "RMSNorm", "GroupNorm"))


@torch.no_grad()
def library_init(model: nn.Module, std: float = 0.02) -> nn.Module:
    """What the libraries' `_init_weights` do: every weight of rank ≥ 2 (Linear, Conv1D, conv,
    embeddings, nn.MultiheadAttention's in_proj, cls/position parameters) N(0, std²), padding rows
    0, biases 0, norm scales 1 and shifts 0. In place; returns the model."""
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if is_norm_scale_module(module):
                p.fill_(1.0 if name == "weight" else 0.0)
            elif p.dim() >= 2 or name in ("cls_token", "pos_embed"):
                p.normal_(0.0, std)
            else:
                p.zero_()
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            module.weight[module.padding_idx] = 0
    return model


@torch.no_grad()
def pretrained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Checkpoint-like weights: every tensor of rank ≥ 2 ×U(3, 5) (one factor per tensor), norm
    scales γ·exp(N(0, 0.3²)) (spread around 1), every other 1-D tensor (biases, norm shifts)
    + N(0, 1) (GPT-2's attention biases reach several units). In place."""
    g = torch.Generator().manual_seed(seed)
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64).to(p.dtype)
            if p.dim() >= 2:
                p.mul_(3.0 + 2.0 * float(torch.rand((), generator=g, dtype=torch.float64)))
            elif is_norm_scale_module(module) and name == "weight":
                p.mul_(torch.exp(0.3 * noise))
            else:
                p.add_(noise)
    return model


ZOO = {
    "vit": (ViT, lambda: torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))),
    "bert": (Bert, None), "gpt2": (GPT2, None), "llama": (Llama, None),
    "torch_encoder": (TorchEncoder, None), "nanogpt": (NanoGPT, None),
}


def build(name: str, pretrained: bool = False, dtype=torch.float64, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """(model in eval mode, example input) of zoo entry `name`, library-initialised (and
    `pretrained_like` if asked), in `dtype`."""
    constructor, make_input = ZOO[name]
    torch.manual_seed(seed)
    model = library_init(constructor()).to(dtype).eval()
    if pretrained:
        pretrained_like(model, seed)
    if make_input is None:
        x = torch.randint(1, VOCAB, (2, SEQ), generator=torch.Generator().manual_seed(0))
    else:
        x = make_input().to(dtype)
    return model, x


def masked_by_plan(model: nn.Module, plan: dict) -> nn.Module:
    """A copy of `model` with every parameter slice outside a removal plan's kept indices ({name: {dim:
    kept}}, a recipe's "slices") zeroed: the independent truth a physically compressed model must equal."""
    masked = copy.deepcopy(model)
    params = dict(masked.named_parameters())
    with torch.no_grad():
        for name, dims in plan.items():
            for dim, kept in dims.items():
                drop = torch.ones(params[name].shape[dim], dtype=torch.bool)
                drop[kept] = False
                params[name].index_fill_(dim, torch.nonzero(drop).flatten(), 0.0)
    return masked
