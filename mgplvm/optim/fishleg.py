"""FishLeg: a learned, block-structured approximation of the damped inverse Fisher.

Hand-written here because no installable library provides FishLeg for arbitrary (GP / manifold)
parameters: the authors' reference code targets ``nn.Linear``/``nn.Conv2d`` layers only.

Reference: J. R. Garcia, F. Freddi, S. Fotiadis, M. Li, S. Vakili, A. Bernacchia, G. Hennequin,
"Fisher-Legendre (FishLeg) optimization of deep neural networks", ICLR 2023.

Maths
-----
For parameters θ with Fisher F(θ) and damping γ, write F_γ = F + γI. FishLeg learns the parameters λ
of a symmetric positive semi-definite operator Q(λ) by stochastic minimisation of the auxiliary loss

    A(λ) = E_u[ ½ uᵀ Q F_γ Q u − uᵀ Q u ],

whose minimiser over all symmetric Q is Q = F_γ⁻¹ for any probe distribution with E[uuᵀ] ≻ 0
(∇_Q A = ½(F_γ Q U + U Q F_γ) − U with U = E[uuᵀ]). The gradient of A only needs Fisher–vector
products at v = Q(λ)u, which are treated as constants: ∇_λ A = (∂v/∂λ)ᵀ(F_γ v − u), implemented
as the surrogate ``vᵀ stopgrad(F_γ v) − uᵀ v``. The parameter update is heavy-ball momentum on the
preconditioned gradient,

    m ← β m + (1 − β) Q g,        θ ← θ − η m.

Q is block diagonal over *tensors* (see :func:`build_blocks`); with isotropic probes the blockwise
minimiser of A is the inverse of each diagonal block of F_γ.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import geoopt
import torch
from torch import Tensor, nn

__all__ = [
    "FishLeg",
    "FullBlock",
    "KronBlock",
    "DiagLowRankBlock",
    "build_blocks",
    "fisher_vector_product",
    "SampleNLL",
]

SampleNLL = Callable[[], Tensor]
"""A callable drawing targets ``y ~ p(y | θ)`` from the model's own predictive (without gradient)
and returning the scalar negative log-likelihood ``−log p(y | θ)`` of those samples, differentiable
in θ. Deterministic terms (KL divergences, closed-form expectations) may be added; they contribute
their exact Hessian."""


# ----------------------------------------------------------------------------------------------
# Fisher-vector products
# ----------------------------------------------------------------------------------------------
def fisher_vector_product(
    sample_nll_fn: SampleNLL,
    params: Sequence[Tensor],
    vecs: Sequence[Sequence[Tensor]],
    mode: str = "hessian",
) -> list[list[Tensor]]:
    """Fisher–vector products ``F v`` for several probe vectors from one model-sampled NLL.

    Args:
        sample_nll_fn: see :data:`SampleNLL`; called once.
        params: the tensors θ (shapes ``s_i``).
        vecs: ``K`` probe vectors, each a list of tensors shaped like ``params``.
        mode: ``"hessian"`` — double backward, ``F v ≈ ∇_θ(∇_θ ℓ(y_s) · v)`` with ``y_s ~ p(y|θ)``.
            Unbiased because ``E_y[∇²(−log p(y|θ))] = F`` (the y-dependent second-derivative terms
            have zero mean); exact and noise-free for linear-Gaussian models and for canonical-link
            exponential families whose natural parameter is linear in θ. A single draw may be
            indefinite. ``"outer"`` — ``F v ≈ g (gᵀ v)`` with ``g = ∇_θ ℓ(y_s)``: the sampled
            (not empirical) Fisher as an outer product; always PSD but rank one per draw.

    Returns:
        ``K`` lists of tensors shaped like ``params``.
    """
    params = list(params)
    with torch.enable_grad():
        nll = sample_nll_fn()
        if mode == "hessian":
            grads = torch.autograd.grad(nll, params, create_graph=True, allow_unused=True)
            idx = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
            out: list[list[Tensor]] = []
            for k, v in enumerate(vecs):
                res = [torch.zeros_like(p) for p in params]
                if idx:
                    hv = torch.autograd.grad(
                        [grads[i] for i in idx],
                        params,
                        grad_outputs=[v[i] for i in idx],
                        retain_graph=k < len(vecs) - 1,
                        allow_unused=True,
                    )
                    res = [r if h is None else h.detach() for r, h in zip(res, hv, strict=True)]
                out.append(res)
            return out
        if mode == "outer":
            grads = torch.autograd.grad(nll, params, allow_unused=True)
            g = [
                torch.zeros_like(p) if gi is None else gi.detach()
                for p, gi in zip(params, grads, strict=True)
            ]
            out = []
            for v in vecs:
                c = sum((gi * vi).sum() for gi, vi in zip(g, v, strict=True))
                out.append([gi * c for gi in g])
            return out
    raise ValueError(f"unknown FVP mode {mode!r}; use 'hessian' or 'outer'")


# ----------------------------------------------------------------------------------------------
# Preconditioner blocks
# ----------------------------------------------------------------------------------------------
def _mode_mul(x: Tensor, A: Tensor, mode: int) -> Tensor:
    """Mode-``mode`` product ``(x ×_mode A)[..., a, ...] = Σ_b A[a, b] x[..., b, ...]``.

    ``A`` is ``(n, n)``, or ``(*B, n, n)`` with ``B = x.shape[:len(B)]`` leading *batch* modes, each
    batch element getting its own factor.
    """
    if A.dim() == 2:
        return torch.movedim(torch.tensordot(A, x, dims=([1], [mode])), 0, mode)
    nb = A.dim() - 2
    xm = torch.movedim(x, mode, -1)  # (*B, R..., n)
    shape = xm.shape
    # one batched matmul (*B, R, n) @ (*B, n, n)ᵀ: no broadcast copies of A over the R modes
    out = xm.reshape(*shape[:nb], -1, shape[-1]) @ A.transpose(-1, -2)
    return torch.movedim(out.reshape(shape), -1, mode)


class _Block(nn.Module):
    """A PSD operator Q_b acting on a list of tensors with shapes ``self.shapes``."""

    shapes: list[torch.Size]

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    def forward(self, us: Sequence[Tensor]) -> list[Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def set_scale(self, scale: float) -> None:
        """Reset Q_b to ``scale · I``."""
        raise NotImplementedError

    def scale_by(self, c: float) -> None:
        """Multiply Q_b by ``c > 0``."""
        raise NotImplementedError

    def _split(self, flat: Tensor) -> list[Tensor]:
        sizes = [math.prod(s) for s in self.shapes]
        return [c.reshape(s) for c, s in zip(flat.split(sizes), self.shapes, strict=True)]

    def dense(self) -> Tensor:
        """Q_b as an explicit ``(numel, numel)`` matrix (tests / diagnostics)."""
        p = next(self.parameters())
        eye = torch.eye(self.numel, dtype=p.dtype, device=p.device)
        cols = [torch.cat([q.reshape(-1) for q in self(self._split(e))]) for e in eye]
        return torch.stack(cols, 1)


class FullBlock(_Block):
    """Dense Q = e^{2s} L Lᵀ over the concatenation of small tensors (``n ≤ full_max``).

    Parameters λ: ``L`` ``(n, n)`` (initialised to I) and the log-scale ``s`` (initialised to
    ½ log η₀), so that Q starts at η₀ I.
    """

    def __init__(self, shapes: Sequence[torch.Size], init_scale: float, dtype, device) -> None:
        super().__init__()
        self.shapes = [torch.Size(s) for s in shapes]
        n = self.numel
        self.L = nn.Parameter(torch.eye(n, dtype=dtype, device=device))
        self.log_scale = nn.Parameter(
            torch.tensor(0.5 * math.log(init_scale), dtype=dtype, device=device)
        )

    def forward(self, us: Sequence[Tensor]) -> list[Tensor]:
        u = torch.cat([x.reshape(-1) for x in us])
        v = torch.exp(2 * self.log_scale) * (self.L @ (self.L.T @ u))
        return self._split(v)

    @torch.no_grad()
    def set_scale(self, scale: float) -> None:
        self.L.copy_(torch.eye(self.L.shape[0], dtype=self.L.dtype, device=self.L.device))
        self.log_scale.fill_(0.5 * math.log(scale))

    @torch.no_grad()
    def scale_by(self, c: float) -> None:
        self.log_scale.add_(0.5 * math.log(c))


class KronBlock(_Block):
    """Kronecker-factored Q = K diag(e^{2d}) Kᵀ with K = L₁ ⊗ … ⊗ L_k for one tensor.

    For a tensor of shape ``(n₁, …, n_k)`` each mode with ``1 < n_i ≤ kron_max`` gets a dense factor
    ``L_i`` ``(n_i, n_i)`` (initialised to I); ``d`` has the tensor's shape (elementwise log-scales,
    initialised to ½ log η₀). ``Q u = K(e^{2d} ∘ Kᵀ u)`` costs ``O(numel · Σ n_i)``. With
    constant ``d`` this is the pure Kronecker form ``Q = ⊗ e^{2d/k} L_i L_iᵀ`` (e.g. ``A ⊗ B`` for
    a matrix, as in K-FAC / FishLeg's dense-layer block); with identity factors it is diagonal;
    with orthogonal factors it is the eigenbasis form ``(U₁ ⊗ U₂) diag (U₁ ⊗ U₂)ᵀ`` that contains
    ``(A ⊗ B + γI)⁻¹`` exactly.

    ``batch_dims = b`` treats the leading ``b`` modes as a batch of independent blocks (e.g.
    neurons): the remaining modes get one factor *per batch element*, ``L_i`` ``(*B, n_i, n_i)``.

    Examples: GP variational mean ``(N, M)`` → ``L_N ⊗ L_M`` (or, batched over neurons, a dense
    ``M × M`` block per neuron); Cholesky factor ``(N, M, M)`` → ``L_N ⊗ L_M ⊗ L_M`` (batched:
    ``L_M^{(n)} ⊗ L_M'^{(n)}`` per neuron); latent means ``(T, d)`` with ``T > kron_max`` →
    ``I_T ⊗ L_d`` times a diagonal.
    """

    def __init__(
        self,
        shape: torch.Size,
        init_scale: float,
        kron_max: int,
        dtype,
        device,
        batch_dims: int = 0,
    ) -> None:
        super().__init__()
        self.shapes = [torch.Size(shape)]
        batch = tuple(shape[:batch_dims])
        self.modes = [i for i, n in enumerate(shape) if i >= batch_dims and 1 < n <= kron_max]
        eye = lambda n: torch.eye(n, dtype=dtype, device=device).expand(*batch, n, n)  # noqa: E731
        self.factors = nn.ParameterList([nn.Parameter(eye(shape[i]).clone()) for i in self.modes])
        self.log_d = nn.Parameter(
            torch.full(tuple(shape), 0.5 * math.log(init_scale), dtype=dtype, device=device)
        )

    def forward(self, us: Sequence[Tensor]) -> list[Tensor]:
        x = us[0]
        for i, L in zip(self.modes, self.factors, strict=True):
            x = _mode_mul(x, L.transpose(-1, -2), i)
        x = torch.exp(2 * self.log_d) * x
        for i, L in zip(self.modes, self.factors, strict=True):
            x = _mode_mul(x, L, i)
        return [x]

    @torch.no_grad()
    def set_scale(self, scale: float) -> None:
        for L in self.factors:
            L.copy_(torch.eye(L.shape[-1], dtype=L.dtype, device=L.device).expand_as(L))
        self.log_d.fill_(0.5 * math.log(scale))

    @torch.no_grad()
    def scale_by(self, c: float) -> None:
        self.log_d.add_(0.5 * math.log(c))


class DiagLowRankBlock(_Block):
    """Q = diag(e^{2d}) + V Vᵀ for a long vector (``n > full_max``); ``V`` is ``(n, rank)``.

    ``V`` starts small and random (at V = 0 the gradient with respect to V vanishes).
    """

    def __init__(
        self, shape: torch.Size, init_scale: float, rank: int, dtype, device, generator=None
    ) -> None:
        super().__init__()
        self.shapes = [torch.Size(shape)]
        n = self.numel
        self.log_d = nn.Parameter(
            torch.full((n,), 0.5 * math.log(init_scale), dtype=dtype, device=device)
        )
        V = torch.randn(n, rank, dtype=dtype, device=device, generator=generator)
        self.V = nn.Parameter(1e-3 * math.sqrt(init_scale) * V)

    def forward(self, us: Sequence[Tensor]) -> list[Tensor]:
        u = us[0].reshape(-1)
        v = torch.exp(2 * self.log_d) * u + self.V @ (self.V.T @ u)
        return self._split(v)

    @torch.no_grad()
    def set_scale(self, scale: float) -> None:
        self.log_d.fill_(0.5 * math.log(scale))
        self.V.mul_(1e-3 * math.sqrt(scale) / max(float(self.V.abs().max()), 1e-30))

    @torch.no_grad()
    def scale_by(self, c: float) -> None:
        self.log_d.add_(0.5 * math.log(c))
        self.V.mul_(math.sqrt(c))


def build_blocks(
    params: Sequence[Tensor],
    init_scale: float = 1.0,
    structure: str = "auto",
    full_max: int = 64,
    kron_max: int = 128,
    rank: int = 4,
    generator: torch.Generator | None = None,
    batch_dims: int = 0,
) -> list[tuple[_Block, list[int]]]:
    """Partition ``params`` into preconditioner blocks.

    ``structure="auto"``: tensors with ≤ 1 non-trivial dimension and ``numel ≤ full_max`` are pooled
    (in order) into :class:`FullBlock` s of total size ≤ ``full_max`` — so scalar hyperparameters
    (lengthscales, output scales, noise) share one dense block and their correlations are learned;
    tensors with ≥ 2 non-trivial dimensions get a :class:`KronBlock`; long vectors get a
    :class:`DiagLowRankBlock`. ``structure="full"``: one dense block over everything (small problems
    and tests). ``structure="diag"``: diagonal blocks only. ``batch_dims > 0`` (e.g. 1 for
    parameters batched over neurons): every tensor gets a :class:`KronBlock` with one set of
    factors per batch element.

    Returns a list of ``(block, indices into params)``.
    """
    if not params:
        return []
    dtype, device = params[0].dtype, params[0].device
    if structure == "full":
        return [
            (
                FullBlock([p.shape for p in params], init_scale, dtype, device),
                list(range(len(params))),
            )
        ]
    out: list[tuple[_Block, list[int]]] = []
    pool: list[int] = []
    pool_size = 0

    def flush() -> None:
        nonlocal pool, pool_size
        if pool:
            shapes = [params[j].shape for j in pool]
            out.append((FullBlock(shapes, init_scale, dtype, device), pool))
        pool, pool_size = [], 0

    for i, p in enumerate(params):
        n = p.numel()
        nontrivial = sum(1 for s in p.shape if s > 1)
        if structure == "diag":
            out.append((KronBlock(p.shape, init_scale, 0, dtype, device), [i]))
        elif structure != "auto":
            raise ValueError(f"unknown structure {structure!r}; use 'auto', 'full' or 'diag'")
        elif batch_dims > 0:
            kb = KronBlock(p.shape, init_scale, kron_max, dtype, device, batch_dims)
            out.append((kb, [i]))
        elif nontrivial <= 1 and n <= full_max:
            if pool_size + n > full_max:
                flush()
            pool.append(i)
            pool_size += n
        elif nontrivial >= 2:
            out.append((KronBlock(p.shape, init_scale, kron_max, dtype, device), [i]))
        else:
            out.append((DiagLowRankBlock(p.shape, init_scale, rank, dtype, device, generator), [i]))
    flush()
    return out


# ----------------------------------------------------------------------------------------------
# The optimiser
# ----------------------------------------------------------------------------------------------
def _manifold(p: Tensor) -> geoopt.Manifold | None:
    return p.manifold if isinstance(p, (geoopt.ManifoldParameter, geoopt.ManifoldTensor)) else None


class FishLeg(torch.optim.Optimizer):
    r"""FishLeg optimiser (Garcia et al., ICLR 2023) with Riemannian steps for manifold parameters.

    Hand-written because no library provides FishLeg for general tensors (see module docstring for
    the maths). Q(λ) ≈ (F + γI)⁻¹ is block diagonal over tensors (:func:`build_blocks`): dense
    for small vectors/scalars, Kronecker-times-diagonal for matrices and batched matrices (GP
    variational means ``(N, M)``, Cholesky factors ``(N, M, M)``, latent means ``(T, d)``),
    diagonal-plus-low-rank for long vectors.

    Update, per iteration (``g`` = gradient of the training loss):

    * Euclidean θ: ``m ← β m + (1 − β) Q g``; ``θ ← θ − η m``.
    * :class:`geoopt.ManifoldParameter` x: ``g ← egrad2rgrad(x, g)`` (tangent space), ``q = proju(x,
      Q g)``, ``m ← β m + (1 − β) q``, ``x' = retr(x, −η m)`` (``expmap`` if ``exact=True``),
      ``m ← transp(x, x', m)``. The aux loss uses the projected probes ``P u`` and ``P Q P u``,
      i.e. it fits the tangent-space Fisher ``P F P`` (the Riemannian Fisher of the embedded
      manifold).

    Auxiliary updates (Adam on λ, ``aux_steps`` steps every ``aux_every`` iterations) need
    Fisher–vector products, so they need a :data:`SampleNLL` callable. **Protocol**:

    * pass ``sample_nll_fn`` here (or via :meth:`set_sample_nll_fn`) and :meth:`step` runs the aux
      updates itself when due (every ``aux_every`` calls, starting with the first); or
    * call :meth:`update_aux` yourself (``if opt.aux_due: opt.update_aux(fn)``) before ``step``.

    Without any ``sample_nll_fn`` Q stays at its initial value (momentum SGD with step
    ``η · init_scale``) and a warning is issued once.

    Args:
        params: tensors or parameter groups (each group gets its own blocks; a group may set
            ``"structure"`` and ``"batch_dims"`` for its tensors, see :func:`build_blocks`).
        lr: η. Q approximates the inverse Fisher of the *total* loss, so η ≈ 0.1–1 is the natural
            range (η = 1, β = 0 is a damped natural-gradient / Gauss–Newton step).
        beta: momentum β.
        damping: γ.
        init_scale: η₀, the initial Q = η₀ I (before any warm start).
        aux_lr: Adam learning rate for λ.
        aux_every: K, iterations between auxiliary updates.
        aux_steps: Adam steps on λ per auxiliary update.
        aux_probes: probe vectors u per aux step (share one model-sampled NLL).
        probe: ``"gaussian"`` (u ~ N(0, I)), ``"grad"`` (u = current gradient, normalised to
            ‖u‖² = numel, as in the reference implementation), or ``"mixed"`` (alternate).
        fvp: ``"hessian"`` or ``"outer"`` (see :func:`fisher_vector_product`).
        warm_start: power iterations used, at the first aux update, to reset every block to
            ``(λ_max(F_bb) + γ)⁻¹ I`` (0 keeps ``init_scale``); see :meth:`_spectral_warm_start`.
        pretrain_steps: extra aux steps run at the first aux update (after the warm start).
        structure, full_max, kron_max, rank: block structure, see :func:`build_blocks`.
        exact: use ``expmap`` instead of ``retr`` on manifolds.
        max_rms: trust region: per tensor, the update ``η m`` is scaled down so that its
            root-mean-square entry is at most ``max_rms`` (None disables). Needed where F is
            nearly singular — e.g. latents and lengthscales at initialisation, when tuning curves
            are still flat — so that Q ≈ 1/γ would otherwise produce huge steps.
        scale_rate: after each aux step, multiply every block by ``clip(c*, 1/e, e)^scale_rate``
            where c* is the exact minimiser of A along that block's overall scale (see
            :meth:`_rescale_blocks`; 0 disables).
        seed: seeds the probe generator.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 0.5,
        beta: float = 0.9,
        damping: float = 1e-2,
        init_scale: float = 1e-2,
        aux_lr: float = 1e-2,
        aux_every: int = 10,
        aux_steps: int = 1,
        aux_probes: int = 1,
        probe: str = "gaussian",
        fvp: str = "hessian",
        warm_start: int = 0,
        pretrain_steps: int = 0,
        structure: str = "auto",
        full_max: int = 64,
        kron_max: int = 128,
        rank: int = 4,
        exact: bool = False,
        max_rms: float | None = None,
        scale_rate: float = 0.5,
        sample_nll_fn: SampleNLL | None = None,
        seed: int = 0,
    ) -> None:
        if lr <= 0 or not 0 <= beta < 1 or damping < 0 or init_scale <= 0:
            raise ValueError("need lr > 0, 0 <= beta < 1, damping >= 0, init_scale > 0")
        if probe not in ("gaussian", "grad", "mixed") or fvp not in ("hessian", "outer"):
            raise ValueError(f"bad probe={probe!r} or fvp={fvp!r}")
        defaults = dict(lr=lr, beta=beta, damping=damping)
        super().__init__(params, defaults)
        self.aux_every = int(aux_every)
        self.aux_steps = int(aux_steps)
        self.aux_probes = int(aux_probes)
        self.probe = probe
        self.fvp = fvp
        self.warm_start = int(warm_start)
        self.pretrain_steps = int(pretrain_steps)
        self.exact = exact
        self.max_rms = max_rms
        self.scale_rate = float(scale_rate)
        self._scale_stats: dict[int, tuple[float, float]] = {}
        self._sample_nll_fn = sample_nll_fn
        self._warned = False
        self._n_steps = 0
        self._n_aux = 0
        first = self.param_groups[0]["params"][0]
        self._gen = torch.Generator(device=first.device)
        self._gen.manual_seed(seed)
        # flat parameter list; each block acts on some indices of it (never across groups)
        self._flat: list[Tensor] = []
        self._group_idx: list[int] = []
        self._blocks: list[tuple[_Block, list[int]]] = []
        for gi, group in enumerate(self.param_groups):
            off = len(self._flat)
            self._flat += list(group["params"])
            self._group_idx += [gi] * len(group["params"])
            for block, idx in build_blocks(
                group["params"],
                init_scale,
                group.get("structure", structure),
                full_max,
                kron_max,
                rank,
                self._gen,
                group.get("batch_dims", 0),
            ):
                self._blocks.append((block, [off + i for i in idx]))
        self._n_probe = 0
        self.aux = nn.ModuleList([b for b, _ in self._blocks])
        self.aux_opt = torch.optim.Adam(self.aux.parameters(), lr=aux_lr)
        self.aux_history: list[float] = []

    # ------------------------------------------------------------------ protocol helpers
    def set_sample_nll_fn(self, fn: SampleNLL | None) -> None:
        """Set the callable used by :meth:`step` for automatic auxiliary updates."""
        self._sample_nll_fn = fn

    @property
    def aux_due(self) -> bool:
        """True when the next :meth:`step` is an auxiliary-update iteration."""
        return self._n_steps % self.aux_every == 0

    def _params(self) -> list[Tensor]:
        return self._flat

    @staticmethod
    def _tangent(p: Tensor, u: Tensor, egrad: bool = False) -> Tensor:
        """Tangent projection (or egrad→rgrad) at ``p``; never differentiates through ``p``."""
        m = _manifold(p)
        if m is None:
            return u
        x = p.detach()
        return m.egrad2rgrad(x, u) if egrad else m.proju(x, u)

    @torch.no_grad()
    def precondition(self, vecs: Sequence[Tensor] | None = None) -> list[Tensor]:
        """``P Q P v`` for every parameter (default ``v`` = current Riemannian gradients).

        Returns one tensor per parameter, in :meth:`_params` order (zeros where grad is None).
        """
        params = self._flat
        if vecs is None:
            vecs = [
                torch.zeros_like(p) if p.grad is None else self._tangent(p, p.grad, egrad=True)
                for p in params
            ]
        return self._apply_q(vecs)

    # ------------------------------------------------------------------ auxiliary loss
    def _probes(self, params: list[Tensor]) -> list[Tensor]:
        self._n_probe += 1
        use_grad = self.probe == "grad" or (self.probe == "mixed" and self._n_probe % 2 == 0)
        if use_grad and all(p.grad is not None for p in params):
            g = [self._tangent(p, p.grad.detach(), egrad=True) for p in params]
            sq = sum(float((x * x).sum()) for x in g)
            n = sum(p.numel() for p in params)
            if sq > 0:
                c = math.sqrt(n / sq)
                return [x * c for x in g]
        return [
            self._tangent(
                p, torch.randn(p.shape, dtype=p.dtype, device=p.device, generator=self._gen)
            )
            for p in params
        ]

    def _spectral_warm_start(self, fn: SampleNLL) -> None:
        """Reset each block to Q_b = (λ_max(P F_bb P) + γ)⁻¹ I by power iteration.

        ``warm_start`` iterations; each draws one sampled NLL and back-propagates one probe per
        block (zero outside the block), so the cost is ``warm_start`` forward passes and
        ``warm_start × n_blocks`` double-backward passes. With this scale the first steps are
        those of gradient descent with step ``η/λ_max`` — stable — and the auxiliary loss then
        learns the rest of the spectrum.
        """
        params = self._flat
        gamma = self.param_groups[0]["damping"]
        vs = []
        for _, idx in self._blocks:
            v = [torch.zeros_like(p) for p in params]
            for i in idx:
                v[i] = self._tangent(
                    params[i],
                    torch.randn(
                        params[i].shape,
                        dtype=params[i].dtype,
                        device=params[i].device,
                        generator=self._gen,
                    ),
                )
            vs.append(v)
        lam = [0.0] * len(vs)
        for _ in range(self.warm_start):
            fvs = fisher_vector_product(fn, params, vs, self.fvp)
            for b, ((_, idx), v, fv) in enumerate(zip(self._blocks, vs, fvs, strict=True)):
                w = [self._tangent(params[i], fv[i]) for i in idx]
                vv = sum(float((v[i] * v[i]).sum()) for i in idx)
                lam[b] = abs(sum(float((v[i] * wi).sum()) for i, wi in zip(idx, w, strict=True)))
                lam[b] /= max(vv, 1e-300)
                nrm = math.sqrt(sum(float((wi * wi).sum()) for wi in w))
                if nrm > 0:
                    for i, wi in zip(idx, w, strict=True):
                        v[i] = wi / nrm
        for (block, _), lb in zip(self._blocks, lam, strict=True):
            block.set_scale(1.0 / (lb + max(gamma, 1e-12)))

    def update_aux(self, sample_nll_fn: SampleNLL | None = None, steps: int | None = None) -> float:
        """Run ``steps`` (default ``aux_steps``) Adam steps on the auxiliary loss A(λ).

        Each step draws ``aux_probes`` probes ``u``, forms ``v = P Q(λ) P u``, computes
        ``F v`` (one call of ``sample_nll_fn``) and descends ``vᵀ sg(F_γ v) − uᵀ v``. On the first
        call it also performs the ``warm_start`` / ``pretrain_steps`` initialisation. Returns the
        mean value of A = ½ vᵀ F_γ v − uᵀ v over the steps (also appended to ``aux_history``).
        """
        fn = sample_nll_fn if sample_nll_fn is not None else self._sample_nll_fn
        if fn is None:
            raise ValueError("update_aux needs a sample_nll_fn (see FishLeg docstring)")
        steps = self.aux_steps if steps is None else int(steps)
        if self._n_aux == 0:
            if self.warm_start > 0:
                self._spectral_warm_start(fn)
                self.aux_opt.state.clear()
            steps += self.pretrain_steps
        params = self._flat
        gamma = self.param_groups[0]["damping"]
        total = 0.0
        for _ in range(steps):
            us = [self._probes(params) for _ in range(self.aux_probes)]
            self.aux_opt.zero_grad(set_to_none=True)
            uv = torch.zeros(len(params), dtype=torch.float64)  # Σ_probes u_j·v_j
            vfv = torch.zeros(len(params), dtype=torch.float64)  # Σ_probes v_j·F_γ v_j
            with torch.enable_grad():
                vs = [self._apply_q(u) for u in us]
                fvs = fisher_vector_product(
                    fn, params, [[x.detach() for x in v] for v in vs], self.fvp
                )
                surrogate = 0.0
                for u, v, fv in zip(us, vs, fvs, strict=True):
                    for j, (p, uj, vj, fvj) in enumerate(zip(params, u, v, fv, strict=True)):
                        fg = self._tangent(p, fvj) + gamma * vj.detach()
                        surrogate = surrogate + (vj * fg).sum() - (uj * vj).sum()
                        uv[j] += float((uj * vj.detach()).sum())
                        vfv[j] += float((vj.detach() * fg).sum())
                (surrogate / len(us)).backward()
            self.aux_opt.step()
            total += float(0.5 * vfv.sum() - uv.sum()) / len(us)
            if self.scale_rate > 0:
                self._rescale_blocks(uv, vfv)
        self._n_aux += 1
        mean = total / max(steps, 1)
        self.aux_history.append(mean)
        return mean

    def _rescale_blocks(self, uv: Tensor, vfv: Tensor) -> None:
        """Line search of A along each block's overall scale, from running averages.

        Scaling Q_b by c changes the block's share of A to ½c² vᵀF_γv − c uᵀv (cross-block terms
        average out for independent probes), minimised at c* = E[uᵀv] / E[vᵀF_γv]. Both
        expectations are exponential moving averages (factor 0.9) over aux steps, kept consistent
        when the block is rescaled (uᵀv ∝ c, vᵀF_γv ∝ c²). Each block is multiplied by
        ``clip(c*, e⁻¹, e)^scale_rate``, which lets Q follow the fast growth of F during training
        (e.g. latent Fishers grow by orders of magnitude as tuning curves form) that Adam on λ
        tracks too slowly. Skipped while the averaged curvature is not positive.
        """
        rho = 0.9
        for b, (block, idx) in enumerate(self._blocks):
            num, den = float(uv[idx].sum()), float(vfv[idx].sum())
            if not (math.isfinite(num) and math.isfinite(den)):
                continue
            n0, d0 = self._scale_stats.get(b, (num, den))
            num, den = rho * n0 + (1 - rho) * num, rho * d0 + (1 - rho) * den
            c = 1.0
            if num > 0 and den > 0:
                log_c = min(max(math.log(num) - math.log(den), -1.0), 1.0)
                c = math.exp(self.scale_rate * log_c)
                block.scale_by(c)
            self._scale_stats[b] = (num * c, den * c * c)

    def _apply_q(self, us: Sequence[Tensor]) -> list[Tensor]:
        """Differentiable (in λ) ``P Q P u``; ``us`` in :meth:`_params` order."""
        out: list[Tensor] = [torch.zeros_like(u) for u in us]
        for block, idx in self._blocks:
            qs = block([us[i] for i in idx])
            for i, q in zip(idx, qs, strict=True):
                out[i] = self._tangent(self._flat[i], q)
        return out

    def dense_q(self) -> Tensor:
        """The full Q as a block-diagonal ``(P, P)`` matrix over all parameters (tests)."""
        with torch.no_grad():
            return torch.block_diag(*[b.dense() for b, _ in self._blocks])

    # ------------------------------------------------------------------ the step
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor | None:  # type: ignore[override]
        """One FishLeg iteration; runs an auxiliary update first when due (see class docstring).

        ``closure`` (optional) re-evaluates the loss and calls ``backward``; its value is returned.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self.aux_due:
            if self._sample_nll_fn is not None:
                self.update_aux()
            elif self._n_aux == 0 and not self._warned:
                warnings.warn(
                    "FishLeg has no sample_nll_fn: Q stays at its initial value "
                    "(momentum SGD); pass sample_nll_fn or call update_aux()",
                    stacklevel=2,
                )
                self._warned = True
        qgs = self.precondition()
        with torch.no_grad():
            for p, gi, qg in zip(self._flat, self._group_idx, qgs, strict=True):
                if p.grad is None:
                    continue
                group = self.param_groups[gi]
                lr, beta = group["lr"], group["beta"]
                state = self.state[p]
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(p)
                m = state["momentum"]
                m.mul_(beta).add_(qg, alpha=1 - beta)
                delta = -lr * m
                if self.max_rms is not None:
                    rms = float(delta.norm()) / math.sqrt(max(delta.numel(), 1))
                    if rms > self.max_rms:
                        delta = delta * (self.max_rms / rms)
                man = _manifold(p)
                if man is None:
                    p.add_(delta)
                else:
                    new = man.expmap(p, delta) if self.exact else man.retr(p, delta)
                    m.copy_(man.transp(p, new, m))
                    p.copy_(new)
        self._n_steps += 1
        return loss

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["fishleg"] = {
            "aux": self.aux.state_dict(),
            "aux_opt": self.aux_opt.state_dict(),
            "n_steps": self._n_steps,
            "n_aux": self._n_aux,
            "scale_stats": dict(self._scale_stats),
            "n_probe": self._n_probe,
            "generator": self._gen.get_state(),
        }
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("fishleg", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            self.aux.load_state_dict(extra["aux"])
            self.aux_opt.load_state_dict(extra["aux_opt"])
            self._n_steps = int(extra["n_steps"])
            self._n_aux = int(extra["n_aux"])
            self._scale_stats = dict(extra.get("scale_stats", {}))
            self._n_probe = int(extra.get("n_probe", self._n_probe))
            if "generator" in extra:  # the probe draws continue where they stopped
                self._gen.set_state(extra["generator"])
