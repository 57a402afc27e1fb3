"""TSV-M, Iso-C and Iso-CTS of the real tier (benchmarks/real/svd_merges.py) on tiny matrices."""

import pytest
import torch

from benchmarks.real.svd_merges import (
    METHODS,
    dense_task_matrix,
    iso_c,
    iso_cts,
    lowrank_svd,
    tsv_m,
    whiten,
)

pytestmark = pytest.mark.unit


def _factors(seed: int, m: int = 12, n: int = 10, r: int = 2, tasks: int = 3):
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(m, r, generator=g, dtype=torch.float64),
         torch.randn(r, n, generator=g, dtype=torch.float64))
        for _ in range(tasks)
    ]  # fmt: skip


def test_lowrank_svd_is_exact_and_truncated():
    b, a = _factors(0, r=3, tasks=1)[0]
    u, s, v = lowrank_svd(b, a)
    assert s.numel() == 3
    assert torch.allclose(u @ torch.diag(s) @ v.T, b @ a, atol=1e-10)
    assert torch.allclose(u.T @ u, torch.eye(3, dtype=u.dtype), atol=1e-10)
    # a zero column of b lowers the rank: the zero singular value is dropped
    b[:, 2] = 0
    assert lowrank_svd(b, a)[1].numel() == 2


def test_whiten_gives_orthonormal_columns_and_keeps_orthonormal_input():
    x = torch.randn(8, 3, dtype=torch.float64)
    w = whiten(x)
    assert torch.allclose(w.T @ w, torch.eye(3, dtype=w.dtype), atol=1e-10)
    q, _ = torch.linalg.qr(x)
    assert torch.allclose(whiten(q), q, atol=1e-10)


def test_tsv_m_of_orthogonal_tasks_is_their_sum():
    # tasks on disjoint rows and columns: nothing interferes, TSV-M = task arithmetic
    m, n = 8, 6
    b1, a1 = torch.zeros(m, 1, dtype=torch.float64), torch.zeros(1, n, dtype=torch.float64)
    b2, a2 = b1.clone(), a1.clone()
    b1[0, 0], a1[0, 1], b2[3, 0], a2[0, 4] = 2.0, 1.5, -1.0, 3.0
    merged = tsv_m([(b1, a1), (b2, a2)], alpha=1.0)
    assert torch.allclose(merged, b1 @ a1 + b2 @ a2, atol=1e-10)
    assert torch.allclose(tsv_m([(b1, a1), (b2, a2)], alpha=0.5), 0.5 * merged)


def test_tsv_m_keeps_the_task_spectra_with_orthogonal_vectors():
    factors = _factors(1)
    merged = tsv_m(factors)
    want = torch.sort(torch.cat([lowrank_svd(b, a)[1] for b, a in factors]), descending=True)[0]
    got = torch.linalg.svdvals(merged)[: want.numel()]
    assert torch.allclose(got, want, atol=1e-8)


def test_iso_c_flattens_the_summed_spectrum_in_its_subspace():
    factors = _factors(2)
    total = sum(b @ a for b, a in factors)
    s = torch.linalg.svdvals(total)
    rank = int((s > 1e-9 * s[0]).sum())
    merged = iso_c(factors, alpha=1.0)
    sm = torch.linalg.svdvals(merged)
    assert torch.allclose(sm[:rank], s[:rank].mean().expand(rank), atol=1e-8)
    assert sm[rank:].abs().max() < 1e-8  # nothing outside the sum's rank
    # same column and row spaces as the sum
    u, _, vh = torch.linalg.svd(total)
    pu, pv = u[:, :rank] @ u[:, :rank].T, vh[:rank].T @ vh[:rank]
    assert torch.allclose(pu @ merged @ pv, merged, atol=1e-8)
    assert torch.allclose(iso_c(factors, alpha=2.0), 2 * merged)


def test_iso_cts_is_isotropic_and_falls_back_to_iso_c():
    factors = _factors(3, m=20, n=16, r=3, tasks=3)
    merged = iso_cts(factors, alpha=1.0, common=0.6)
    sm = torch.linalg.svdvals(merged)
    rank = int((sm > 1e-8 * sm[0]).sum())
    # summed rank 9: round(0.6 * 9) = 5 common + 3 tasks x (9 - 5) // 3 = 1 specific
    assert rank == 8
    assert torch.allclose(sm[:rank], sm[0].expand(rank), atol=1e-8)
    # a common subspace as large as the rank leaves no task directions: Iso-C
    assert torch.allclose(iso_cts(factors, common=1.0), iso_c(factors), atol=1e-10)


@pytest.mark.parametrize("method", ["tsv_m", "iso_c", "iso_cts"])
def test_dense_task_matrices_merge_like_their_factors(method):
    # full task matrices of low rank: the dense form (Delta @ I) gives the factor form's merge
    factors = _factors(3, m=12, n=10, r=2, tasks=3)
    deltas = [b @ a for b, a in factors]
    dense = dense_task_matrix(method, deltas, alpha=1.3)
    if method == "iso_c":  # r = min(m, n) there: the flat spectrum spans every direction
        total = sum(deltas)
        s = torch.linalg.svdvals(total)
        assert torch.allclose(torch.linalg.svdvals(dense), 1.3 * s.mean().expand(10), atol=1e-8)
    else:
        assert torch.allclose(dense, METHODS[method](factors, alpha=1.3), atol=1e-8)
