"""BoT's transform: a discrete wavelet transform per axis, in torch, so materializing runs on any device.

**The learngene** of a gene is the approximation of every resizable axis at level ``L``: ``L`` low-pass-and-halve
steps, the other axes (vocabularies) untouched. Level 0 stores the standardized weights themselves, so
materializing at the source size reproduces the source exactly. Because the filters are separable, applying the
1-D steps axis by axis gives the same approximation as ``pywt.wavedecn`` over all those axes (BoT's 3-D DWT over
depth x out x in, generalized to every axis role).

**Level and keep.** ``level`` (``--level N``) overrides ``--keep``: every resizable axis is decomposed ``N`` times
(an axis stops early once a step no longer shortens it, e.g. at length 1). Without a level, each axis takes the
deepest level whose approximation still has at least the ``keep`` coefficients the keep ratio asks for, so
``--keep 1`` is level 0, ``--keep 0.5`` level 1 and ``--keep 0.25`` level 2, and per-role ratios
(``hidden=0.5,depth=1``) give per-role levels.

**Magnitudes.** An orthonormal low-pass step multiplies a constant signal by ``sum(dec_lo)`` (sqrt 2), and an
inverse step with zero details by ``sum(rec_lo) / 2``. Every operator here divides that gain out, so a stored
approximation is a smaller copy of the signal on the signal's own scale (for haar: pairwise means) and any resize
keeps a constant constant. The pipeline then restores each layer's mean and std anyway.

**Resizing** (:func:`resize_operator`, the ``wavelet`` strategy in :mod:`zoo_plugins.strategies.wavelet`): between
the smaller size ``s`` and the larger ``b``, take the most whole wavelet steps that fit (``k`` with
``up^k(s) <= b``; one step doubles a periodized length), and bridge the rest with an amplitude-preserving
orthonormal DCT crop or zero-pad on the large side. Growing = ``k`` inverse steps with zero details, then DCT pad;
shrinking = DCT crop, then ``k`` approximation steps. So dyadic ratios are pure BoT, 384 -> 512 is a DCT pad, 6 -> 9
layers a DCT pad and 12 -> 5 a DCT crop 12 -> 10 then one wavelet step; and shrinking undoes growing exactly
(periodization mode).

**Why our own torch code, not ptwt:** zoo only needs one-level filter banks per (wavelet, mode, length): banded
matrices built once from index arithmetic. A whole axis resize is composed into one banded operator and applied as
a few gathers, O(n x filter length) on any device, where ptwt would run a convolution per level and add a run-time
dependency (ptwt builds on PyWavelets, which zoo otherwise needs only for its tests and for wavelets beyond the
built-in table). The tests build PyWavelets' ``dwt``, ``idwt``, ``wavedec``, ``waverec``, ``wavedecn`` and
``waverecn`` from these filter banks (tests/pywt_compat.py) and check them against PyWavelets (coefficient layout,
lengths, boundary modes, odd-length trimming).

**Haar grows by duplication**: its inverse step repeats every sample, so growing a width with haar makes pairs of
identical neurons that stay paired through the network (and under training, unless dropout or noise separates
them). Prefer ``--wavelet db2`` for small-to-large; docs/transforms.md has the measurements.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from zoo import InvalidConfigError, UnknownNameError, hookimpl
from zoo.transforms import apply_matrix
from zoo_plugins.transforms.dct import dct_basis

if TYPE_CHECKING:
    import torch

# Modes whose extension is an index (and sign) into the signal; 'smooth' and 'antireflect' extrapolate and are
# left out. Names and behaviour as in PyWavelets.
MODES = ("periodization", "symmetric", "reflect", "periodic", "zero", "constant", "antisymmetric")
DEFAULT_MODE = "periodization"  # lengths halve exactly (ceil), so shrinking undoes growing without boundary terms

# Orthogonal decomposition low-pass filters (PyWavelets' values); the other three filters follow from them.
_LOW_PASS = {
    "haar": (0.7071067811865476, 0.7071067811865476),
    "db2": (-0.12940952255126037, 0.2241438680420134, 0.8365163037378079, 0.48296291314453416),
    "db3": (0.03522629188570953, -0.08544127388202666, -0.13501102001025458, 0.45987750211849154,
            0.8068915093110925, 0.33267055295008263),
    "db4": (-0.010597401785069032, 0.0328830116668852, 0.030841381835560764, -0.18703481171909309,
            -0.027983769416859854, 0.6308807679298589, 0.7148465705529157, 0.2303778133088965),
    "sym4": (-0.07576571478927333, -0.02963552764599851, 0.49761866763201545, 0.8037387518059161,
             0.29785779560527736, -0.09921954357684722, -0.012603967262037833, 0.0322231006040427),
    "coif1": (-0.015655728135791993, -0.07273261951252645, 0.3848648468648578, 0.8525720202116004,
              0.3378976624574818, -0.07273261951252645),
}
_LOW_PASS["db1"] = _LOW_PASS["haar"]


@dataclass(frozen=True)
class FilterBank:
    name: str
    dec_lo: tuple[float, ...]
    dec_hi: tuple[float, ...]
    rec_lo: tuple[float, ...]
    rec_hi: tuple[float, ...]

    @property
    def length(self) -> int:
        return len(self.dec_lo)


def _pywt_wavelets() -> list[str]:
    try:
        import pywt
    except ImportError:
        return []
    return pywt.wavelist(kind="discrete")


@functools.lru_cache(maxsize=None)
def filter_bank(name: str) -> FilterBank:
    """The four filters of a wavelet: built-in orthogonal ones, else any discrete wavelet PyWavelets knows."""
    if name in _LOW_PASS:
        lo = _LOW_PASS[name]
        rec_hi = tuple((-1) ** k * v for k, v in enumerate(lo))  # quadrature mirror
        return FilterBank(name, lo, rec_hi[::-1], lo[::-1], rec_hi)
    if name in _pywt_wavelets():
        import pywt

        return FilterBank(name, *map(tuple, pywt.Wavelet(name).filter_bank))
    hint = "or any in pywt.wavelist(kind='discrete')" if _pywt_wavelets() else "install PyWavelets for more"
    raise UnknownNameError("wavelet", name, _LOW_PASS, hint=hint)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise UnknownNameError("wavelet mode", str(mode), MODES)
    return mode


def coeff_len(n: int, filter_len: int, mode: str) -> int:
    """Length of one level's approximation (and detail) of a length-``n`` signal, as ``pywt.dwt_coeff_len``."""
    return (n + 1) // 2 if mode == "periodization" else (n + filter_len - 1) // 2


def rec_len(m: int, filter_len: int, mode: str) -> int:
    """Length ``idwt`` returns from ``m`` coefficients."""
    return 2 * m if mode == "periodization" else 2 * m - filter_len + 2


def max_level(n: int, filter_len: int) -> int:
    """``pywt.dwt_max_level``: the default level of :func:`wavedec`."""
    if filter_len < 2 or n < filter_len - 1:
        return 0
    return int(math.log2(n / (filter_len - 1)))


# -- one-level filter-bank matrices (float64, on the CPU, cached) ---------------------------------------------------
def _extend(i: torch.Tensor, n: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Signal index and sign for positions ``i`` (any integers) of the mode-extended signal (sign 0: a zero)."""
    import torch

    ones = torch.ones(i.shape, dtype=torch.float64)
    if mode == "zero":
        return i.clamp(0, n - 1), ((i >= 0) & (i < n)).double()
    if mode == "constant":
        return i.clamp(0, n - 1), ones
    if mode == "periodic":
        return i % n, ones
    if mode in ("symmetric", "antisymmetric"):  # x1 x0 | x0 x1 ... : period 2n, mirrored half flips sign if anti
        p = i % (2 * n)
        flipped = p >= n
        sign = torch.where(flipped, -ones, ones) if mode == "antisymmetric" else ones
        return torch.where(flipped, 2 * n - 1 - p, p), sign
    if mode == "reflect":  # x2 x1 | x0 x1 ... : period 2n - 2
        if n == 1:
            return torch.zeros_like(i), ones
        p = i % (2 * n - 2)
        return torch.where(p >= n, 2 * n - 2 - p, p), ones
    raise UnknownNameError("wavelet mode", mode, MODES)


@functools.lru_cache(maxsize=256)
def analysis_matrix(n: int, wavelet: str, mode: str, high: bool) -> torch.Tensor:
    """``[coeff_len, n]``: one level of low-pass (or high-pass) filtering and downsampling by two."""
    import torch

    f = torch.tensor(filter_bank(wavelet).dec_hi if high else filter_bank(wavelet).dec_lo, dtype=torch.float64)
    taps, m = len(f), coeff_len(n, len(f), mode)
    o = torch.arange(m)[:, None].expand(m, taps)
    j = torch.arange(taps)[None, :].expand(m, taps)
    if mode == "periodization":  # odd lengths first repeat the last sample, then wrap around
        index, sign = ((taps // 2 + 2 * o - j) % (n + n % 2)).clamp(max=n - 1), torch.ones(m, taps, dtype=torch.float64)
    else:  # full convolution of the extended signal, odd samples kept
        index, sign = _extend(2 * o + 1 - j, n, mode)
    out = torch.zeros(m, n, dtype=torch.float64)
    out.index_put_((o, index), f[j] * sign, accumulate=True)
    return out


@functools.lru_cache(maxsize=256)
def synthesis_matrix(m: int, wavelet: str, mode: str, high: bool) -> torch.Tensor:
    """``[rec_len, m]``: upsampling by two and filtering with the reconstruction low-pass (or high-pass)."""
    import torch

    f = torch.tensor(filter_bank(wavelet).rec_hi if high else filter_bank(wavelet).rec_lo, dtype=torch.float64)
    taps = len(f)
    o = torch.arange(m)[:, None].expand(m, taps)
    j = torch.arange(taps)[None, :].expand(m, taps)
    n = rec_len(m, taps, mode)
    if mode == "periodization":
        k, valid = (2 * o + j - taps // 2 + 1) % n, torch.ones(m, taps, dtype=torch.bool)
    else:  # the part of the full convolution every coefficient fully covers
        k = 2 * o + j - taps + 2
        valid = (k >= 0) & (k < n)
    out = torch.zeros(max(n, 0), m, dtype=torch.float64)
    out.index_put_((k[valid], o[valid]), f[j][valid], accumulate=True)
    return out


def cast_like(matrix: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    # a copy: the cached CPU float64 matrices must never reach a caller that could modify them in place
    return matrix.to(device=like.device, dtype=like.dtype, copy=True)


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    import torch

    return torch.float64 if x.dtype == torch.float64 else torch.float32


# -- gain-free operators for learngenes and resizing ----------------------------------------------------------------
@dataclass(frozen=True)
class Operator:
    """A linear map along one axis (float64, CPU): banded, as the ``w`` nonzeros of each output row (``index``
    and ``weight``, both ``[rows, w]``), or a dense ``matrix`` ``[rows, cols]``.

    Wavelet steps are banded (``len(filter)`` inputs per output at most), so applying them is ``w`` gathers, O(n w),
    where a matrix product is O(n^2): the DCT's cost. A whole axis resize is composed into one operator first, so
    every axis is a single pass over the weights; only the DCT bridge of a non-dyadic ratio makes it dense.
    """

    cols: int
    index: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    matrix: torch.Tensor | None = None

    @classmethod
    def banded(cls, matrix: torch.Tensor) -> Operator:
        import torch

        nonzero = matrix != 0
        width = max(1, int(nonzero.sum(dim=1).max()))
        index = torch.topk(nonzero.to(torch.int8), width, dim=1, sorted=False).indices
        return cls(matrix.shape[1], index, torch.gather(matrix, 1, index))  # short rows pad with zero weights

    @classmethod
    def identity(cls, n: int) -> Operator:
        import torch

        return cls(n, torch.arange(n)[:, None], torch.ones(n, 1, dtype=torch.float64))

    def then(self, after: Operator) -> Operator:
        """``after`` applied to this operator's output, as one operator."""
        import torch

        if after.matrix is None and self.matrix is None:  # banded o banded: widths multiply, repeated inputs add up
            index = self.index[after.index].flatten(1)
            weight = (after.weight[:, :, None] * self.weight[after.index]).flatten(1)
            if index.shape[1] <= 8:
                return Operator(self.cols, index, weight)
            merged = torch.zeros(index.shape[0], self.cols, dtype=torch.float64).scatter_add_(1, index, weight)
            return Operator.banded(merged)  # long filters over many levels: merge the repeats
        if after.matrix is None:  # banded o dense: weighted rows of the dense matrix
            return Operator(self.cols, matrix=(after.weight[:, :, None] * self.matrix[after.index]).sum(dim=1))
        if self.matrix is not None:
            return Operator(self.cols, matrix=after.matrix @ self.matrix)
        out = torch.zeros(after.matrix.shape[0], self.cols, dtype=torch.float64)
        for k in range(self.index.shape[1]):  # dense o banded: scatter each column into its inputs
            out.index_add_(1, self.index[:, k], after.matrix * self.weight[:, k])
        return Operator(self.cols, matrix=out)

    def apply(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        x = x.to(compute_dtype(x))
        if self.matrix is not None:
            return apply_matrix(x, cast_like(self.matrix, x), dim)
        index, weight = self.index.to(x.device), cast_like(self.weight, x)
        dim %= x.dim()
        shape = [1] * x.dim()
        shape[dim] = -1
        lead = (slice(None),) * dim  # advanced indexing: index_select is several times slower off the first axis
        out = x[(*lead, index[:, 0])] * weight[:, 0].view(shape)
        for k in range(1, index.shape[1]):
            out.addcmul_(x[(*lead, index[:, k])], weight[:, k].view(shape))
        return out


def _down(n: int, wavelet: str, mode: str) -> Operator:
    """One approximation step, its DC gain ``sum(dec_lo)`` divided out."""
    return Operator.banded(analysis_matrix(n, wavelet, mode, False) / sum(filter_bank(wavelet).dec_lo))


def _up(m: int, wavelet: str, mode: str) -> Operator:
    """One inverse step with zero details, its DC gain ``sum(rec_lo) / 2`` divided out."""
    return Operator.banded(synthesis_matrix(m, wavelet, mode, False) * (2.0 / sum(filter_bank(wavelet).rec_lo)))


def _bridge(src: int, dst: int) -> Operator:
    """Orthonormal DCT, crop or zero-pad, inverse; scaled by sqrt(dst/src) so a constant stays the same constant."""
    import torch

    k = min(src, dst)
    basis = dct_basis(dst, k, "cpu", torch.float64).T @ dct_basis(src, k, "cpu", torch.float64)
    return Operator(src, matrix=basis * math.sqrt(dst / src))


def _chain(n: int, steps: Sequence[Operator]) -> Operator:
    out = Operator.identity(n)
    for step in steps:
        out = out.then(step)
    return out


def approximation_levels(n: int, wavelet: str, mode: str, level: int | None = None, keep: int | None = None) -> list[int]:
    """Lengths ``[n, n_1, ..., n_L]`` of the approximations a learngene goes through (see the module docstring)."""
    taps = filter_bank(wavelet).length
    lengths = [n]
    while level is None or len(lengths) <= level:
        nxt = coeff_len(lengths[-1], taps, mode)
        if nxt >= lengths[-1] or (level is None and nxt < (keep or 1)):
            break
        lengths.append(nxt)
    return lengths


@functools.lru_cache(maxsize=128)
def approximation_operator(n: int, levels: int, wavelet: str, mode: str) -> Operator:
    """``levels`` gain-free approximation steps of a length-``n`` axis."""
    return _chain(n, [_down(length, wavelet, mode) for length in approximation_levels(n, wavelet, mode, levels)[:-1]])


def resize_plan(src: int, dst: int, wavelet: str, mode: str) -> tuple[int, int]:
    """``(k, bridge)``: ``k`` whole wavelet steps between the two sizes, and the size on the large side where the
    DCT crop or pad meets them (``up^k(small)``)."""
    taps = filter_bank(wavelet).length
    size, steps = min(src, dst), 0
    while size < rec_len(size, taps, mode) <= max(src, dst):
        size, steps = rec_len(size, taps, mode), steps + 1
    return steps, size


@functools.lru_cache(maxsize=128)
def resize_operator(src: int, dst: int, wavelet: str, mode: str) -> Operator:
    """The gain-free wavelet resize of one axis, ``src -> dst`` (module docstring: wavelet steps, DCT bridge)."""
    steps, bridge = resize_plan(src, dst, wavelet, mode)
    lengths = [min(src, dst)]
    for _ in range(steps):
        lengths.append(rec_len(lengths[-1], filter_bank(wavelet).length, mode))
    if dst >= src:  # inverse steps with zero details, then pad the spectrum
        chain = [_up(n, wavelet, mode) for n in lengths[:-1]] + ([_bridge(bridge, dst)] if bridge != dst else [])
    else:  # crop the spectrum, then keep approximations
        chain = ([_bridge(src, bridge)] if bridge != src else []) + [_down(n, wavelet, mode) for n in lengths[:0:-1]]
    return _chain(src, chain)


class DWT:
    name = "dwt"
    description = "discrete wavelet transform per axis (BoT); learngene = approximation at a level"
    parameters = {"wavelet": "haar", "mode": DEFAULT_MODE, "level": None}
    default_strategy = "wavelet"

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        filter_bank(str(params["wavelet"]))
        check_mode(params["mode"])
        level = params["level"]
        if level is not None and (isinstance(level, bool) or not isinstance(level, int) or level < 0):
            raise InvalidConfigError(f"wavelet level must be a whole number >= 0 (0 keeps everything), got {level!r}")
        return params

    def analyze(self, x: torch.Tensor, dim: int, keep: int, wavelet: str = "haar", mode: str = DEFAULT_MODE,
                level: int | None = None, **_: Any) -> torch.Tensor:
        levels = len(approximation_levels(x.shape[dim], wavelet, mode, level=level, keep=keep)) - 1
        if levels == 0:
            return x.to(compute_dtype(x))
        return approximation_operator(x.shape[dim], levels, wavelet, mode).apply(x, dim)

    def synthesize(self, coeffs: torch.Tensor, dim: int, size: int, wavelet: str = "haar",
                   mode: str = DEFAULT_MODE, **_: Any) -> torch.Tensor:
        if coeffs.shape[dim] == size:
            return coeffs.to(compute_dtype(coeffs))
        return resize_operator(coeffs.shape[dim], size, wavelet, mode).apply(coeffs, dim)


@hookimpl
def register_transforms(register):
    register(DWT())
