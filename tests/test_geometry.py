"""Geometry against references (NumPy, SciPy) and invariances, on seeded tiny matrices."""

import numpy as np
import pytest
import scipy.linalg
import torch

from dimalign.geometry import (
    dimensional_alignment,
    effective_rank,
    eigenspectrum,
    entropy_rank,
    k_for_energy,
    linear_cka,
    principal_angles,
    top_basis,
)


def rand(n, c, seed):
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def numpy_da(forget: np.ndarray, retain: np.ndarray, k: int) -> float:
    """The paper's formula with columns as samples (docs/method.md, "Dimensional Alignment"),
    straight from NumPy."""
    ff, fr = forget.T, retain.T  # (C, N)
    w, v = np.linalg.eigh(fr @ fr.T)
    u = v[:, np.argsort(w)[::-1][:k]]
    g = ff @ ff.T
    return np.linalg.norm(g @ u @ u.T, "fro") / np.linalg.norm(g, "fro")


@pytest.mark.parametrize("n_f, n_r, c, k", [(30, 80, 16, 5), (5, 12, 32, 3), (200, 50, 8, 7)])
def test_da_matches_a_direct_numpy_evaluation(n_f, n_r, c, k):
    forget, retain = rand(n_f, c, 1), rand(n_r, c, 2)
    got = dimensional_alignment(forget, retain, k=k)
    assert got.k == k
    assert got.value.item() == pytest.approx(numpy_da(forget.numpy(), retain.numpy(), k), abs=1e-10)


def test_da_chooses_k_from_energy_and_reports_it():
    retain = rand(100, 10, 3) * torch.tensor([10, 8, 6, 1, 1, 1, 1, 1, 1, 1.0])
    eig = np.sort(np.linalg.eigvalsh(retain.numpy().T @ retain.numpy()))[::-1]
    expected = int(np.searchsorted(np.cumsum(eig) / eig.sum(), 0.9) + 1)
    assert dimensional_alignment(rand(20, 10, 4), retain, energy=0.9).k == expected
    assert k_for_energy(torch.tensor([3.0, 1.0, 0.0]), 0.75) == 1
    assert k_for_energy(torch.tensor([3.0, 1.0, 0.0]), 1.0) == 2


def test_da_is_invariant_to_rotation_and_to_scaling_either_set():
    forget, retain = rand(40, 12, 5), rand(90, 12, 6)
    q, _ = torch.linalg.qr(rand(12, 12, 7))
    base = dimensional_alignment(forget, retain, k=4).value
    assert dimensional_alignment(forget @ q, retain @ q, k=4).value == pytest.approx(base.item())
    assert dimensional_alignment(7.5 * forget, retain, k=4).value == pytest.approx(base.item())
    assert dimensional_alignment(forget, 0.01 * retain, k=4).value == pytest.approx(base.item())


def test_da_is_one_inside_the_retain_span_and_zero_orthogonal_to_it():
    c = 10
    basis = torch.linalg.qr(rand(c, c, 8))[0]
    inside, outside = basis[:, :3], basis[:, 3:]
    retain = rand(200, 3, 9) @ inside.T * torch.tensor(1.0)  # spans exactly `inside`
    forget_in = rand(25, 3, 10) @ inside.T
    forget_out = rand(25, 7, 11) @ outside.T
    assert dimensional_alignment(forget_in, retain, k=3).value.item() == pytest.approx(1.0)
    assert dimensional_alignment(forget_out, retain, k=3).value.item() == pytest.approx(0, abs=1e-9)


def test_da_gradient_flows_to_forget_only_and_is_finite():
    forget = rand(16, 8, 12).float().requires_grad_()
    retain = rand(64, 8, 13).float().requires_grad_()
    value = dimensional_alignment(forget, retain, energy=0.8).value
    (-value**2).backward()
    assert forget.grad is not None and torch.isfinite(forget.grad).all()
    assert forget.grad.abs().sum() > 0
    assert retain.grad is None  # the retain basis is detached


def test_da_centering_subtracts_the_retain_mean():
    forget, retain = rand(30, 6, 14) + 5, rand(60, 6, 15) + 5
    centred = dimensional_alignment(forget, retain, k=2, center=True).value.item()
    mean = retain.mean(0)
    expected = numpy_da((forget - mean).numpy(), (retain - mean).numpy(), 2)
    assert centred == pytest.approx(expected)


def test_degenerate_inputs_give_finite_answers_or_clear_errors():
    few = rand(3, 64, 16)  # N < C, rank 3
    value = dimensional_alignment(rand(2, 64, 17), few, energy=0.99)
    assert torch.isfinite(value.value) and value.k <= 3
    rank_deficient = rand(50, 2, 18) @ rand(2, 10, 19)
    assert torch.isfinite(dimensional_alignment(rand(5, 10, 20), rank_deficient).value)
    zeros = torch.zeros(10, 8)
    with pytest.raises(ValueError, match="all zero"):
        dimensional_alignment(rand(5, 8, 21), zeros)
    with pytest.raises(ValueError, match="all zero"):
        dimensional_alignment(zeros, rand(5, 8, 21))
    with pytest.raises(ValueError, match="NaN"):
        dimensional_alignment(torch.full((3, 8), float("nan")), rand(5, 8, 21))
    with pytest.raises(ValueError, match=r"1\.\.8"):
        dimensional_alignment(rand(5, 8, 21), rand(5, 8, 22), k=9)
    with pytest.raises(ValueError, match="energy"):
        dimensional_alignment(rand(5, 8, 21), rand(5, 8, 22), energy=0)
    with pytest.raises(ValueError, match="non-empty"):
        dimensional_alignment(torch.zeros(0, 8), rand(5, 8, 22))


def test_basis_of_fewer_samples_than_dimensions_matches_the_full_eigendecomposition():
    feats = rand(12, 40, 30) * torch.linspace(0.1, 3, 40)  # N < C: the N×N route
    small = top_basis(feats, energy=0.8)
    w, v = np.linalg.eigh(feats.numpy().T @ feats.numpy())
    order = np.argsort(w)[::-1]
    np.testing.assert_allclose(small.eigenvalues.numpy(), np.clip(w[order], 0, None), atol=1e-8)
    reference = v[:, order[: small.k]]
    assert small.k == k_for_energy(torch.from_numpy(w[order].copy()), 0.8)
    # the same subspace (eigenvectors are defined up to sign), orthonormal columns
    np.testing.assert_allclose(np.abs(reference.T @ small.vectors.numpy()), np.eye(small.k),
                               atol=1e-7)
    # k past the rank reaches into the null space: the full C×C route answers it
    wide = top_basis(feats, k=20)
    assert wide.k == 20 and wide.vectors.shape == (40, 20)
    np.testing.assert_allclose(wide.vectors.T @ wide.vectors, torch.eye(20, dtype=torch.float64),
                               atol=1e-8)
    with pytest.raises(ValueError, match="NaN"):
        top_basis(torch.full((3, 8), float("nan")))


@pytest.mark.parametrize("k_a, k_b", [(3, 3), (2, 6), (6, 2), (8, 8)])
def test_principal_angles_match_scipy(k_a, k_b):
    a, b = rand(60, 12, 23), rand(40, 12, 24)
    ua, ub = top_basis(a, k=k_a).vectors.numpy(), top_basis(b, k=k_b).vectors.numpy()
    expected = np.sort(np.degrees(scipy.linalg.subspace_angles(ua, ub)))
    got = principal_angles(a, b, k_a, k_b)
    assert got.shape == (min(k_a, k_b),)
    assert np.allclose(got.numpy(), expected, atol=1e-8)
    assert torch.all(got[1:] >= got[:-1])


def test_principal_angles_of_a_subspace_with_itself_are_zero_and_of_complements_ninety():
    a = rand(60, 12, 25)
    assert principal_angles(a, a, 4, 4).abs().max() < 1e-6
    basis = torch.linalg.qr(rand(6, 6, 26))[0]
    left, right = rand(30, 3, 27) @ basis[:, :3].T, rand(30, 3, 28) @ basis[:, 3:].T
    assert torch.allclose(principal_angles(left, right, 3, 3), torch.full((3,), 90.0,
                                                                          dtype=torch.float64))


@pytest.mark.parametrize("center", [False, True])
def test_eigenspectrum_matches_numpy_eigvalsh(center):
    f = rand(50, 9, 29) * torch.arange(1, 10) + 3
    x = f.numpy() - (f.numpy().mean(0) if center else 0)
    expected = np.sort(np.linalg.eigvalsh(x.T @ x / len(x)))[::-1]
    spec = eigenspectrum(f, center=center)
    assert np.allclose(spec.values.numpy(), expected / expected.sum())
    assert spec.cumulative[-1].item() == pytest.approx(1.0)
    assert torch.all(spec.cumulative[1:] >= spec.cumulative[:-1])


def test_effective_rank_counts_equal_directions():
    assert entropy_rank(torch.tensor([0.25, 0.25, 0.25, 0.25, 0.0])) == pytest.approx(4.0)
    assert entropy_rank(torch.tensor([1.0, 0.0])) == pytest.approx(1.0)
    iso = rand(5000, 6, 30)
    assert eigenspectrum(iso).effective_rank == pytest.approx(6.0, rel=0.02)
    assert eigenspectrum(iso).effective_rank_energy == pytest.approx(6.0, rel=0.02)


def test_effective_rank_is_roy_and_vetterlis_on_a_hand_checked_matrix():
    """F's columns c1 = (1, 1, 1, 1) and c2 = (3, -3, 1, -1) are orthogonal, so its singular
    values are |c2| = √20 and |c1| = 2. Roy & Vetterli (2007): p = (√20, 2) / (√20 + 2)
    = (0.690983, 0.309017); H = 0.255415 + 0.362897 = 0.618312; erank = e^H = 1.855793.
    Centred, c1 is 0 and c2 (mean 0) stays: one singular value, erank 1. The energy form
    (dimalign's before issue 27) shares σ² = (20, 4): p = (5/6, 1/6), e^H = 1.569193."""
    f = torch.tensor([[1.0, 3.0], [1.0, -3.0], [1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    assert effective_rank(f) == pytest.approx(1.855793, abs=1e-6)
    assert effective_rank(f, center=True) == pytest.approx(1.0, abs=1e-6)
    assert eigenspectrum(f).effective_rank_energy == pytest.approx(1.569193, abs=1e-6)
    assert effective_rank(f.float()) == pytest.approx(1.855793, abs=1e-5)


@pytest.mark.parametrize("center", [False, True])
@pytest.mark.parametrize("n", [7, 200])  # fewer samples than dimensions: zero singular values
def test_effective_rank_matches_singular_values_from_numpy(center, n):
    f = (rand(n, 16, 34) * torch.linspace(0.1, 3, 16) + 2).numpy()
    x = f - (f.mean(0) if center else 0)
    s = np.linalg.svd(x, compute_uv=False)
    p = s[s > 1e-9 * s[0]] / s.sum()
    assert effective_rank(torch.from_numpy(f), center) == pytest.approx(
        np.exp(-(p * np.log(p)).sum()), rel=1e-9)


def test_linear_cka_is_one_for_same_features_up_to_rotation_and_scale():
    x = rand(100, 8, 31)
    q = torch.linalg.qr(rand(8, 8, 32))[0]
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3 * x @ q) == pytest.approx(1.0)
    assert linear_cka(x, rand(100, 8, 33)) < 0.2
    with pytest.raises(ValueError, match="same samples"):
        linear_cka(x, x[:50])
