"""Spatio-temporal blocks that replace a Conv3d using only 4D tensors and 2D convs inside.

Every block takes and returns the usual clip ``(B, C, T, H, W)``; inside it works on frames
``(B·T, C, H, W)`` and on the time layout ``(B, C, T, H·W)``. No block has a nonlinearity
inside: each is a (multi)linear factorisation of the kernel it replaces, so its weights can be
fitted to that kernel in closed form (see ``calibrate.py``), and the model's own norms and
activations stay where they were.

Each block also says how to fit it: ``stages`` gives the convs whose weights a least-squares
solve sets, with their input features at the output positions, and what the rest of the block
adds (``fixed``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layout import clip_to_time, frames_to_time, subsample_pixels, time_to_clip, time_to_frames
from .names import STRIDE_MODES


@dataclass(frozen=True)
class Geometry:
    """What a block must reproduce of the Conv3d it replaces."""

    cin: int
    cout: int
    kernel: tuple[int, int, int]
    stride: tuple[int, int, int]
    padding: tuple[int, int, int]

    @classmethod
    def of(cls, conv: nn.Conv3d) -> Geometry:
        return cls(conv.in_channels, conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride),
                   tuple(conv.padding))

    def out_size(self, t: int, h: int, w: int) -> tuple[int, int, int]:
        return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip((t, h, w), self.kernel, self.stride, self.padding))


@dataclass
class Stage:
    """A conv whose weights the least-squares fit sets, and its features (D, N) at the N
    output positions (B, T', H'·W'), D = its fan-in (+1 for a bias)."""

    conv: nn.Conv2d
    features: torch.Tensor


class Block(nn.Module):
    name = ""

    def __init__(self, geo: Geometry, stride_mode: str = "aligned"):
        super().__init__()
        if stride_mode not in STRIDE_MODES:
            raise ValueError(f"stride_mode must be one of {STRIDE_MODES}")
        self.geo = geo
        self.stride_mode = stride_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, t, h, w = x.shape
        _, h2, w2 = self.geo.out_size(t, h, w)
        return time_to_clip(self.forward_time(clip_to_time(x), b, h, w), h2, w2)

    def forward_time(self, x: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
        """(B, C, T, H·W) → (B, S, T', H'·W')."""
        raise NotImplementedError

    def project_(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        """Set the weights straight from the 3D kernel (no data)."""
        raise NotImplementedError

    def stages(self, x: torch.Tensor, b: int, h: int, w: int) -> tuple[list[Stage], torch.Tensor | None]:
        raise NotImplementedError

    # -- shared pieces -------------------------------------------------------------------------
    def _spatial(self, cin, cout, groups=1, bias=False):
        (_, kh, kw), (_, sh, sw), (_, ph, pw) = self.geo.kernel, self.geo.stride, self.geo.padding
        return nn.Conv2d(cin, cout, (kh, kw), (sh, sw), (ph, pw), groups=groups, bias=bias)

    def _temporal(self, cin, cout, bias=False, pixel_stride=1):
        kt, st, pt = self.geo.kernel[0], self.geo.stride[0], self.geo.padding[0]
        return nn.Conv2d(cin, cout, (kt, 1), (st, pixel_stride), (pt, 0), bias=bias)


def _time_taps(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """im2col of a (k, 1) conv on the time layout: (B, C·k, T', L')."""
    cols = F.unfold(x, conv.kernel_size, padding=conv.padding, stride=conv.stride)
    t_out = (x.shape[2] + 2 * conv.padding[0] - conv.kernel_size[0]) // conv.stride[0] + 1
    return cols.reshape(x.shape[0], cols.shape[1], t_out, -1)


def _frame_taps(conv: nn.Conv2d, frames: torch.Tensor, b: int) -> torch.Tensor:
    """im2col of a 2D conv on frames, back in time layout order: (B, C·kh·kw, T, H'·W')."""
    cols = F.unfold(frames, conv.kernel_size, padding=conv.padding, stride=conv.stride)
    return cols.reshape(b, -1, cols.shape[1], cols.shape[2]).transpose(1, 2)


def _columns(taps: torch.Tensor, bias: bool) -> torch.Tensor:
    """(B, D, T', L) → (D[+1], B·T'·L) in the output's position order."""
    d = taps.shape[1]
    cols = taps.transpose(0, 1).reshape(d, -1)
    return torch.cat([cols, torch.ones_like(cols[:1])]) if bias else cols


class SpatioTemporal(Block):
    """The paper's Proposed-Add / Proposed-Cat: a spatial and a temporal branch, added or concatenated.

    spatial: ``Conv2d(C→S, kh×kw, stride s)`` on frames, T subsampled by st;
    temporal: ``Conv2d(C→S, (kt, 1))`` on ``(B, C, T, H·W)`` with stride ``(st, sh·sw)``
    (``paper``: the flattened-axis stride keeps the right number of pixels, not the right
    ones) or stride ``(st, 1)`` and then pixels ``[::sh, ::sw]`` of each frame (``aligned``).
    """

    name = "st-add"

    def __init__(self, geo: Geometry, stride_mode: str = "aligned"):
        super().__init__(geo, stride_mode)
        sh, sw = geo.stride[1:]
        if stride_mode == "paper" and sh != sw:
            raise ValueError("the paper's (s, s²) stride needs equal spatial strides")
        self.spatial = self._spatial(geo.cin, geo.cout, bias=True)
        self.temporal = self._temporal(geo.cin, geo.cout, pixel_stride=sh * sw if stride_mode == "paper" else 1)

    def branches(self, x, b, h, w):
        st, sh, sw = self.geo.stride
        sp = frames_to_time(self.spatial(time_to_frames(x[:, :, ::st], h, w)), b)
        tp = self.temporal(x)
        if self.stride_mode == "aligned":
            tp = subsample_pixels(tp, h, w, sh, sw)
        if tp.shape != sp.shape:
            raise ValueError(f"the branches disagree: spatial {tuple(sp.shape)}, temporal {tuple(tp.shape)} "
                             f"({self.stride_mode} stride on a {h}x{w} frame)")
        return sp, tp

    def forward_time(self, x, b, h, w):
        sp, tp = self.branches(x, b, h, w)
        return sp + tp

    def project_(self, weight, bias):
        kt, kh, kw = self.geo.kernel
        with torch.no_grad():
            self.spatial.weight.copy_(weight[:, :, kt // 2])
            temporal = weight[:, :, :, kh // 2, kw // 2].clone()
            temporal[:, :, kt // 2] = 0  # the centre tap is already in the spatial kernel
            self.temporal.weight.copy_(temporal[..., None])
            self.spatial.bias.copy_(bias if bias is not None else torch.zeros_like(self.spatial.bias))

    def stages(self, x, b, h, w):
        st, sh, sw = self.geo.stride
        spatial = _frame_taps(self.spatial, time_to_frames(x[:, :, ::st], h, w), b)
        temporal = _time_taps(self.temporal, x)
        if self.stride_mode == "aligned":
            t_out = temporal.shape[2]
            temporal = subsample_pixels(temporal.reshape(b, -1, t_out, h * w), h, w, sh, sw)
        return [Stage(self.spatial, _columns(spatial, True)), Stage(self.temporal, _columns(temporal, False))], None


class SpatioTemporalCat(SpatioTemporal):
    """Proposed-Cat as a drop-in: both branches keep S channels, are concatenated to 2S and a
    1×1 conv fuses them back to S, so the next layer sees the channels it was built for. The
    fuse starts as [I | I], where the block equals Proposed-Add: calibration fits the branches
    there, and fine-tuning can then learn the fuse."""

    name = "st-cat"

    def __init__(self, geo: Geometry, stride_mode: str = "aligned"):
        super().__init__(geo, stride_mode)
        self.fuse = nn.Conv2d(2 * geo.cout, geo.cout, 1, bias=False)
        with torch.no_grad():
            eye = torch.eye(geo.cout)
            self.fuse.weight.copy_(torch.cat([eye, eye], 1)[..., None, None])

    def forward_time(self, x, b, h, w):
        return self.fuse(torch.cat(self.branches(x, b, h, w), 1))


class Factorised(Block):
    """Spatial ``(1, kh, kw)`` conv C→M on frames, then temporal ``(kt, 1, 1)`` conv M→S on the
    time layout: R(2+1)D (M chosen to match the Conv3d's parameter count) and P3D-A (M = S)."""

    name = "r2plus1d"
    residual = False  # P3D-C adds the spatial output to the temporal one

    def __init__(self, geo: Geometry, stride_mode: str = "aligned", mid: int | None = None):
        super().__init__(geo, stride_mode)
        kt, kh, kw = geo.kernel
        if mid is None:
            mid = max(1, (kt * kh * kw * geo.cin * geo.cout) // (kh * kw * geo.cin + kt * geo.cout))
        self.mid = mid
        self.spatial = self._spatial(geo.cin, mid)
        self.temporal = self._temporal(mid, geo.cout, bias=True)

    def middle(self, x, b, h, w):
        return frames_to_time(self.spatial(time_to_frames(x, h, w)), b)

    def forward_time(self, x, b, h, w):
        m = self.middle(x, b, h, w)
        y = self.temporal(m)
        return y + m[:, :, :: self.geo.stride[0]] if self.residual else y

    def project_(self, weight, bias):
        """Best rank-M split of the kernel, (S·kt) × (C·kh·kw), by SVD."""
        s, c, kt, kh, kw = weight.shape
        matrix = weight.permute(0, 2, 1, 3, 4).reshape(s * kt, c * kh * kw).double()
        u, sigma, vh = torch.linalg.svd(matrix, full_matrices=False)
        m = self.mid
        rank = min(m, sigma.numel())
        root = sigma[:rank].sqrt()
        temporal = torch.zeros(s * kt, m, dtype=torch.float64)
        temporal[:, :rank] = u[:, :rank] * root
        spatial = torch.zeros(m, c * kh * kw, dtype=torch.float64)
        spatial[:rank] = root[:, None] * vh[:rank]
        temporal = temporal.reshape(s, kt, m).permute(0, 2, 1)  # (S, M, kt)
        if self.residual:  # W ≈ (δ + T)∘S: take the identity at the centre tap out of T
            temporal[:, :, kt // 2] -= torch.eye(s, m, dtype=torch.float64)
        with torch.no_grad():
            self.spatial.weight.copy_(spatial.reshape(m, c, kh, kw))
            self.temporal.weight.copy_(temporal[..., None])
            self.temporal.bias.copy_(bias if bias is not None else torch.zeros_like(self.temporal.bias))

    def stages(self, x, b, h, w):
        m = self.middle(x, b, h, w)
        fixed = m[:, :, :: self.geo.stride[0]] if self.residual else None
        return [Stage(self.temporal, _columns(_time_taps(self.temporal, m), True))], fixed


class P3DA(Factorised):
    name = "p3d-a"

    def __init__(self, geo, stride_mode="aligned"):
        super().__init__(geo, stride_mode, mid=geo.cout)


class P3DC(P3DA):
    """P3D-C: y = S(x) + T(S(x))."""

    name = "p3d-c"
    residual = True


class P3DB(SpatioTemporal):
    """P3D-B: S(x) + T(x) in parallel — the aligned Proposed-Add: the paper's block differs from
    it by its 4D layout and its (s, s²) stride, not by its arithmetic."""

    name = "p3d-b"

    def __init__(self, geo, stride_mode="aligned"):
        super().__init__(geo, "aligned")


class Rank1(Block):
    """Three 1D convs: along W and H on frames (C→S, S→S), then along T on the time layout."""

    name = "rank1"

    def __init__(self, geo, stride_mode="aligned"):
        super().__init__(geo, stride_mode)
        (_, kh, kw), (_, sh, sw), (_, ph, pw) = geo.kernel, geo.stride, geo.padding
        s = geo.cout
        self.along_w = nn.Conv2d(geo.cin, s, (1, kw), (1, sw), (0, pw), bias=False)
        self.along_h = nn.Conv2d(s, s, (kh, 1), (sh, 1), (ph, 0), bias=False)
        self.temporal = self._temporal(s, s, bias=True)

    def middle(self, x, b, h, w):
        return frames_to_time(self.along_h(self.along_w(time_to_frames(x, h, w))), b)

    def forward_time(self, x, b, h, w):
        return self.temporal(self.middle(x, b, h, w))

    def project_(self, weight, bias, iterations: int = 20):
        """Per output channel, the best rank-1 split (C·kw) ⊗ kh ⊗ kt by power iteration."""
        s, c, kt, kh, kw = weight.shape
        wmat = weight.double().permute(0, 1, 4, 3, 2).reshape(s, c * kw, kh, kt)
        a = wmat[:, :, kh // 2, kt // 2].clone()
        v = torch.ones(s, kh, dtype=torch.float64)
        z = torch.ones(s, kt, dtype=torch.float64)
        for _ in range(iterations):
            v = torch.einsum("sahk,sa,sk->sh", wmat, a, z)
            v = v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)
            z = torch.einsum("sahk,sa,sh->sk", wmat, a, v)
            z = z / z.norm(dim=1, keepdim=True).clamp_min(1e-12)
            a = torch.einsum("sahk,sh,sk->sa", wmat, v, z)
        with torch.no_grad():
            self.along_w.weight.copy_(a.reshape(s, c, 1, kw))
            self.along_h.weight.zero_()
            self.temporal.weight.zero_()
            idx = torch.arange(s)
            self.along_h.weight[idx, idx, :, 0] = v.float()
            self.temporal.weight[idx, idx, :, 0] = z.float()
            self.temporal.bias.copy_(bias if bias is not None else torch.zeros_like(self.temporal.bias))

    def stages(self, x, b, h, w):
        m = self.middle(x, b, h, w)
        return [Stage(self.temporal, _columns(_time_taps(self.temporal, m), True))], None


class FullySeparable(Block):
    """The fully separable block: temporal ``(kt, 1, 1)`` C→S, depthwise spatial ``(1, kh, kw)``,
    pointwise S→S (expansion rate 1, the final FSB variant of its paper)."""

    name = "fsb"

    def __init__(self, geo, stride_mode="aligned"):
        super().__init__(geo, stride_mode)
        s = geo.cout
        self.temporal = self._temporal(geo.cin, s)
        self.depthwise = self._spatial(s, s, groups=s)
        self.pointwise = nn.Conv2d(s, s, 1, bias=True)

    def middle(self, x, b, h, w):
        y = self.temporal(x)
        return frames_to_time(self.depthwise(time_to_frames(y, h, w)), b)

    def forward_time(self, x, b, h, w):
        return self.pointwise(self.middle(x, b, h, w))

    def project_(self, weight, bias):
        """Per output channel, the best rank-1 split (C·kt) ⊗ (kh·kw); the pointwise conv starts
        as the identity."""
        s, c, kt, kh, kw = weight.shape
        matrix = weight.double().reshape(s, c * kt, kh * kw)
        u, sigma, vh = torch.linalg.svd(matrix, full_matrices=False)
        with torch.no_grad():
            self.temporal.weight.copy_((u[:, :, 0] * sigma[:, :1]).reshape(s, c, kt, 1))
            self.depthwise.weight.copy_(vh[:, 0].reshape(s, 1, kh, kw))
            self.pointwise.weight.copy_(torch.eye(s)[..., None, None])
            self.pointwise.bias.copy_(bias if bias is not None else torch.zeros_like(self.pointwise.bias))

    def stages(self, x, b, h, w):
        m = self.middle(x, b, h, w)
        return [Stage(self.pointwise, _columns(m, True))], None


BLOCKS: dict[str, type[Block]] = {cls.name: cls for cls in (
    SpatioTemporal, SpatioTemporalCat, Factorised, P3DA, P3DB, P3DC, Rank1, FullySeparable)}
