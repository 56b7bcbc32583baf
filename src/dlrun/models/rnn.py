"""Recurrent networks: vanilla RNN, LSTM and GRU on one shared body.

Inputs: float sequences ``(N, T, F)``; token ids ``(N, T)`` (embedded first); images
``(N, C, H, W)`` read row by row, H steps of C*W features ("sequential digits").
Outputs: sequence -> vector (the last valid step's top-layer state, both directions when
bidirectional) through a small head, for classification, regression and forecasts;
per-step outputs ``(N, T, V)`` for language models.

Where the activation goes:
- ``RNN``: torch's recurrence supports only tanh and relu. When the activation is one of
  them the recurrence uses it; any other activation keeps tanh in the recurrence (the
  seeds: "RNNs do well with tanh") and is used in the head around the core. Applying
  e.g. a step or maxout inside the recurrence would need a hand-written, much slower loop.
- ``LSTM``/``GRU``: their gates are fixed by design (sigmoid gates, tanh candidates); the
  activation is used in the head around the core.
The head is ``Linear -> act -> Dropout -> Linear`` for every class.

Padded batches (``lengths``): a forward-only core runs over the padded batch and the state
at each sequence's last valid step is read (steps before it never see the padding); a
bidirectional core packs the batch, so its backward direction starts at the true end.

Truncated backpropagation through time (``tbptt_steps=k``) bounds the cost of long
sequences (the seeds' "limit backpropagation to a limited number of time steps"); the
forward values are exactly those of one pass. Windows are aligned so the steps that carry
the loss get a full ``k`` steps of gradient:
- sequence -> vector: the loss sits at each sequence's last valid step, so the state at
  ``length - k`` is computed without gradient and only the last ``k`` steps of every
  sequence are backpropagated through (with padded batches, each sequence its own k).
  Chunking from the start would leave the end a remainder: T=32, k=10 gave 2 steps.
- per-step outputs (language models): chunks of ``k`` counted back from the end, the state
  detached between them, so only the first chunk can be short.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from dlrun.data.spec import DataKind, DataSpec
from dlrun.errors import UserError
from dlrun.models.family import ModelFamily
from dlrun.nn.activations import ActFactory, resolve
from dlrun.nn.blocks import SequenceInput, dense, pool_steps, require_vocab
from dlrun.tasks import info

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]


def _detach(state: State) -> State:
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)  # type: ignore[return-value]
    return state.detach()


class _Recurrent(ModelFamily):
    """Input, recurrent core and head shared by the three cell types."""

    accepts = frozenset({DataKind.SEQUENCE, DataKind.TOKENS, DataKind.IMAGE})
    per_token = True
    tiny: ClassVar = {"hidden_size": 6, "num_layers": 2, "embed_dim": 4}
    name: ClassVar[str]
    cell: ClassVar[type[nn.RNNBase]]

    @classmethod
    def check_spec(cls, spec: DataSpec) -> None:
        if info(spec.task).per_token and spec.kind != DataKind.TOKENS:
            raise UserError(f"language modelling needs token data; {spec.name} is {spec.kind}")
        require_vocab(spec, cls.name)

    def __init__(
        self,
        spec: DataSpec,
        act: ActFactory | None = None,
        dropout: float = 0.0,
        hidden_size: int = 64,
        num_layers: int = 1,
        bidirectional: bool = False,
        embed_dim: int = 32,
        tbptt_steps: int | None = None,
    ) -> None:
        super().__init__()
        self.per_step = info(spec.task).per_token
        if bidirectional and self.per_step:
            raise UserError(
                f"model={self.name} with bidirectional=true would read the very tokens it "
                "must predict; language modelling needs bidirectional=false"
            )
        if bidirectional and tbptt_steps is not None:
            raise UserError(
                f"model={self.name}: tbptt_steps carries the state forward in time, which "
                "a bidirectional core cannot do; set bidirectional=false or tbptt_steps=null"
            )
        if tbptt_steps is not None and tbptt_steps < 1:
            raise UserError(f"model={self.name} needs tbptt_steps >= 1 or null, got {tbptt_steps}")
        act = resolve(act)
        self.tbptt_steps = tbptt_steps
        self.inputs = SequenceInput(spec, embed_dim)
        self.core = self.cell(
            **self._cell_options(act),
            input_size=self.inputs.features,
            hidden_size=hidden_size,
            num_layers=num_layers,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
            batch_first=True,
        )
        directions = 2 if bidirectional else 1
        self.head = nn.Sequential(
            dense(hidden_size * directions, hidden_size, act, dropout),
            nn.Linear(hidden_size, spec.n_outputs),
        )

    def _cell_options(self, act: ActFactory) -> dict[str, str]:
        """Extra arguments of ``cell``; gated cells take none (their gates are fixed)."""
        return {}

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        h = self.inputs(x)
        if self.per_step:
            return self.head(self._run(h, lengths))
        if self.tbptt_steps is not None and torch.is_grad_enabled():
            out, lengths = self._last_window(h, lengths, self.tbptt_steps)
        else:
            out = self._run(h, lengths)
        hidden = self.core.hidden_size
        summary = pool_steps(out[..., :hidden], lengths, "last")
        if self.core.bidirectional:  # the backward direction ends at step 0
            summary = torch.cat([summary, out[:, 0, hidden:]], dim=-1)
        return self.head(summary)

    def _run(self, h: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        """Top-layer outputs ``(N, T, D * hidden)`` of the core."""
        if lengths is not None and self.core.bidirectional:
            packed = pack_padded_sequence(h, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = self.core(packed)
            return pad_packed_sequence(out, batch_first=True, total_length=h.shape[1])[0]
        if self.tbptt_steps is None:
            return self.core(h)[0]
        steps, k = h.shape[1], self.tbptt_steps
        sizes = [steps % k] * (steps % k > 0) + [k] * (steps // k)  # full chunks at the end
        outs: list[torch.Tensor] = []
        state: State | None = None
        for chunk in h.split(sizes, dim=1):
            out, state = self.core(chunk, state)
            outs.append(out)
            state = _detach(state)
        return torch.cat(outs, dim=1)

    def _last_window(
        self, h: torch.Tensor, lengths: torch.Tensor | None, k: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Outputs over each sequence's last ``k`` valid steps, and their lengths.

        The state entering the window comes from a pass without gradient over the steps
        before it (packed to each sequence's own start when lengths differ).
        """
        steps = h.shape[1]
        if lengths is None:
            start = max(steps - k, 0)
            with torch.no_grad():
                state = self.core(h[:, :start])[1] if start else None
            return self.core(h[:, start:], state)[0], None
        ends = lengths.to(h.device).long().clamp(1, steps)
        starts = (ends - k).clamp(min=0)
        index = (starts.unsqueeze(1) + torch.arange(min(k, steps), device=h.device)).clamp(
            max=steps - 1
        )
        window = h.gather(1, index.unsqueeze(-1).expand(-1, -1, h.shape[-1]))
        return self.core(window, self._state_at(h, starts))[0], ends - starts

    @torch.no_grad()
    def _state_at(self, h: torch.Tensor, starts: torch.Tensor) -> State | None:
        """The core's state after ``starts[i]`` steps of sequence i (zeros where 0)."""
        if not bool(starts.any()):
            return None
        packed = pack_padded_sequence(
            h, starts.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        state = self.core(packed)[1]
        keep = (starts > 0).to(h.dtype).view(1, -1, 1)
        if isinstance(state, tuple):
            return tuple(s * keep for s in state)  # type: ignore[return-value]
        return state * keep


class RNN(_Recurrent):
    """Elman RNN; the recurrence uses the activation if it is tanh or relu, else tanh."""

    name = "rnn"
    cell = nn.RNN

    def _cell_options(self, act: ActFactory) -> dict[str, str]:
        self.recurrence = "relu" if type(act()) is nn.ReLU else "tanh"
        return {"nonlinearity": self.recurrence}


class LSTM(_Recurrent):
    """Long short-term memory: a gated cell state carries information over long spans."""

    name = "lstm"
    cell = nn.LSTM


class GRU(_Recurrent):
    """Gated recurrent unit: LSTM's gating with fewer parameters and no cell state."""

    name = "gru"
    cell = nn.GRU
