"""nn.MultiheadAttention with a forward that reads its head count.

torch's `F.multi_head_attention_forward` derives head_dim = embed_dim // num_heads from the
query's width and views q as (L, N·H, d), so its heads cannot shrink while the residual stream
keeps its width, and its graph merges heads into the batch dim. `HeadedMultiheadAttention` is the
same module (same parameters, attributes and state_dict keys; an `nn.MultiheadAttention`) whose
forward computes the same function head by head:

    q, k, v = x·W_qᵀ + b_q, …   with W_q = in_proj_weight[0 : H·d], W_k = [H·d : 2H·d], W_v = [2H·d : 3H·d]
    head h:  softmax(q_h k_hᵀ / √d + mask) v_h          (scaled_dot_product_attention)
    out = concat_h(head h) · W_oᵀ + b_o

with H = num_heads and d = head_dim read on every call. The channel analysis captures models with
it in place of every nn.MultiheadAttention it supports (no bias_k/bias_v, no add_zero_attn), and
coupled removal puts it in place of every one that loses heads (num_heads patched, head_dim kept;
`_qkv_same_embed_dim` is then False, which turns off nn.TransformerEncoderLayer's fused fast path).
A 3-D attn_mask holds one mask per head: it must have the current head count.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class HeadedMultiheadAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention computed head by head from `num_heads` and `head_dim`."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = None if key_padding_mask is None else key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        q, k, v = self._heads(query, key, value)
        mask = _additive_mask(attn_mask, key_padding_mask, q)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            weights = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
            weights = (weights if mask is None else weights + mask).softmax(-1)
            out = F.dropout(weights, dropout) @ v
            weights = weights.mean(1) if average_attn_weights else weights
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                 is_causal=is_causal and mask is None)
        out = F.linear(out.transpose(1, 2).reshape(query.shape[0], query.shape[1], -1),
                       self.out_proj.weight, self.out_proj.bias)
        if unbatched:
            return out.squeeze(0), None if weights is None else weights.squeeze(0)
        return (out if self.batch_first else out.transpose(0, 1)), weights

    def _heads(self, query, key, value):
        """q, k, v of shape (N, H, L, d) from (N, L, E) inputs."""
        width = self.num_heads * self.head_dim
        if self.in_proj_weight is not None:
            w = self.in_proj_weight
            ws = (w[:width], w[width:2 * width], w[2 * width:3 * width])
        else:
            ws = (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight)
        b = self.in_proj_bias
        bs = (None,) * 3 if b is None else (b[:width], b[width:2 * width], b[2 * width:3 * width])
        return tuple(F.linear(x, w, bias).view(*x.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)
                     for x, w, bias in zip((query, key, value), ws, bs))


def _additive_mask(attn_mask, key_padding_mask, q):
    """One float mask to add to the scores (−inf where a bool mask forbids), broadcastable to
    (N, H, L, S); None if there is none."""
    mask = None
    for m, shape in ((attn_mask, None), (key_padding_mask, (q.shape[0], 1, 1, -1))):
        if m is None:
            continue
        if m.dtype == torch.bool:
            m = torch.zeros(m.shape, dtype=q.dtype, device=q.device).masked_fill(m, float("-inf"))
        m = m.to(q.dtype)
        if shape is not None:
            m = m.view(shape)
        elif m.dim() == 3:
            m = m.view(q.shape[0], q.shape[1], *m.shape[1:])
        mask = m if mask is None else mask + m
    return mask


def supports_heads(module: nn.Module) -> bool:
    """An nn.MultiheadAttention that `HeadedMultiheadAttention` computes exactly."""
    return (isinstance(module, nn.MultiheadAttention) and module.bias_k is None
            and module.bias_v is None and not module.add_zero_attn)


def with_headed_attention(model: nn.Module) -> nn.Module:
    """`model` (in place) with every supported nn.MultiheadAttention computed head by head."""
    for module in model.modules():
        if supports_heads(module) and type(module) is nn.MultiheadAttention:
            module.__class__ = HeadedMultiheadAttention
    return model
