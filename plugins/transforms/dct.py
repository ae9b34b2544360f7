"""FRONT's transform: the orthonormal DCT-II in torch (matrix products, or an FFT for long axes), on any device.

Orthonormal (``norm="ortho"``) rather than FRONT's unnormalized FFT form: it preserves energy, so cropping or
zero-padding the spectrum neither inflates nor shrinks white-noise weights. Only the kept rows of the basis are
ever built, so extracting a truncated block costs ``keep x n`` per axis instead of a full transform.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Any

from zoo import hookimpl
from zoo.transforms import apply_matrix

if TYPE_CHECKING:
    import torch

# From this many kept coefficients on, analysis by FFT beats the product with the truncated basis on a CPU
FFT_FROM = 96


@functools.lru_cache(maxsize=64)
def _basis_cpu(n: int, rows: int) -> torch.Tensor:
    """First ``rows`` rows of the n-point orthonormal DCT-II matrix, in float64."""
    import torch

    k = torch.arange(rows, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    basis = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2.0 / n)
    basis[0] /= math.sqrt(2.0)
    return basis


def dct_basis(n: int, rows: int | None = None, device: Any = "cpu", dtype: torch.dtype | None = None) -> torch.Tensor:
    """The first ``rows`` rows (all by default) of the n-point orthonormal DCT-II matrix (float32 by default)."""
    import torch

    # copy: the cached basis must never be handed out, or an in-place edit by a caller would poison every DCT
    return _basis_cpu(n, n if rows is None else rows).to(device=device, dtype=torch.float32 if dtype is None else dtype, copy=True)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    import torch

    return torch.float64 if x.dtype == torch.float64 else torch.float32


class DCT:
    name = "dct"
    description = "orthonormal DCT-II per axis (FRONT); learngene = low-frequency block"

    def analyze(self, x: torch.Tensor, dim: int, keep: int, **params: Any) -> torch.Tensor:
        import torch

        n = x.shape[dim]
        keep = max(1, min(int(keep), n))
        dtype = _compute_dtype(x)
        # Only the kept rows of the basis are applied: keep x n multiply-adds per output column. Past ~96 kept
        # coefficients an FFT (O(log n) per value, whatever ``keep`` is) is cheaper; training (refinement) keeps
        # the product, whose gradient is the plain transposed basis.
        if keep >= FFT_FROM and not (torch.is_grad_enabled() and x.requires_grad):
            if x.device.type == "cpu":
                return _dct_scipy(x.to(dtype), dim % x.dim(), keep)
            return _dct_fft(x.to(dtype), dim % x.dim(), keep)
        return apply_matrix(x.to(dtype), dct_basis(n, keep, x.device, dtype), dim)

    def synthesize(self, coeffs: torch.Tensor, dim: int, size: int, **params: Any) -> torch.Tensor:
        # Zero-padding or cropping the spectrum then inverting == multiplying by the first k columns of the
        # target-length inverse basis, where k = min(kept, size). That product costs k multiply-adds per output
        # value; for long spectra an FFT is much cheaper (Makhoul's DCT-III via one real inverse FFT of length
        # ``size``: O(log size) per value), so it takes over from k = 512 on the last axis (1024 elsewhere, where
        # strided FFTs are slower). Both are exact up to float rounding and run on any torch device.
        import torch

        dim = dim % coeffs.dim()
        kept = coeffs.shape[dim]
        k = min(kept, size)
        dtype = _compute_dtype(coeffs)
        x = coeffs.narrow(dim, 0, k).to(dtype)
        if k < (512 if dim == coeffs.dim() - 1 else 1024) or (torch.is_grad_enabled() and x.requires_grad):
            return apply_matrix(x, dct_basis(size, k, x.device, dtype).T, dim)  # (the FFT path writes in place)

        # x[i] = sum_j w_j c_j cos(pi j (2i + 1) / 2n). With b_j = w_j c_j e^{i pi j / 2n}, the even outputs then the
        # odd ones in reverse, v = (x[0], x[2], ..., x[3], x[1]), are Re(sum_j b_j e^{2 pi i j m / n}): the real
        # inverse FFT of the Hermitian half spectrum h_j = (b_j + conj(b_{n-j})) / 2, j = 0 .. n // 2.
        n = size
        half = n // 2 + 1
        complex_dtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        lead, trail = math.prod(x.shape[:dim]), math.prod(x.shape[dim + 1 :])
        flat = (lead, k) if trail == 1 else (lead, k, trail)  # the transformed axis is always axis 1
        xs = x.reshape(flat)
        j = torch.arange(k, dtype=torch.float64)
        weight = torch.full((k,), 0.5 * math.sqrt(2.0 / n), dtype=torch.float64)
        weight[0] = math.sqrt(1.0 / n)  # h_0 = b_0: not halved
        twiddle = torch.polar(weight, math.pi * j / (2 * n)).to(device=x.device, dtype=complex_dtype)
        if trail != 1:
            twiddle = twiddle[:, None]
        spectrum = torch.empty((lead, half, *flat[2:]), dtype=complex_dtype, device=x.device)
        m = min(k, half)
        # real times complex as real arithmetic on the (re, im) pairs: no promotion of x to complex
        torch.mul(xs[:, :m, ..., None], torch.view_as_real(twiddle[:m]), out=torch.view_as_real(spectrum)[:, :m])
        if m < half:
            spectrum[:, m:].zero_()
        first = max(n - k + 1, 1)  # b_{n-j} is non-zero only for n - j < k
        if first < half:
            mirror = n - torch.arange(first, half, device=x.device)
            spectrum[:, first:] += (xs[:, mirror] * twiddle[mirror]).conj()
        v = torch.fft.irfft(spectrum, n=n, dim=1, norm="forward")
        order = torch.empty(n, dtype=torch.long)
        evens = (n + 1) // 2
        order[0::2] = torch.arange(evens)
        order[1::2] = torch.arange(n - 1, evens - 1, -1)
        out = v.index_select(1, order.to(x.device))
        return out.reshape(*x.shape[:dim], n, *x.shape[dim + 1 :])


def _dct_scipy(x: torch.Tensor, dim: int, keep: int) -> torch.Tensor:
    """On a CPU, scipy's DCT-II (pocketfft, with the reordering and twiddles inside one C++ pass, the GIL
    released) runs about twice as fast as the same algorithm spelled in torch operations."""
    import scipy.fft
    import torch

    full = torch.from_numpy(scipy.fft.dct(x.numpy(), type=2, axis=dim, norm="ortho"))
    return full.narrow(dim, 0, keep)  # a view: callers copy what they keep (no second copy here)


def _dct_fft(x: torch.Tensor, dim: int, keep: int) -> torch.Tensor:
    """The first ``keep`` orthonormal DCT-II coefficients along ``dim`` via one real FFT (Makhoul, 1980).

    With v = (x[0], x[2], ..., x[3], x[1]) (evens, then odds reversed) and V its DFT,
    X[k] = w_k Re(e^{-i pi k / 2n} V[k]). The real FFT gives V[k] for k <= n/2; above, V[k] = conj(V[n - k]).
    Everything runs along ``dim`` in place: no transposed copies of the (possibly large) input.
    """
    import torch

    n = x.shape[dim]
    order = torch.cat([torch.arange(0, n, 2), torch.arange(1, n, 2).flip(0)]).to(x.device)
    spectrum = torch.fft.rfft(x.index_select(dim, order), dim=dim)
    low = min(keep, n // 2 + 1)
    if keep > low:  # the upper half of the spectrum, from the Hermitian symmetry of a real signal's DFT
        mirror = n - torch.arange(low, keep, device=x.device)
        spectrum = torch.cat([spectrum.narrow(dim, 0, low), spectrum.index_select(dim, mirror).conj()], dim=dim)
    else:
        spectrum = spectrum.narrow(dim, 0, keep)
    k = torch.arange(keep, dtype=torch.float64)
    weight = torch.full((keep,), math.sqrt(2.0 / n), dtype=torch.float64)
    weight[0] = math.sqrt(1.0 / n)
    twiddle = torch.polar(weight, -math.pi * k / (2 * n)).to(device=x.device, dtype=spectrum.dtype)
    twiddle = twiddle.reshape(keep, *([1] * (x.dim() - dim - 1)))
    # Re(a b) = Re(a) Re(b) - Im(a) Im(b), on real views: no complex product tensor
    pairs = torch.view_as_real(spectrum)
    out = pairs[..., 0] * twiddle.real
    return out.addcmul_(pairs[..., 1], twiddle.imag, value=-1)


@hookimpl
def register_transforms(register):
    register(DCT())
