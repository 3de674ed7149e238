"""A stiff integrator for gradient flow's late phase: SUNDIALS CVODE (variable-order BDF with error
control) through ``scikit-sundae``, with matrix-free Krylov (GMRES) linear solves.

Why: once the large components are fitted, gradient flow d theta/dt = -grad L(theta) is stiff. An
explicit method's step is limited by stability to about 3.3 / lambda_max(Hessian) (RK45) while
the loss decays at the rate of the smallest eigenvalues; an implicit BDF step is limited by
accuracy only. Each BDF step solves (I - gamma J) x = r with J = d(-grad L)/d theta = -H (the
Hessian), by GMRES on Jacobian-times-vector products, which are either

- exact Hessian-vector products ``-H v`` (autograd's double backward through the objective: the
  gradient's graph is built once per linear solve at CVODE's current iterate (``jtsetup``), then
  each product is one backward pass through it), or
- CVODE's default difference quotient (f(y + sigma v) - f(y)) / sigma (one field evaluation).

Preconditioner (deep matrix factorization on matrix completion, :class:`DMFCompletionPrecond`):
with the observation map replaced by its average (P_Omega ~ (m / (d1 d2)) I) the Gauss-Newton
Hessian is c J^T J, J: (V_1..V_N) -> sum_k A_k V_k B_k (A_k = W_N..W_{k+1}, B_k = W_{k-1}..W_1),
c = loss curvature x m / (d1 d2). For balanced factors J J^T X = sum_k (W W^T)^((N-k)/N) X
(W^T W)^((k-1)/N) (Arora, Cohen, Hazan 2018, the end-to-end dynamics), which is diagonal in
W's singular bases, so by Woodbury
(I + gamma c J^T J)^{-1} r = r - gamma c J^T (I + gamma c J J^T)^{-1} J r is exact for that
model and costs one SVD of W per preconditioner setup and a few matrix products per solve.

The solver object mimics scipy's ``OdeSolver`` (``step()``, ``t``, ``y``, ``status``,
``dense_output()`` on the last step, by CVODE's own interpolating polynomial), so the flow loop in
:mod:`factorflow.dynamics.train` drives it like the scipy methods (schedules, loss-threshold
crossings located on the dense output).

Measured (``benchmarks/bench_stiff.py``, stored in ``benchmarks/results/bench_stiff.json``:
Arora et al.'s 100x100 rank-5 completion, depth 3, to train mse 1e-8, one thread): RK45 268,544
evaluations; CVODE with the difference quotient 7,239, with exact Hvps 7,008 (gradients and Hvps
counted alike), with the preconditioner 3,863 (difference quotient) / 3,784 (exact),
``Flow(method="auto")`` 4,520; end states equal to RK45's (top-5 singular values within 1.9e-8
relative). Exact Hvps save few evaluations here (3 %) and each costs more than a gradient
(double backward: 19.3 s against 12.5 s), so the difference quotient is the default.

Optional dependency: ``pip install 'factorflow[stiff]'`` (``scikit-sundae>=1.2``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import scipy.integrate
import torch

__all__ = [
    "CVODESolver",
    "DMFCompletionPrecond",
    "HessianJv",
    "STIFF_EXTRA_HINT",
    "require_sundials",
    "rk45_stiffness",
    "sundials_available",
]

STIFF_EXTRA_HINT = (
    "flow method 'cvode' needs scikit-sundae (SUNDIALS CVODE): "
    "pip install 'factorflow[stiff]' (or: pip install 'scikit-sundae>=1.2')"
)


def sundials_available() -> bool:
    """Whether ``scikit-sundae`` (``sksundae``) imports."""
    try:
        import sksundae.cvode  # noqa: F401
    except ImportError:
        return False
    return True


def require_sundials() -> None:
    """Raise an ImportError naming the ``stiff`` extra when scikit-sundae is missing."""
    if not sundials_available():
        raise ImportError(STIFF_EXTRA_HINT)


class HessianJv:
    """Exact Jacobian-times-vector of the gradient-flow field f(theta) = -grad L(theta):
    J v = -H v, H the Hessian of sum_b L_b (runs are independent, so H is block diagonal over
    runs), by autograd's double backward through ``loss_fn``.

    ``setup(y)`` linearizes at the flat state ``y`` (n,); ``__call__(v)`` (n,) -> (n,): the
    first product after a setup builds the gradient's graph (forward + backward with
    ``create_graph``), every product is one backward pass through it. Each product counts as one
    evaluation (``n_products``; ``n_setups`` counts the graphs built, which the first product of
    each linear solve pays for).
    ``unflat``/``flat`` convert between the flat float64 state and the (B, ...) parameter list;
    ``mask()`` returns the active runs (B,) bool or None: inactive runs' rows of J v are zero, as
    their field is."""

    def __init__(
        self,
        loss_fn: Callable[[Sequence[torch.Tensor]], torch.Tensor],
        unflat: Callable[[np.ndarray], list[torch.Tensor]],
        flat: Callable[[Sequence[torch.Tensor]], np.ndarray],
        mask: Callable[[], torch.Tensor | None] = lambda: None,
    ) -> None:
        self.loss_fn, self.unflat, self.flat, self.mask = loss_fn, unflat, flat, mask
        self.n_setups = 0
        self.n_products = 0
        self._y: np.ndarray | None = None
        self._ps: list[torch.Tensor] | None = None
        self._g: tuple[torch.Tensor, ...] | None = None

    def setup(self, y: np.ndarray) -> None:
        """Linearize at ``y``: the gradient's graph is built lazily by the first product."""
        self._y = np.array(y)
        self._ps = self._g = None

    def __call__(self, v: np.ndarray) -> np.ndarray:
        if self._g is None:
            assert self._y is not None, "HessianJv.setup first"
            self.n_setups += 1
            ps = [p.detach().requires_grad_(True) for p in self.unflat(self._y)]
            with torch.enable_grad():
                g = torch.autograd.grad(self.loss_fn(ps).sum(), ps, create_graph=True)
            self._ps, self._g = ps, g
        self.n_products += 1
        vs = self.unflat(np.array(v))
        with torch.enable_grad():
            hv = torch.autograd.grad(self._g, self._ps, vs, retain_graph=True)
        m = self.mask()
        if m is not None:
            hv = [h * m.reshape(-1, *([1] * (h.ndim - 1))).to(h.dtype) for h in hv]
        return -self.flat([h.detach() for h in hv])


class DMFCompletionPrecond:
    """Preconditioner P ~ I + gamma H for deep matrix factorization on matrix completion (see the
    module docstring): P^{-1} r = r - gamma c J^T (I + gamma c J J^T)^{-1} J r with the balanced
    closed form of J J^T (diagonal in the singular bases of W = W_N...W_1, weights
    D_ij = sum_{k=1}^N s_i^(2(N-k)/N) s_j^(2(k-1)/N), s padded with zeros) and
    c = l''(r) m / (d1 d2) (``mse``: 2 / (d1 d2); ``half_sse``: m / (d1 d2)).

    In W's singular bases, with A_j = U^T (W_N..W_{j+1}) and B_j = (W_{j-1}..W_1) V:
    Y = sum_j A_j R_j B_j, X = Y / (1 + gamma c D), correction_j = A_j^T X B_j^T.

    ``setup(y)`` factors the state (one batched SVD, in the state's dtype); ``solve(r, gamma)``
    (n,) -> (n,); with square factors of one size and ``stack`` the N factors' products are
    stacked into one batched product (``benchmarks/bench_precond.py --stacking``). ``dtype``: the
    precision of the solves' products (default float32: a preconditioner only steers GMRES, whose
    right-preconditioned residual is checked in the state's float64; on the depth-4 completion
    cell of ``benchmarks/bench_precond.py`` the run is 1.24x faster than with float64 products
    (2 idle cores), its end state equal to 2e-8 relative)."""

    CURVATURE = {"mse": lambda m: 2.0 / m, "half_sse": lambda m: 1.0}

    def __init__(
        self,
        objective,
        unflat: Callable[[np.ndarray], list[torch.Tensor]],
        flat: Callable[[Sequence[torch.Tensor]], np.ndarray],
        dtype: torch.dtype = torch.float32,
        stack: bool = True,
    ) -> None:
        self.unflat, self.flat, self.dtype, self.stack = unflat, flat, dtype, stack
        d1, d2 = objective.problem.shape
        m = int(objective.problem.obs.values.shape[-1])
        self.c = self.CURVATURE[objective.loss](m) * m / (d1 * d2)
        self.n_setups = 0
        self.n_solves = 0
        self._fs: list[torch.Tensor] | None = None

    @staticmethod
    def applies(objective: object) -> bool:
        """True for a :class:`~factorflow.objectives.DMFObjective` on matrix completion with a
        loss this preconditioner knows."""
        from factorflow.objectives import DMFObjective
        from factorflow.problems.matrix import MatrixCompletion

        return (
            isinstance(objective, DMFObjective)
            and isinstance(objective.problem, MatrixCompletion)
            and objective.loss in DMFCompletionPrecond.CURVATURE
        )

    def setup(self, y: np.ndarray) -> None:
        from factorflow.factorizations.dmf import _prefix_suffix

        self.n_setups += 1
        fs = [f.detach() for f in self.unflat(np.array(y))]
        N = len(fs)
        below, above = _prefix_suffix(fs)  # W_{j-1}..W_1 and W_N..W_{j+1}
        W = fs[0] if N == 1 else above[0] @ fs[0]  # (B, d1, d2)
        U, s, Vh = torch.linalg.svd(W, full_matrices=True)
        B, d1, d2 = W.shape
        si = torch.zeros(B, d1, dtype=W.dtype, device=W.device)
        sj = torch.zeros(B, d2, dtype=W.dtype, device=W.device)
        si[:, : s.shape[1]], sj[:, : s.shape[1]] = s, s
        D = torch.zeros(B, d1, d2, dtype=W.dtype, device=W.device)
        for k in range(1, N + 1):
            D += (si ** (2.0 * (N - k) / N))[:, :, None] * (sj ** (2.0 * (k - 1) / N))[:, None, :]
        Ut, V = U.transpose(-1, -2), Vh.transpose(-1, -2)
        A = [(Ut if a is None else Ut @ a).to(self.dtype) for a in above]
        Bs = [(V if b is None else b @ V).to(self.dtype) for b in below]
        if self.stack and len({tuple(f.shape) for f in fs}) == 1:  # square, equal factors
            A, Bs = torch.stack(A), torch.stack(Bs)  # (N, B, d, d)
        self._A, self._B = A, Bs
        self._fs, self._D = fs, D.to(self.dtype)

    def solve(self, r: np.ndarray, gamma: float) -> np.ndarray:
        assert self._fs is not None, "DMFCompletionPrecond.setup first"
        self.n_solves += 1
        gc = gamma * self.c
        A, Bm = self._A, self._B
        if isinstance(A, torch.Tensor):  # the flat state concatenates the (B, d, d) factors
            R = torch.from_numpy(np.array(r)).to(device=A.device, dtype=self.dtype).view(A.shape)
            X = (A @ R @ Bm).sum(0) / (1.0 + gc * self._D)
            corr = A.transpose(-1, -2) @ X @ Bm.transpose(-1, -2)
            return r - gc * corr.reshape(-1).to(torch.float64).cpu().numpy()
        rs = [x.to(self.dtype) for x in self.unflat(np.array(r))]
        Y = sum(a @ R @ b for a, R, b in zip(A, rs, Bm, strict=True))
        X = Y / (1.0 + gc * self._D)
        corr = [a.transpose(-1, -2) @ X @ b.transpose(-1, -2) for a, b in zip(A, Bm, strict=True)]
        return r - gc * self.flat(corr)  # flat: float64


class CVODESolver:
    """SUNDIALS CVODE (BDF, orders 1-5, GMRES with ``krylov_dim`` basis vectors) behind scipy's
    ``OdeSolver`` stepping interface: ``step()`` takes one internal step (returns None, or a
    message on failure), ``t``/``y``/``t_old``/``status`` (running, finished, failed),
    ``dense_output()`` -> ``sol(t)`` for t in [t_old, t] (CVODE's interpolating polynomial, no
    field evaluations).

    ``fun(t, y) -> (n,)`` is the field; ``jv`` an optional exact Jacobian-times-vector with
    ``setup(y)`` and ``__call__(v)`` (:class:`HessianJv`; default CVODE's difference quotient);
    ``precond`` an optional preconditioner with ``setup(y)`` and ``solve(r, gamma)``
    (P ~ I - gamma J; ``precond_side`` "right" by default: GMRES then controls the true
    residual; left preconditioning by this inexact P let some Newton directions go unresolved,
    2,461 steps instead of 837 on the 100x100 benchmark). Counters: ``nfev`` (field evaluations), ``njv`` (exact
    products incl. setups), ``nprec_setups``, ``nprec_solves``, ``nsteps``."""

    def __init__(
        self,
        fun: Callable[[float, np.ndarray], np.ndarray],
        t0: float,
        y0: np.ndarray,
        t_bound: float,
        *,
        rtol: float = 1e-7,
        atol: float = 1e-10,
        max_step: float = math.inf,
        first_step: float | None = None,
        jv: HessianJv | None = None,
        precond: DMFCompletionPrecond | None = None,
        krylov_dim: int = 20,
        max_order: int = 5,
        max_nonlin_iters: int = 3,
        precond_side: str = "right",
    ) -> None:
        require_sundials()
        import sksundae.cvode as cv

        self.fun, self.t_bound = fun, float(t_bound)
        self.t = self.t_old = float(t0)
        self.y = np.array(y0, dtype=np.float64)
        self.n = self.y.size
        self.status = "running"
        self.nfev = 0
        self.nsteps = 0
        self.jv, self.precond = jv, precond
        self.precond_side = precond_side

        def rhs_eval(t: float, y: np.ndarray) -> np.ndarray:
            self.nfev += 1
            return fun(t, y)

        def rhs(t: float, y: np.ndarray, yp: np.ndarray) -> None:
            self.nfev += 1
            yp[:] = fun(t, np.array(y))

        opts: dict = dict(
            method="BDF",
            rtol=rtol,
            atol=atol,
            linsolver="gmres",
            krylov_dim=krylov_dim,
            max_order=max_order,
            max_num_steps=100_000,
            max_nonlin_iters=max_nonlin_iters,
        )
        if math.isfinite(max_step):
            opts["max_step"] = float(max_step)
        if first_step is None:
            # CVODE's own estimate uses tout - t0, meaningless for an open-ended flow (t_bound
            # 1e300): take scipy's first guess 0.01 ||y|| / ||f(y)|| (weighted RMS norms)
            f0 = np.asarray(rhs_eval(self.t, self.y))
            w = atol + rtol * np.abs(self.y)
            d0, d1 = np.sqrt(np.mean((self.y / w) ** 2)), np.sqrt(np.mean((f0 / w) ** 2))
            first_step = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
            first_step = min(first_step, max_step, max(self.t_bound - self.t, 0.0) or math.inf)
        opts["first_step"] = float(first_step)
        if jv is not None:

            def jtsetup(t: float, y: np.ndarray, fy: np.ndarray) -> None:
                jv.setup(y)

            def jtimes(t: float, y: np.ndarray, fy: np.ndarray, v: np.ndarray, Jv) -> None:
                Jv[:] = jv(v)

            opts["jactimes"] = cv.CVODEJacTimes(jtsetup, jtimes)
        if precond is not None:

            def psetup(t, y, fy, jok, jnew, gamma) -> None:
                if jok and precond._fs is not None:
                    jnew[0] = 0
                else:
                    precond.setup(y)
                    jnew[0] = 1

            def psolve(t, y, fy, r, z, gamma, delta, lr) -> None:
                z[:] = precond.solve(r, gamma)

            opts["precond"] = cv.CVODEPrecond(psetup, psolve, side=self.precond_side)
        self._cv = cv.CVODE(rhs, **opts)
        res = self._cv.init_step(self.t, self.y)
        if not res.success:
            raise RuntimeError(f"CVODE init failed: {res.message}")

    @property
    def njv(self) -> int:
        """Exact Jacobian-vector products (0 with the difference quotient)."""
        return 0 if self.jv is None else self.jv.n_products

    @property
    def nprec_setups(self) -> int:
        return 0 if self.precond is None else self.precond.n_setups

    @property
    def nprec_solves(self) -> int:
        return 0 if self.precond is None else self.precond.n_solves

    def step(self) -> str | None:
        """One internal CVODE step toward ``t_bound`` (never past it)."""
        if self.status != "running":
            raise RuntimeError("step on a finished or failed solver")
        tstop = self.t_bound if self.t_bound < 1e299 else None
        t_prev = self.t
        for _ in range(3):  # after an interpolation CVODE first returns (tn, y_n) again
            res = self._cv.step(self.t_bound, method="onestep", tstop=tstop)
            if not res.success:
                self.status = "failed"
                return f"CVODE: {res.message}"
            if float(res.t) != t_prev:
                break
        else:
            self.status = "failed"
            return "CVODE made no progress"
        self.t_old, self.t, self.y = t_prev, float(res.t), np.array(res.y, dtype=np.float64)
        self.nsteps += 1
        if self.t >= self.t_bound * (1 - 1e-15):
            self.status = "finished"
        return None

    def dense_output(self) -> Callable[[float], np.ndarray]:
        """``sol(t)``: the state at t in [t_old, t] from CVODE's interpolating polynomial."""
        t0, t1 = self.t_old, self.t

        def sol(t: float) -> np.ndarray:
            t = float(t)
            if t == t1:
                return self.y.copy()
            if not (t0 <= t <= t1):
                raise ValueError(f"dense output at {t} outside the last step [{t0}, {t1}]")
            res = self._cv.step(t)
            if not res.success:
                raise RuntimeError(f"CVODE interpolation failed: {res.message}")
            return np.array(res.y, dtype=np.float64)

        return sol


#: Hairer's stiffness test (dopri5: Hairer & Wanner, Solving ODEs II, Sec. IV.2): the step is
#: stability-limited when h * lambda > 3.25 with lambda ~ ||f(y7) - f(y6)|| / ||y7 - y6|| from the
#: last two stages of a Dormand-Prince step (both at t + h).
RK45_STIFF_HLAMBDA = 3.25


def rk45_stiffness(solver: scipy.integrate.RK45) -> float:
    """h * lambda estimate (dimensionless) for the last accepted step of a scipy ``RK45`` solver,
    from its stored stages ``K`` (7, n): stage 6 and the new state are both at t + h, so
    lambda ~ ||K[6] - K[5]|| / ||y_new - y_6||, y_new - y_6 = h (K[:6]^T b - K[:5]^T a_6)
    (Hairer's dopri5 test). NaN when undefined."""
    K, h = solver.K, solver.h_previous
    if h is None or K is None:
        return math.nan
    dy = h * (K[:6].T @ solver.B - K[:5].T @ solver.A[5, :5])
    den = float(np.linalg.norm(dy))
    if not den > 0:
        return math.nan
    return h * float(np.linalg.norm(K[6] - K[5])) / den
