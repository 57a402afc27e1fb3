"""Data-free SVD merges that mergekit 0.1.5 lacks, written from their papers, for LoRA task vectors.

    python -m benchmarks.real.svd_merges --method tsv_m|iso_c|iso_cts --alpha 1.0 \
        --adapters DIR,DIR,... OUT
    python -m benchmarks.real.svd_merges --method tsv_m|iso_c|iso_cts --alpha 1.0 \
        --experts DIR,DIR,... OUT

- **TSV-M** (Gargiulo et al., "Task Singular Vectors: Reducing Task Interference in Model
  Merging", CVPR 2025). Per weight matrix, each task matrix Delta_i = U_i S_i V_i^T is cut to its
  top k = r/T singular triplets (r = min(m, n), T tasks); the kept left vectors of all tasks are
  concatenated into U = [U_1 .. U_T] and orthogonalised by whitening, U_perp = P Q^T from the
  SVD U = P Sigma Q^T (the orthogonal matrix nearest to U); the same for V; the merged update is
  U_perp blockdiag(S_1 .. S_T) V_perp^T, added to the base with the scale alpha.
- **Iso-C** (Marczak et al., "No Task Left Behind: Isotropic Model Merging with Common and
  Task-Specific Subspaces", ICML 2025). The task-arithmetic sum Delta = sum_i Delta_i = U S V^T
  keeps its singular vectors and flattens its spectrum to the mean singular value:
  mean(S) U V^T, times alpha.
- **Iso-CTS** (same paper). The top k = round(common * r) directions of the sum form the common
  subspace; each task adds its top (r - k) / T directions after the common subspace is projected
  out of its task matrix (left side); the concatenated left and right vectors are orthogonalised
  by whitening as in TSV-M, and the spectrum is flat at the mean of all the selected singular
  values, times alpha.

LoRA task matrices are low-rank (rank 8 each here): for them r is the numerical rank of the
matrix being decomposed (singular values above 1e-6 of the largest), not min(m, n). With the
papers' full r, Iso-C and Iso-CTS would give the null space of the sum (singular value 0) the
mean singular value, i.e. add an arbitrary rotation to every weight; TSV-M's k = r/T would keep
every direction of a rank-8 adapter anyway (min(m, n) / T >= 64 > 8 for these shapes). All
decompositions go through the factors (Delta_i = B_i A_i, exact): QR of the two thin factors and
the SVD of the small core, so no m x n SVD is ever taken. Tensors other than the adapters' 2-D
projections are the base's (the adapters have no others).

`--experts` (benchmarks/real/dense.py): the same three over full fine-tunes, whose task
matrices (expert - base) are dense, so r = min(m, n) as in the papers: Iso-C takes the SVD of
each 2-D tensor's sum in full; TSV-M and Iso-CTS go through their factor forms with
Delta_i = Delta_i @ I. The 1-D tensors (norm weights) get the mean of the experts' differences.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

RANK_TOL = 1e-6


def lowrank_svd(
    b: torch.Tensor, a: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD (U, S, V) of b @ a (m x k times k x n), truncated to its numerical rank.

    U is m x r, S has r entries (descending), V is n x r: b @ a = U diag(S) V^T.
    """
    qb, rb = torch.linalg.qr(b.double())
    qa, ra = torch.linalg.qr(a.double().T)
    u, s, vh = torch.linalg.svd(rb @ ra.T, full_matrices=False)
    keep = s > RANK_TOL * s[0] if s.numel() and s[0] > 0 else torch.zeros_like(s, dtype=torch.bool)
    return qb @ u[:, keep], s[keep], qa @ vh[keep].T


def whiten(x: torch.Tensor) -> torch.Tensor:
    """The matrix with orthonormal columns nearest to x (Frobenius): P Q^T from x = P S Q^T."""
    p, _, qh = torch.linalg.svd(x, full_matrices=False)
    return p @ qh


def tsv_m(factors: list[tuple[torch.Tensor, torch.Tensor]], alpha: float = 1.0) -> torch.Tensor:
    """TSV-M of task matrices given as factors (B_i, A_i), Delta_i = B_i @ A_i; dense m x n."""
    b0, a0 = factors[0]
    full = min(b0.shape[0], a0.shape[1])
    k = max(1, full // len(factors))
    us, ss, vs = [], [], []
    for b, a in factors:
        u, s, v = lowrank_svd(b, a)
        us.append(u[:, :k])
        ss.append(s[:k])
        vs.append(v[:, :k])
    u, s, v = torch.cat(us, 1), torch.cat(ss), torch.cat(vs, 1)
    if u.shape[1] > full:  # more kept vectors than dimensions: keep the largest
        top = torch.argsort(s, descending=True)[:full]
        u, s, v = u[:, top], s[top], v[:, top]
    merged = whiten(u) @ torch.diag(s) @ whiten(v).T
    return (alpha * merged).to(b0.dtype)


def _summed(factors):
    return torch.cat([b for b, _ in factors], 1), torch.cat([a for _, a in factors], 0)


def iso_c(factors: list[tuple[torch.Tensor, torch.Tensor]], alpha: float = 1.0) -> torch.Tensor:
    """Iso-C: the task-arithmetic sum's singular vectors with a flat spectrum at its mean."""
    u, s, v = lowrank_svd(*_summed(factors))
    return (alpha * s.mean() * (u @ v.T)).to(factors[0][0].dtype)


def iso_cts(
    factors: list[tuple[torch.Tensor, torch.Tensor]], alpha: float = 1.0, common: float = 0.8
) -> torch.Tensor:
    """Iso-CTS: the sum's top directions (common subspace) plus each task's top directions
    outside it, orthogonalised, with a flat spectrum at the mean selected singular value."""
    dtype = factors[0][0].dtype
    u, s, v = lowrank_svd(*_summed(factors))
    r = s.numel()
    k = min(r, max(1, round(common * r)))
    per_task = (r - k) // len(factors)
    if per_task == 0:
        return (alpha * s.mean() * (u @ v.T)).to(dtype)
    uc, sc, vc = u[:, :k], s[:k], v[:, :k]
    us, ss, vs = [uc], [sc], [vc]
    for b, a in factors:
        b_out = b.double() - uc @ (uc.T @ b.double())  # (I - Uc Uc^T) Delta_i, as factors
        ut, st, vt = lowrank_svd(b_out, a)
        us.append(ut[:, :per_task])
        ss.append(st[:per_task])
        vs.append(vt[:, :per_task])
    s_all = torch.cat(ss)
    merged = s_all.mean() * (whiten(torch.cat(us, 1)) @ whiten(torch.cat(vs, 1)).T)
    return (alpha * merged).to(dtype)


METHODS = {"tsv_m": tsv_m, "iso_c": iso_c, "iso_cts": iso_cts}


def adapter_factors(folder: Path) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """PEFT LoRA adapter -> {base weight name: (scaling * B, A)}, Delta = scaling * B @ A."""
    from safetensors.torch import load_file

    cfg = json.loads((folder / "adapter_config.json").read_text())
    scaling = cfg["lora_alpha"] / cfg["r"]
    tensors = load_file(str(folder / "adapter_model.safetensors"))
    out = {}
    for key, a in tensors.items():
        if ".lora_A." not in key:
            continue
        b = tensors[key.replace(".lora_A.", ".lora_B.")]
        name = key.removeprefix("base_model.model.").replace(".lora_A.weight", ".weight")
        out[name] = (scaling * b, a)
    return out


def merge(base: Path, adapters: list[Path], method: str, alpha: float, out: Path) -> dict:
    """base + merged update for every adapted matrix, written as an HF checkpoint in `out`."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(base / "model.safetensors"))
    per_adapter = [adapter_factors(a) for a in adapters]
    names = sorted(set().union(*per_adapter))
    fn = METHODS[method]
    for name in names:
        pairs = [f[name] for f in per_adapter if name in f]
        state[name] = state[name] + fn(pairs, alpha).to(state[name].dtype)
    out.mkdir(parents=True, exist_ok=True)
    for f in base.iterdir():
        if f.name != "model.safetensors" and f.is_file():
            shutil.copy(f, out / f.name)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return {"matrices": len(names)}


def iso_c_dense(deltas: list[torch.Tensor], alpha: float = 1.0) -> torch.Tensor:
    """Iso-C of full task matrices (dense fine-tunes): the sum's SVD with its spectrum flat at
    the mean singular value (over the full min(m, n)), times alpha."""
    total = torch.stack([d.double() for d in deltas]).sum(0)
    u, s, vh = torch.linalg.svd(total, full_matrices=False)
    return (alpha * s.mean() * (u @ vh)).to(deltas[0].dtype)


def dense_task_matrix(method: str, deltas: list[torch.Tensor], alpha: float) -> torch.Tensor:
    """One merged 2-D update from full task matrices: Iso-C by iso_c_dense (r = min(m, n));
    TSV-M and Iso-CTS by their factor forms with Delta_i = Delta_i @ I, whose numerical rank
    is the full rank of a dense fine-tune's difference."""
    if method == "iso_c":
        return iso_c_dense(deltas, alpha)
    eye = torch.eye(deltas[0].shape[1], dtype=deltas[0].dtype)
    return METHODS[method]([(d, eye) for d in deltas], alpha)


def dense_merge(base: Path, experts: list[Path], method: str, alpha: float, out: Path) -> dict:
    """An SVD merge of full checkpoints: every 2-D tensor base + dense_task_matrix(expert -
    base); the 1-D tensors (norm weights) base + the mean of the experts' differences."""
    from safetensors.torch import load_file, save_file

    state = load_file(str(base / "model.safetensors"))
    models = [load_file(str(e / "model.safetensors")) for e in experts]
    matrices = 0
    for name, w in state.items():
        deltas = [m[name] - w for m in models]
        if w.dim() == 2:
            state[name] = w + dense_task_matrix(method, deltas, alpha)
            matrices += 1
        else:
            state[name] = w + torch.stack(deltas).mean(0)
    out.mkdir(parents=True, exist_ok=True)
    for f in base.iterdir():
        if f.name != "model.safetensors" and f.is_file():
            shutil.copy(f, out / f.name)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    return {"matrices": matrices}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", choices=sorted(METHODS), required=True)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--adapters", help="comma-separated PEFT adapter folders")
    parser.add_argument("--experts", help="comma-separated full checkpoints")
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    from benchmarks.real import lm

    lm.threads()
    if args.experts:
        info = dense_merge(args.base, [Path(p) for p in args.experts.split(",")], args.method,
                           args.alpha, args.out)  # fmt: skip
        print(f"{args.method} alpha {args.alpha}: {info['matrices']} matrices -> {args.out}")
        return
    info = merge(args.base, [Path(p) for p in args.adapters.split(",")], args.method,
                 args.alpha, args.out)  # fmt: skip
    print(f"{args.method} alpha {args.alpha}: {info['matrices']} matrices merged into {args.out}")


if __name__ == "__main__":
    main()
