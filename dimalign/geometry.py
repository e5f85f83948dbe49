"""Feature-space geometry: Dimensional Alignment, principal angles, eigenspectra, CKA.

Pure torch, no I/O. Features are (N, C) tensors, one row per sample, as in docs/method.md
("Dimensional Alignment"); the paper writes the same matrices transposed (columns are samples).
Eigendecompositions run in float64, on a GPU when there is one and the features are large
(results come back on the input's device); results come back in the input's dtype unless stated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


class DegenerateFeatures(ValueError):
    """The features hold nothing to measure: all zero, constant, NaN or infinite (a collapsed
    or diverged model). Callers tell this apart from a wrong argument: a training loop reports
    it as divergence, metrics as undefined (NaN)."""


@dataclass(frozen=True)
class Basis:
    vectors: torch.Tensor  # (C, k) orthonormal columns: the top-k eigenvectors of FᵀF
    eigenvalues: torch.Tensor  # (C,) every eigenvalue of FᵀF, descending, float64
    k: int


@dataclass(frozen=True)
class Alignment:
    value: torch.Tensor  # scalar DA in [0, 1]; carries gradients with respect to `forget`
    k: int  # the number of retain eigenvectors it used


@dataclass(frozen=True)
class Spectrum:
    values: torch.Tensor  # (C,) eigenvalues normalised to sum 1, descending
    cumulative: torch.Tensor  # (C,) cumulative energy, ends at 1

    @property
    def effective_rank(self) -> float:
        """Roy & Vetterli's effective rank of the features behind this spectrum: their
        singular values are σ_i ∝ √λ_i, so the shares σ_i / Σσ_j need no second solve."""
        return entropy_rank(singular_shares(self.values))

    @property
    def effective_rank_energy(self) -> float:
        """exp H of the energy shares λ_i / Σλ_j = σ_i² / Σσ_j² themselves: what dimalign
        reported as the effective rank before issue 27 (smaller; kept to compare with it)."""
        return entropy_rank(self.values)


def _check_shape(feats: torch.Tensor, name: str) -> None:
    if feats.ndim != 2 or feats.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty (N, C) matrix, got shape "
                         f"{tuple(feats.shape)}")


def _check(feats: torch.Tensor, name: str) -> None:
    _check_shape(feats, name)
    if not torch.isfinite(feats).all():
        raise DegenerateFeatures(f"{name} contains NaN or infinite values")


GPU_FROM = 1_000_000  # feature entries from which a Gram matrix moves to the GPU (~ms there)


def _gram_eigh(feats: torch.Tensor, center: bool = False, scale: bool = False,
               vectors: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Eigenvalues (ascending) and, if asked, eigenvectors of FᵀF in float64 — of the centred
    F if `center`, divided by N if `scale` — computed on a GPU when it pays."""
    f = feats.detach()
    if f.device.type == "cpu" and f.numel() >= GPU_FROM and torch.cuda.is_available():
        f = f.to("cuda", non_blocking=True)
    f = f.double()
    if center:
        f = f - f.mean(0, keepdim=True)
    gram = f.T @ f / (f.shape[0] if scale else 1)
    if vectors:
        values, vecs = torch.linalg.eigh(gram)
        return values.to(feats.device), vecs.to(feats.device)
    return torch.linalg.eigvalsh(gram).to(feats.device), None


def k_for_energy(eigenvalues: torch.Tensor, energy: float) -> int:
    """Smallest k whose top-k eigenvalues (descending) hold `energy` of the total."""
    if not 0.0 < energy <= 1.0:
        raise ValueError(f"energy must lie in (0, 1], got {energy}")
    total = eigenvalues.clamp(min=0).sum()
    if total <= 0:
        raise DegenerateFeatures("the features are all zero: their spectrum holds no energy")
    cumulative = eigenvalues.clamp(min=0).cumsum(0) / total
    # a hair of slack so energy=1 does not fall past the last non-zero eigenvalue by rounding
    return int((cumulative < energy - 1e-12).sum().item()) + 1


def top_basis(feats: torch.Tensor, energy: float = 0.9, k: int | None = None) -> Basis:
    """Top eigenvectors of FᵀF: the top right singular vectors of F (N, C), the left ones in
    the paper's layout (docs/method.md, "Dimensional Alignment")."""
    if 0 < feats.shape[0] < feats.shape[-1] and feats.ndim == 2:
        basis = _top_basis_from_rows(feats, energy, k)
        if basis is not None:
            return basis
    _check(feats, "features")
    eigenvalues, vectors = _gram_eigh(feats)  # ascending
    eigenvalues, vectors = eigenvalues.flip(0), vectors.flip(1)
    k = _pick_k(eigenvalues, energy, k, feats.shape[1])
    return Basis(vectors[:, :k], eigenvalues, k)


def _pick_k(eigenvalues: torch.Tensor, energy: float, k: int | None, width: int) -> int:
    if k is None:
        return k_for_energy(eigenvalues, energy)
    if not 1 <= k <= width:
        raise ValueError(f"k must lie in 1..{width} (the feature dimension), got {k}")
    if eigenvalues[0] <= 0:
        raise DegenerateFeatures("the features are all zero: they span no subspace")
    return k


DUAL_TOLERANCE = 1e-10  # smallest λ_k / λ_1 whose eigenvector Fᵀv/√λ is still accurate in fp64


def _top_basis_from_rows(feats: torch.Tensor, energy: float, k: int | None) -> Basis | None:
    """top_basis for fewer samples than dimensions (N < C, e.g. one training batch): the
    non-zero eigenpairs of FᵀF (C×C) follow from those of F Fᵀ (N×N) as u = Fᵀv/√λ. The small
    problem is solved on the CPU, so on a GPU the whole basis costs one transfer of N×N numbers
    instead of a C×C device solver and its syncs. None when k reaches into the null space."""
    f = feats.detach().double()
    small = (f @ f.T).cpu()  # (N, N); the only device-to-host copy
    if not torch.isfinite(small).all():
        raise DegenerateFeatures("features contains NaN or infinite values")
    values, v = torch.linalg.eigh(small)  # ascending
    values, v = values.flip(0), v.flip(1)
    n, c = f.shape
    eigenvalues = torch.cat([values, values.new_zeros(c - n)])
    k = _pick_k(eigenvalues, energy, k, c)
    if k > n or values[k - 1] <= DUAL_TOLERANCE * values[0]:
        return None
    scale = values[:k].rsqrt()
    vectors = f.T @ (v[:, :k] * scale).to(f.device)  # (C, k), orthonormal columns
    return Basis(vectors, eigenvalues.to(feats.device), k)


def dimensional_alignment(forget: torch.Tensor, retain: torch.Tensor, energy: float = 0.9,
                          k: int | None = None, center: bool = False,
                          basis: Basis | None = None) -> Alignment:
    """DA(D_f | D_r) = ‖F_f F_fᵀ U_r U_rᵀ‖_F / ‖F_f F_fᵀ‖_F, in [0, 1].

    forget: (N_f, C), differentiable. retain: (N_r, C); its basis U_r (top-k eigenvectors of
    the retain Gram matrix, k from `energy` unless given) is detached. `center` subtracts the
    retain mean from both sets. A precomputed `basis` (e.g. from a feature bank) skips the
    retain eigendecomposition. Since U_r has orthonormal columns, ‖G U_r U_rᵀ‖ = ‖G U_r‖.
    """
    _check_shape(forget, "forget features")
    _check_shape(retain, "retain features")
    if center:
        mean = retain.detach().mean(0, keepdim=True)
        forget, retain = forget - mean, retain - mean
    if basis is None:
        basis = top_basis(retain, energy, k)
    dtype = torch.promote_types(forget.dtype, torch.float32)
    f = forget.to(dtype)
    gram = f.T @ f  # (C, C) = F_f F_fᵀ
    denominator = torch.linalg.matrix_norm(gram)
    size = denominator.item()  # the one host sync of this function: it answers both checks
    if not math.isfinite(size):
        raise DegenerateFeatures("forget features contains NaN or infinite values (or "
                                 "overflows)")
    if size <= torch.finfo(dtype).tiny:
        raise DegenerateFeatures("the forget features are all zero: DA is undefined")
    numerator = torch.linalg.matrix_norm(gram @ basis.vectors.to(dtype))
    return Alignment((numerator / denominator).clamp(max=1.0), basis.k)


def principal_angles(a: torch.Tensor, b: torch.Tensor, k_a: int, k_b: int) -> torch.Tensor:
    """Angles in degrees, ascending, between the top-k_a subspace of a (N_a, C) and the top-k_b
    subspace of b (N_b, C). min(k_a, k_b) angles; small angles are taken from sines, as
    scipy.linalg.subspace_angles does, since arccos loses them near cos = 1."""
    ua = top_basis(a, k=k_a).vectors
    ub = top_basis(b, k=k_b).vectors
    return angles_between(ua, ub)


def angles_between(ua: torch.Tensor, ub: torch.Tensor) -> torch.Tensor:
    """Principal angles (degrees, ascending) between the spans of orthonormal columns."""
    if ua.shape[1] < ub.shape[1]:
        ua, ub = ub, ua
    cross = ua.T @ ub  # (k_a, k_b)
    cosines = torch.linalg.svdvals(cross).clamp(0, 1)  # descending -> angles ascending
    sines = torch.linalg.svdvals(ub - ua @ cross).clamp(0, 1).flip(0)  # ascending
    small = cosines**2 >= 0.5
    radians = torch.where(small, torch.arcsin(sines), torch.arccos(cosines))
    return torch.sort(torch.rad2deg(radians)).values


def eigenspectrum(feats: torch.Tensor, center: bool = False) -> Spectrum:
    """Eigenvalues of FᵀF / N (or of the covariance if `center`), normalised to sum 1."""
    _check(feats, "features")
    eigenvalues = _gram_eigh(feats, center, scale=True, vectors=False)[0].flip(0).clamp(min=0)
    total = eigenvalues.sum()
    if total <= 0:
        raise DegenerateFeatures("the features are constant: their spectrum holds no energy")
    values = eigenvalues / total
    return Spectrum(values, values.cumsum(0).clamp(max=1.0))


def entropy_rank(weights: torch.Tensor) -> float:
    """exp of the entropy of non-negative `weights` normalised to sum 1 (zeros count nothing)."""
    p = weights[weights > 0].double()
    p = p / p.sum()
    return math.exp(-(p * p.log()).sum().item())


ROUND_OFF = 1e-12  # eigenvalues below this share of the largest are fp64 noise of eigh


def singular_shares(eigenvalues: torch.Tensor) -> torch.Tensor:
    """√λ_i of a Gram spectrum (the singular values up to scale), round-off set to zero: √
    would lift a 1e-16 eigenvalue to a 1e-8 share and count it as a direction."""
    lam = eigenvalues.double().clamp(min=0)
    return torch.where(lam > ROUND_OFF * lam.max(), lam, 0.0).sqrt()


def effective_rank(feats: torch.Tensor, center: bool = False) -> float:
    """Roy & Vetterli (2007): exp(H(p)), p_i = σ_i / Σσ_j over the singular values σ of F
    (N, C), of the centred F if `center`. Between 1 and min(N, C)."""
    return eigenspectrum(feats, center).effective_rank


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between two feature sets of the same N samples, (N, C1) and (N, C2)."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"CKA needs the same samples in both sets, got {x.shape[0]} and "
                         f"{y.shape[0]} rows")
    _check(x, "x")
    _check(y, "y")
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    cross = torch.linalg.matrix_norm(y.T @ x) ** 2
    norms = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if norms <= 0:
        raise DegenerateFeatures("CKA is undefined for constant features")
    return (cross / norms).item()
