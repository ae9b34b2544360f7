"""The torch DCT (zoo_plugins.transforms.dct) against scipy's orthonormal DCT-II, plus the pipeline's small helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

scipy_fft = pytest.importorskip("scipy.fft")

import zoo  # noqa: E402
from zoo.extraction import parse_keep  # noqa: E402
from zoo.materialization import interpolate_depth  # noqa: E402
from zoo_plugins.transforms.dct import DCT, dct_basis  # noqa: E402

ATOL = 1e-5
SHAPES = [(7, 8, 33), (8, 33, 7), (1, 2, 5)]  # odd and even lengths, and the length-1 edge case


@pytest.fixture
def dct() -> DCT:
    return DCT()


def _random(shape, seed=0, dtype=torch.float64) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.standard_normal(shape)).to(dtype)


def _close(actual: torch.Tensor, expected: np.ndarray, atol: float = ATOL) -> None:
    assert tuple(actual.shape) == tuple(expected.shape)
    np.testing.assert_allclose(actual.detach().double().numpy(), expected, rtol=0, atol=atol)


# -- the basis -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 2, 7, 8, 33])
def test_basis_is_scipy_dct_matrix_and_orthonormal(n):
    expected = scipy_fft.dct(np.eye(n), type=2, axis=0, norm="ortho")  # column j = DCT of e_j
    basis = dct_basis(n, dtype=torch.float64)
    _close(basis, expected, atol=1e-12)
    np.testing.assert_allclose((basis @ basis.T).numpy(), np.eye(n), atol=1e-12)
    assert dct_basis(n).dtype == torch.float32


@pytest.mark.parametrize("n,rows", [(8, 3), (33, 5), (7, 7), (7, 1)])
def test_basis_rows_are_the_lowest_frequencies(n, rows):
    full = scipy_fft.dct(np.eye(n), type=2, axis=0, norm="ortho")
    _close(dct_basis(n, rows, dtype=torch.float64), full[:rows], atol=1e-12)


def test_basis_cache_is_not_shared_with_callers():
    reference = dct_basis(8, dtype=torch.float64).clone()
    leaked = dct_basis(8, dtype=torch.float64)
    leaked.mul_(0)
    try:
        assert torch.equal(dct_basis(8, dtype=torch.float64), reference)
    finally:
        leaked.copy_(reference)  # repair the shared cache for the other tests


# -- forward -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dim", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_along_each_axis_matches_scipy(dct, shape, dim, dtype):
    x = _random(shape, seed=dim, dtype=dtype)
    expected = scipy_fft.dct(x.double().numpy(), type=2, axis=dim, norm="ortho")
    _close(dct.analyze(x, dim, shape[dim]), expected)


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_over_all_axes_matches_dctn(dct, shape):
    x = _random(shape, seed=1)
    coeffs = x
    for dim in range(x.dim()):
        coeffs = dct.analyze(coeffs, dim, x.shape[dim])
    _close(coeffs, scipy_fft.dctn(x.numpy(), type=2, norm="ortho"))
    # orthonormal: energy is preserved
    assert coeffs.norm().item() == pytest.approx(x.norm().item(), rel=1e-10)


@pytest.mark.parametrize("shape", SHAPES)
def test_inverse_at_same_size_matches_idctn(dct, shape):
    coeffs = _random(shape, seed=2)
    x = coeffs
    for dim in range(coeffs.dim()):
        x = dct.synthesize(x, dim, coeffs.shape[dim])
    _close(x, scipy_fft.idctn(coeffs.numpy(), type=2, norm="ortho"))


@pytest.mark.parametrize("dim,keep", [(0, 3), (1, 1), (1, 5), (2, 10), (2, 32)])
def test_analyze_keeps_the_first_k_coefficients(dct, dim, keep):
    x = _random((7, 8, 33), seed=3)
    full = scipy_fft.dct(x.numpy(), type=2, axis=dim, norm="ortho")
    expected = np.take(full, np.arange(keep), axis=dim)
    _close(dct.analyze(x, dim, keep), expected)


def test_analyze_clamps_keep_to_the_axis_length(dct):
    x = _random((7, 8, 33), seed=4)
    full = scipy_fft.dct(x.numpy(), type=2, axis=1, norm="ortho")
    _close(dct.analyze(x, 1, 100), full)
    _close(dct.analyze(x, 1, 0), full[:, :1])


# -- synthesis at other sizes --------------------------------------------------------------------------------------
def _pad_or_crop(coeffs: np.ndarray, dim: int, size: int) -> np.ndarray:
    kept = coeffs.shape[dim]
    if size >= kept:
        widths = [(0, 0)] * coeffs.ndim
        widths[dim] = (0, size - kept)
        return np.pad(coeffs, widths)
    return np.take(coeffs, np.arange(size), axis=dim)


@pytest.mark.parametrize("dim", [0, 1, 2])
@pytest.mark.parametrize("size", [9, 16, 40])
def test_synthesize_larger_equals_idct_of_zero_padded(dct, dim, size):
    coeffs = _random((5, 8, 7), seed=5 + dim)
    expected = scipy_fft.idct(_pad_or_crop(coeffs.numpy(), dim, size), type=2, axis=dim, norm="ortho")
    out = dct.synthesize(coeffs, dim, size)
    assert out.shape[dim] == size
    _close(out, expected)


@pytest.mark.parametrize("dim", [0, 1, 2])
@pytest.mark.parametrize("size", [1, 3, 4])
def test_synthesize_smaller_equals_idct_of_cropped(dct, dim, size):
    coeffs = _random((5, 8, 7), seed=8 + dim)
    expected = scipy_fft.idct(_pad_or_crop(coeffs.numpy(), dim, size), type=2, axis=dim, norm="ortho")
    out = dct.synthesize(coeffs, dim, size)
    assert out.shape[dim] == size
    _close(out, expected)


def test_truncated_block_resynthesized_at_source_size_is_a_low_pass(dct):
    x = _random((33, 8), seed=11)
    block = dct.analyze(x, 0, 6)
    full = scipy_fft.dct(x.numpy(), type=2, axis=0, norm="ortho")
    full[6:] = 0
    _close(dct.synthesize(block, 0, 33), scipy_fft.idct(full, type=2, axis=0, norm="ortho"))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_round_trip_reproduces_input(dct, shape, dtype):
    x = _random(shape, seed=12, dtype=dtype)
    coeffs = x
    for dim in range(x.dim()):
        coeffs = dct.analyze(coeffs, dim, x.shape[dim])
    back = coeffs
    for dim in range(x.dim()):
        back = dct.synthesize(back, dim, x.shape[dim])
    assert back.dtype == dtype
    tol = 1e-12 if dtype == torch.float64 else ATOL
    torch.testing.assert_close(back, x, rtol=0, atol=tol)


def test_dtypes_are_preserved(dct):
    x64 = _random((7, 8), seed=13)
    c64 = dct.analyze(x64, 1, 4)
    assert c64.dtype == torch.float64
    assert dct.synthesize(c64, 1, 12).dtype == torch.float64
    # float64 is really computed in float64 (a float32 path would be off by ~1e-7)
    expected = scipy_fft.dct(x64.numpy(), type=2, axis=1, norm="ortho")[:, :4]
    np.testing.assert_allclose(c64.numpy(), expected, rtol=0, atol=1e-13)

    x32 = x64.float()
    assert dct.analyze(x32, 0, 3).dtype == torch.float32
    assert dct.synthesize(x32, 0, 9).dtype == torch.float32
    assert dct.analyze(x64.half(), 0, 3).dtype == torch.float32  # half precision is computed in float32


def test_transform_is_registered_and_does_not_touch_its_input(dct):
    assert isinstance(zoo.catalog().transform("dct"), DCT)
    x = _random((7, 8), seed=14)
    before = x.clone()
    dct.synthesize(dct.analyze(x, 0, 7), 0, 7)
    assert torch.equal(x, before)


# -- extraction's and materialization's helpers --------------------------------------------------------------------
@pytest.mark.parametrize(
    "values,layers,expected",
    [
        ([0.0, 1.0, 2.0], 5, [0.0, 0.5, 1.0, 1.5, 2.0]),
        ([0.0, 1.0, 2.0], 3, [0.0, 1.0, 2.0]),
        ([0.0, 1.0, 2.0, 3.0], 2, [0.0, 3.0]),
        ([0.0, 1.0, 2.0, 3.0], 3, [0.0, 1.5, 3.0]),
        ([0.0, 3.0, 6.0, 9.0], 7, [0.0, 1.5, 3.0, 4.5, 6.0, 7.5, 9.0]),
        ([1.0, 5.0], 4, [1.0, 1.0 + 4 / 3, 1.0 + 8 / 3, 5.0]),
        ([2.0], 3, [2.0, 2.0, 2.0]),
        ([0.0, 1.0, 2.0], 1, [1.0]),  # one layer takes the middle of the source
        ([4.0, 8.0], 1, [6.0]),
    ],
)
def test_interpolate_depth(values, layers, expected):
    out = interpolate_depth(torch.tensor(values, dtype=torch.float64), layers)
    assert out.shape == (layers,)
    np.testing.assert_allclose(out.numpy(), expected, rtol=0, atol=1e-12)


def test_interpolate_depth_keeps_dtype_and_does_not_alias_input():
    values = torch.tensor([1.0, 2.0], dtype=torch.float32)
    out = interpolate_depth(values, 3)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.tensor([1.0, 1.5, 2.0]))
    single = torch.tensor([3.0])
    expanded = interpolate_depth(single, 4)
    expanded[0] = -1.0
    assert single.item() == 3.0


@pytest.mark.parametrize(
    "keep,expected",
    [
        (None, {"*": 1.0}),
        (0.5, {"*": 0.5}),
        (1, {"*": 1.0}),
        (1.0, {"*": 1.0}),
        ("0.25", {"*": 0.25}),
        ("1", {"*": 1.0}),
        ("hidden=0.5,depth=1", {"hidden": 0.5, "depth": 1.0, "*": 1.0}),
        ("0.25, hidden = 0.5", {"*": 0.25, "hidden": 0.5}),
        ({"hidden": 0.5}, {"hidden": 0.5, "*": 1.0}),
        ({"*": 0.3, "ffn": "0.6"}, {"*": 0.3, "ffn": 0.6}),
    ],
)
def test_parse_keep_valid(keep, expected):
    out = parse_keep(keep)
    assert out == pytest.approx(expected)
    assert set(out) == set(expected)
    assert all(isinstance(v, float) for v in out.values())


@pytest.mark.parametrize(
    "keep",
    [0, 0.0, 1.5, -0.5, "0", "1.5", "abc", "", "nan", "inf", float("nan"), "hidden=2", "hidden=0", "hidden=",
     "0.5,ffn=x", {"hidden": 0}, {"hidden": "abc"}, {"*": 1.01}, True, [0.5]],
)
def test_parse_keep_invalid_raises(keep):
    with pytest.raises(zoo.InvalidConfigError):
        parse_keep(keep)


def test_invalid_keep_is_rejected_by_add_learngene_before_reading_the_source(tmp_path):
    # InvalidConfigError, not SourceNotFoundError: the ratio is checked first
    with pytest.raises(zoo.InvalidConfigError, match="keep"):
        zoo.add_learngene(str(tmp_path / "does-not-exist"), keep=1.5, registry=tmp_path / "r.db")
