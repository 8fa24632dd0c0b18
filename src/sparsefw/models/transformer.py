"""Two small transformers written the way Hugging Face writes them: a ViT classifier and a GPT
character-level language model.

Both are pre-LN stacks of `Block`s whose attention (`SelfAttention`) has separate `query`, `key`,
`value` Linears and an output `dense`, and whose forward reads `num_attention_heads`,
`attention_head_size` and `all_head_size` from the module (as Hugging Face's BertSelfAttention and
ViTSelfAttention do) and attends with `F.scaled_dot_product_attention`. So
`sparsefw.compress.remove_filters(model, amount, x, coupled=True)` removes whole heads (patching
those counts) and FFN units, and the smaller model runs its own forward.

Initialisation is Hugging Face's `_init_weights`: Linear, Conv2d and Embedding weights and the
position embeddings N(0, 0.02²), biases 0, LayerNorm weight 1 and bias 0 (not PyTorch's defaults).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import positive_int

INIT_STD = 0.02


def _check_sizes(dim: int, depth: int, heads: int, mlp: int, head_size: int | None = None) -> None:
    for name, value in (("dim", dim), ("depth", depth), ("heads", heads), ("mlp", mlp)):
        positive_int(name, value)
    if head_size is not None:
        positive_int("head_size", head_size)
    if head_size is None and dim % heads:
        raise ValueError(f"dim must be a multiple of heads, got dim={dim!r}, heads={heads!r} (or give head_size)")


@torch.no_grad()
def init_weights(module: nn.Module) -> None:
    """Hugging Face's `_init_weights` for one module (use with `model.apply`)."""
    if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
        module.weight.normal_(0.0, INIT_STD)
        if getattr(module, "bias", None) is not None:
            module.bias.zero_()
    elif isinstance(module, nn.LayerNorm):
        module.weight.fill_(1.0)
        module.bias.zero_()


class SelfAttention(nn.Module):
    """Multi-head self-attention as Hugging Face writes it: `query`, `key`, `value` Linears, heads split
    by `num_attention_heads` × `attention_head_size`, merged to `all_head_size`, output `dense`; causal
    (`is_causal`) for a decoder. `head_size` defaults to dim // heads (Hugging Face's head_dim)."""

    def __init__(self, dim: int, heads: int, causal: bool = False, head_size: int | None = None):
        super().__init__()
        self.num_attention_heads, self.attention_head_size = heads, head_size or dim // heads
        self.all_head_size = heads * self.attention_head_size
        self.is_causal = causal
        self.query, self.key, self.value = (nn.Linear(dim, self.all_head_size) for _ in range(3))
        self.dense = nn.Linear(self.all_head_size, dim)

    def transpose_for_scores(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, all_head_size) → (B, heads, T, attention_head_size)."""
        return x.view(x.size()[:-1] + (self.num_attention_heads, self.attention_head_size)).permute(0, 2, 1, 3)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        q, k, v = (self.transpose_for_scores(f(hidden_states)) for f in (self.query, self.key, self.value))
        context = F.scaled_dot_product_attention(q, k, v, is_causal=self.is_causal)
        context = context.permute(0, 2, 1, 3).contiguous()
        return self.dense(context.view(context.size()[:-2] + (self.all_head_size,)))


class Block(nn.Module):
    """Pre-LN transformer block (Hugging Face's ViTLayer): x + attention(LN(x)), then
    x + output(GELU(intermediate(LN(x))))."""

    def __init__(self, dim: int, heads: int, mlp: int, causal: bool = False, head_size: int | None = None):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads, causal, head_size)
        self.layernorm_after = nn.LayerNorm(dim)
        self.intermediate = nn.Linear(dim, mlp)
        self.output = nn.Linear(mlp, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.layernorm_before(x))
        return x + self.output(F.gelu(self.intermediate(self.layernorm_after(x))))


class ViT(nn.Module):
    """Vision transformer classifier: Conv2d patch embedding (kernel = stride = `patch`; `image_size`
    a multiple of `patch`), learned position embedding, `depth` blocks, final LayerNorm, mean pool
    over the (image_size/patch)² tokens, Linear head. Fashion-MNIST 28×28: 16 tokens of 7×7 patches."""

    def __init__(self, num_classes: int, in_channels: int, image_size: int, patch: int = 7, dim: int = 64,
                 depth: int = 2, heads: int = 4, mlp: int = 128):
        super().__init__()
        _check_sizes(dim, depth, heads, mlp)
        positive_int("patch", patch)
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < patch or image_size % patch:
            raise ValueError(f"image_size must be a multiple of patch={patch}, got image_size={image_size!r}")
        self.patch_embeddings = nn.Conv2d(in_channels, dim, patch, stride=patch)
        self.position_embeddings = nn.Parameter(torch.empty(1, (image_size // patch) ** 2, dim))
        self.layer = nn.ModuleList(Block(dim, heads, mlp) for _ in range(depth))
        self.layernorm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)
        self.apply(init_weights)
        nn.init.normal_(self.position_embeddings, 0.0, INIT_STD)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.patch_embeddings(pixel_values).flatten(2).transpose(1, 2) + self.position_embeddings
        for block in self.layer:
            x = block(x)
        return self.classifier(self.layernorm(x).mean(1))


class GPT(nn.Module):
    """Decoder-only language model: token (`wte`) + learned position (`wpe`) embeddings, `depth` causal
    blocks, final LayerNorm `ln_f`, `lm_head` without bias tied to `wte` (one Parameter). Input (B, T)
    int64 token ids with T ≤ `context`; output logits (B, T, vocab). `head_size`: each head's size
    (default dim // heads; another makes the attention width heads · head_size ≠ dim)."""

    def __init__(self, vocab: int, context: int, dim: int = 64, depth: int = 2, heads: int = 4, mlp: int = 256,
                 head_size: int | None = None):
        super().__init__()
        _check_sizes(dim, depth, heads, mlp, head_size)
        positive_int("vocab", vocab)
        positive_int("context", context)
        self.wte, self.wpe = nn.Embedding(vocab, dim), nn.Embedding(context, dim)
        self.h = nn.ModuleList(Block(dim, heads, mlp, causal=True, head_size=head_size) for _ in range(depth))
        self.ln_f = nn.LayerNorm(dim)
        self.lm_head = nn.Linear(dim, vocab, bias=False)
        self.apply(init_weights)
        self.lm_head.weight = self.wte.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(positions)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))
