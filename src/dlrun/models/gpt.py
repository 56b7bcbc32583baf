"""A GPT decoder in the shape of nanoGPT: token + position in, causal blocks, logits out.

- Input: token embedding + positional encoding (``learned`` table, as GPT-2, or the fixed
  ``sinusoidal`` one of "Attention is all you need"), then dropout.
- Blocks, pre-norm: ``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``. Attention is masked
  multi-head self-attention (each token sees only itself and earlier tokens) through
  ``F.scaled_dot_product_attention(is_causal=True)``; the MLP is ``Linear -> act ->
  Linear`` with the run's activation (GPT-2 uses gelu, the gpt experiments' default).
- Output: final LayerNorm, then
  - ``language_model``: per-token logits ``(N, T, V)`` from a head that shares its weights
    with the token embedding (weight tying: the seeds' "output vector multiplied back into
    the embedding matrix");
  - any vector task (classification, regression): one vector per sequence, the last token
    (the only one that has seen the whole sequence under the causal mask) or the mean of
    all tokens (``pool``), through a linear head.
Padded batches (``lengths``, right padding) need no attention mask: causality already keeps
padding out of every valid position, and pooling reads only valid positions.
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from dlrun.data.spec import DataKind, DataSpec
from dlrun.errors import UserError
from dlrun.models.family import ModelFamily
from dlrun.nn.activations import ActFactory, resolve
from dlrun.nn.blocks import dense, pool_steps, require_choice, require_vocab
from dlrun.tasks import info

INIT_STD = 0.02  # GPT-2's weight init


def sinusoidal_table(steps: int, dim: int, rms: float = 1 / math.sqrt(2)) -> torch.Tensor:
    """``(steps, dim)`` fixed encodings: sin/cos pairs at geometrically spaced frequencies.

    Scaled to root-mean-square ``rms`` (unscaled sin/cos pairs have 1/sqrt(2)).
    """
    position = torch.arange(steps, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(steps, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return table * (rms * math.sqrt(2))


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees only itself and earlier ones."""

    def __init__(self, n_embd: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd)
        self.proj = nn.Linear(n_embd, n_embd)
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, c = x.shape
        q, k, v = self.qkv(x).split(c, dim=2)
        # (N, T, C) -> (N, heads, T, C / heads)
        q, k, v = (z.view(n, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(n, t, c)))


class Block(nn.Module):
    """Pre-norm transformer block: attention, then the MLP, each added to the stream."""

    def __init__(self, n_embd: int, n_head: int, act: ActFactory, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout)
        self.ln2 = nn.LayerNorm(n_embd)
        self.mlp = nn.Sequential(
            dense(n_embd, 4 * n_embd, act), nn.Linear(4 * n_embd, n_embd), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(ModelFamily):
    accepts = frozenset({DataKind.TOKENS})
    per_token = True
    tiny: ClassVar = {"n_layer": 1, "n_head": 2, "n_embd": 8, "block_size": 16}

    @staticmethod
    def check_spec(spec: DataSpec) -> None:
        require_vocab(spec, "gpt")

    def __init__(
        self,
        spec: DataSpec,
        act: ActFactory | None = None,
        dropout: float = 0.0,
        n_layer: int = 4,
        n_head: int = 4,
        n_embd: int = 128,
        block_size: int = 64,
        pos_encoding: Literal["learned", "sinusoidal"] = "learned",
        pool: Literal["last", "mean"] = "last",
    ) -> None:
        super().__init__()
        steps = spec.input_shape[0]
        if steps > block_size:
            raise UserError(
                f"model=gpt has block_size={block_size} but {spec.name} has sequences of "
                f"{steps} tokens; set model.block_size={steps} or use shorter sequences"
            )
        if n_embd % n_head:
            raise UserError(f"model=gpt needs n_embd ({n_embd}) divisible by n_head ({n_head})")
        require_choice("gpt", "pos_encoding", pos_encoding, ("learned", "sinusoidal"))
        require_choice("gpt", "pool", pool, ("last", "mean"))
        act = resolve(act)
        self.block_size = block_size
        self.pool = pool
        self.is_lm = info(spec.task).per_token
        self.wte = nn.Embedding(spec.vocab_size, n_embd)
        self.wpe: nn.Embedding | None = None
        if pos_encoding == "learned":
            self.wpe = nn.Embedding(block_size, n_embd)
        else:
            # At the scale of the token embeddings (std 0.02): unscaled, the fixed table is
            # 35x larger and drowns the tokens at the start (the original paper multiplied
            # its embeddings by sqrt(d) instead; that would fight GPT-2's init).
            table = sinusoidal_table(block_size, n_embd, rms=INIT_STD)
            self.register_buffer("table", table, persistent=False)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, act, dropout) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd)
        outputs = spec.vocab_size if self.is_lm else spec.n_outputs
        self.head = nn.Linear(n_embd, outputs, bias=not self.is_lm)
        self.apply(self._init_weights)
        for block in self.blocks:  # GPT-2: residual projections scaled by depth
            for weight in (block.attn.proj.weight, block.mlp[1].weight):
                nn.init.normal_(weight, mean=0.0, std=INIT_STD / math.sqrt(2 * n_layer))
        if self.is_lm:
            self.head.weight = self.wte.weight  # tied after init: one matrix, both roles

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=INIT_STD)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        steps = idx.shape[1]
        if steps > self.block_size:
            raise ValueError(f"sequence of {steps} tokens exceeds block_size {self.block_size}")
        pos = torch.arange(steps, device=idx.device)
        position = self.wpe(pos) if self.wpe is not None else self.table[:steps]
        x = self.drop(self.wte(idx) + position)
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        if self.is_lm:
            return self.head(x)
        return self.head(pool_steps(x, lengths, self.pool))

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Extend ``idx`` ``(N, T)`` by ``max_new_tokens`` sampled tokens.

        The context is cropped to the last ``block_size`` tokens. ``temperature`` 0 means
        greedy (argmax, deterministic); otherwise logits are divided by it, optionally cut
        to the ``top_k`` most likely tokens, and sampled (from ``generator`` if given).
        Runs in eval mode (no dropout) and restores the previous mode afterwards.
        """
        if not self.is_lm:
            raise UserError("generate needs a gpt trained as a language model")
        was_training = self.training
        self.eval()
        try:
            for _ in range(max_new_tokens):
                idx = torch.cat([idx, self._next_token(idx, temperature, top_k, generator)], 1)
        finally:
            self.train(was_training)
        return idx

    def _next_token(
        self,
        idx: torch.Tensor,
        temperature: float,
        top_k: int | None,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        logits = self(idx[:, -self.block_size :])[:, -1, :]
        if temperature == 0:
            return logits.argmax(dim=-1, keepdim=True)
        logits = logits / temperature
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, [-1]]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
