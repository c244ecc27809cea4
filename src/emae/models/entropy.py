"""The pieces of a learned image codec: GDN and a learned factorized entropy model.

:class:`GDN` is the generalized divisive normalization of Ballé et al. (2016), the nonlinearity
of the codec's transforms (``inverse=True`` gives IGDN for the synthesis).

:class:`FactorizedDensity` is the "entropy bottleneck" of Ballé et al. (2018), appendix 6.1: one
learned, non-parametric density per latent channel, written as a small monotone network that
gives the cumulative distribution. During training a latent ``y`` is replaced by
``y + u``, ``u ~ U(-1/2, 1/2)``, and its rate is ``-log2(c(y + 1/2) - c(y - 1/2))`` bits.

For coding, :meth:`FactorizedDensity.update_tables` freezes the densities into fixed
probability tables (:attr:`FactorizedDensity.pmf`, a buffer saved with the weights): the
probabilities of the integers ``-R .. R`` per channel, plus the mass of everything beyond, which
codes an *escape* symbol followed by the value itself. The entropy coder
(:mod:`emae.compress.bitstream`) reads only these tables, so coding and decoding depend on the
integer symbols alone, never on floating point arithmetic done at coding time.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Symbols ``-RANGE .. RANGE`` have their own probability; others are escaped.
RANGE = 127
#: Probabilities are kept above this, so a likelihood never rounds to 0 (infinite bits).
LIKELIHOOD_FLOOR = 1e-9


class GDN(nn.Module):
    """Generalized divisive normalization: ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)``.

    ``inverse=True`` multiplies instead (IGDN). Shapes: ``(N, C, H, W) -> (N, C, H, W)``.
    ``beta`` and ``gamma`` are kept non-negative by learning their square roots.
    """

    def __init__(self, channels: int, *, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta_root = nn.Parameter(torch.ones(channels))
        self.gamma_root = nn.Parameter(math.sqrt(0.1) * torch.eye(channels))

    def forward(self, x: Tensor) -> Tensor:
        beta = self.beta_root.square() + 1e-6
        gamma = self.gamma_root.square()[:, :, None, None]
        norm = torch.sqrt(F.conv2d(x.square(), gamma, beta))
        return x * norm if self.inverse else x / norm


class FactorizedDensity(nn.Module):
    """A learned density per channel of a latent ``(N, C, h, w)``; its likelihoods and tables.

    Parameters
    ----------
    channels
        Latent channels ``C``.
    filters
        Widths of the hidden layers of each channel's cumulative network (the paper's
        ``(3, 3, 3)``).
    init_scale
        Initial spread of the densities, in latent units.

    Attributes
    ----------
    pmf : Tensor
        ``(C, 2 * RANGE + 2)`` float64 buffer: the probabilities of ``-RANGE .. RANGE`` and, last,
        of the escape symbol; all zeros until :meth:`update_tables`.
    """

    def __init__(
        self, channels: int, *, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0
    ) -> None:
        super().__init__()
        widths = (1, *filters, 1)
        scale = init_scale ** (1 / (len(widths) - 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(widths) - 1):
            init = math.log(math.expm1(1 / scale / widths[i + 1]))
            self.matrices.append(
                nn.Parameter(torch.full((channels, widths[i + 1], widths[i]), init))
            )
            self.biases.append(nn.Parameter(torch.rand(channels, widths[i + 1], 1) - 0.5))
            if i < len(widths) - 2:
                self.factors.append(nn.Parameter(torch.zeros(channels, widths[i + 1], 1)))
        self.register_buffer("pmf", torch.zeros(channels, 2 * RANGE + 2, dtype=torch.float64))

    @property
    def channels(self) -> int:
        return self.pmf.shape[0]

    def _logits_cumulative(self, x: Tensor) -> Tensor:
        """``(C, 1, n) -> (C, 1, n)``: logits of each channel's CDF at the values ``x``."""
        for i, (matrix, bias) in enumerate(zip(self.matrices, self.biases, strict=True)):
            x = torch.matmul(F.softplus(matrix).to(x.dtype), x) + bias.to(x.dtype)
            if i < len(self.factors):
                x = x + torch.tanh(self.factors[i]).to(x.dtype) * torch.tanh(x)
        return x

    def likelihood(self, y: Tensor) -> Tensor:
        """Probability of the unit interval around each value of ``y`` ``(N, C, h, w)``, under its
        channel's density: ``(N, C, h, w)`` float32, at least :data:`LIKELIHOOD_FLOOR`."""
        n, c, h, w = y.shape
        values = y.float().permute(1, 0, 2, 3).reshape(c, 1, -1)
        with torch.autocast(values.device.type, enabled=False):  # bf16 would ruin the tails
            lower = self._logits_cumulative(values - 0.5)
            upper = self._logits_cumulative(values + 0.5)
        # Subtract in the tail where the sigmoids are far from 1, for accuracy.
        sign = -torch.sign(lower + upper).detach()
        p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        p = p.clamp_min(LIKELIHOOD_FLOOR)
        return p.reshape(c, n, h, w).permute(1, 0, 2, 3)

    @torch.no_grad()
    def update_tables(self) -> None:
        """Freeze the densities into :attr:`pmf`, computed in float64."""
        edges = torch.arange(-RANGE - 0.5, RANGE + 1.0, 1.0, dtype=torch.float64)  # 2R + 2
        x = edges.to(self.pmf.device).expand(self.channels, 1, -1)
        x = self._logits_cumulative(x).cpu()
        cdf = torch.sigmoid(x[:, 0])  # (C, 2R + 2)
        inside = cdf[:, 1:] - cdf[:, :-1]  # (C, 2R + 1)
        tails = cdf[:, :1] + (1 - cdf[:, -1:])
        pmf = torch.cat([inside, tails], dim=1).clamp_min(LIKELIHOOD_FLOOR)
        self.pmf.copy_(pmf / pmf.sum(dim=1, keepdim=True))

    @property
    def has_tables(self) -> bool:
        """Whether :meth:`update_tables` has filled :attr:`pmf`."""
        return bool(self.pmf.sum() > 0)
