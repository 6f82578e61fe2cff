"""EHR sequence encoders (registry ``EHR_ENCODERS``): [B, T, 2F] (scaled values ‖ observed mask) → [B, H].

Every encoder is built as ``cls(input_dim, hidden_dim, dropout, seq_len=48)`` and exposes ``out_dim``.

* ``lstm`` (default) — one unidirectional LSTM layer over the hourly inputs, last hidden state; the EHR
  baseline of MedFuse (Hayat et al., "MedFuse: Multi-modal fusion with clinical time-series data and
  chest X-ray images", MLHC 2022), itself the LSTM baseline of Harutyunyan et al. 2019 (Sci. Data).
  Deviations: one layer with hidden size ``hidden_dim`` (default 64; MedFuse uses 256); inputs are
  median/IQR-scaled values plus observed-mask channels (the benchmark discretiser uses mean/std and
  one-hot categorical channels); dropout is applied to the final hidden state only.
* ``bilstm`` — one bidirectional LSTM layer (Schuster & Paliwal 1997; the first layer of the
  Harutyunyan et al. 2019 LSTM baseline and CareBench's ``lstm``), ``hidden_dim // 2`` units per
  direction; the output joins the forward direction's last state (after hour T) and the backward
  direction's last state (after reading back to hour 1), so it has the width of ``lstm`` (for an even ``hidden_dim``).
  Deviations: CareBench projects the input to 256 first and the joined states back to 256; here the
  raw 2F channels (scaled values ‖ observed mask, the mask is an input exactly as for ``lstm``) feed the
  LSTM and no projection follows; dropout on the joined state only.
* ``gru`` — the same as ``lstm`` with a GRU cell (Cho et al. 2014).
* ``transformer`` — linear projection to ``hidden_dim``, fixed sinusoidal positional encoding
  (Vaswani et al. 2017), one pre-norm encoder layer (4 heads when ``hidden_dim`` allows, feed-forward
  4×), mean pooling over the hours. CareBench uses a learned positional encoding and d = 256.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mmfair.core.registry import EHR_ENCODERS


class _RecurrentEncoder(nn.Module):
    rnn_class: type[nn.RNNBase] = nn.LSTM

    def __init__(self, input_dim: int, hidden_dim: int, dropout: float = 0.0, seq_len: int = 48) -> None:
        super().__init__()
        self.rnn = self.rnn_class(input_dim, hidden_dim, num_layers=1, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = hidden_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, state = self.rnn(x)
        last = state[0] if isinstance(state, tuple) else state  # [layers, B, H]
        return self.dropout(last[-1])


@EHR_ENCODERS.register("lstm", summary="unidirectional LSTM, last hidden state", paper="Hayat et al. 2022 (MedFuse)")
class LSTMEncoder(_RecurrentEncoder):
    rnn_class = nn.LSTM


@EHR_ENCODERS.register(
    "bilstm",
    summary="bidirectional LSTM, last forward ‖ last backward state",
    paper="Schuster & Paliwal 1997; Harutyunyan et al. 2019",
)
class BiLSTMEncoder(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int, dropout: float = 0.0, seq_len: int = 48) -> None:
        super().__init__()
        per_direction = max(1, hidden_dim // 2)
        self.rnn = nn.LSTM(input_dim, per_direction, num_layers=1, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = 2 * per_direction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, (h_n, _) = self.rnn(x)  # h_n: [2, B, H/2] — forward after the last hour, backward after the first
        return self.dropout(torch.cat([h_n[0], h_n[1]], dim=1))


@EHR_ENCODERS.register("gru", summary="unidirectional GRU, last hidden state", paper="Cho et al. 2014")
class GRUEncoder(_RecurrentEncoder):
    rnn_class = nn.GRU


def sinusoidal_positions(seq_len: int, dim: int) -> torch.Tensor:
    position = torch.arange(seq_len, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(seq_len, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)[:, : dim // 2]
    return table


@EHR_ENCODERS.register(
    "transformer", summary="1-layer Transformer encoder, sinusoidal positions, mean pooling", paper="Vaswani et al. 2017"
)
class TransformerEncoder(nn.Module):
    def __init__(self, input_dim: int, hidden_dim: int, dropout: float = 0.0, seq_len: int = 48) -> None:
        super().__init__()
        heads = 4 if hidden_dim % 4 == 0 else 1
        self.project = nn.Linear(input_dim, hidden_dim)
        self.register_buffer("positions", sinusoidal_positions(seq_len, hidden_dim), persistent=False)
        layer = nn.TransformerEncoderLayer(
            hidden_dim, heads, dim_feedforward=4 * hidden_dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_dim)
        self.out_dim = hidden_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.project(x) + self.positions[: x.shape[1]].to(x.dtype)
        return self.norm(self.encoder(h).mean(dim=1))


def build_ehr_encoder(name: str, input_dim: int, hidden_dim: int, dropout: float, seq_len: int = 48) -> nn.Module:
    return EHR_ENCODERS.get(name)(input_dim, hidden_dim, dropout, seq_len)
