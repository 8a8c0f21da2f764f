"""LPO (Listwise Policy Optimization, arXiv 2605.06139 v2) in SymPy: listwise softmax, projections, targets.

Spec: ``spec/lpo.md``. For a group of ``K`` responses the *listwise logits* are the summed sequence log-ratios
``s_k = log π_θ(y_k|x) - log π_b(y_k|x)`` and the listwise distribution is ``P = softmax(s)`` (LPO Eq. 4);
on-policy ``s = 0`` and ``P = 1/K``. The target of LPO is ``w* = softmax(φ)``, ``φ = R/τ + s_t`` (LPO Thm. 1).

Every function here *derives* its result (``diff``, ``solve``, ``limit``) and returns expressions a check can
compare: a dict ``name -> expression that must simplify to 0`` (or a limit value, or a fact). Nothing is typed in
except the definitions (softmax, KL, the objective Ĵ) and, where a statement is compared, the paper's formula.

Because ``∇_θ s_k = ∇_θ log π_θ(y_k|x)`` (π_b is frozen), every gradient of a function of ``P_θ`` is
``Σ_k c_k ∇_θ log π_θ(y_k|x)`` with ``c_k = ∂L/∂s_k``; statements about gradients are therefore statements about
these coefficients, plus (for :func:`pg_parameter_space`) the chain rule through a linear map ``s = X θ``.
"""

import sympy as sp

tau = sp.Symbol("tau", positive=True)     # trust-region temperature τ > 0
eps = sp.Symbol("epsilon", positive=True)  # small scale / gap


def vec(name, K, **assumptions):
    """``K`` real symbols ``name_1 .. name_K`` (listwise logits, rewards, advantages)."""
    return list(sp.symbols(f"{name}1:{K + 1}", real=True, **assumptions))


def softmax(x):
    """``softmax(x)_k = e^{x_k}/Σ_j e^{x_j}`` (LPO Eq. 4)."""
    z = sum(sp.exp(v) for v in x)
    return [sp.exp(v) / z for v in x]


def log_softmax(x):
    """``log softmax(x)_k = x_k - log Σ_j e^{x_j}``, written so that ``log`` never meets a quotient."""
    lz = sp.log(sum(sp.exp(v) for v in x))
    return [v - lz for v in x]


def kl_logits(a, b):
    """``D_KL(softmax(a) ‖ softmax(b)) = Σ_k P_k (log P_k - log Q_k)`` with both sides given by their logits."""
    P = softmax(a)
    la, lb = log_softmax(a), log_softmax(b)
    return sum(P[k] * (la[k] - lb[k]) for k in range(len(a)))


def _zero(e):
    return sp.simplify(e)


# ---------------------------------------------------------------------------------------------
# Coefficients of the two projections (LPO Eqs. 10, 11, 14)
# ---------------------------------------------------------------------------------------------
def reverse_kl_coefficients(K):
    """``∂ D_KL(P‖softmax(φ))/∂s_k`` derived, minus the paper's ``c^rev_k = P_k (d_k - d̄)``, ``d = s - φ``,
    ``d̄ = Σ P_j d_j`` (LPO Eq. 11); and the sum ``Σ_k c^rev_k``. All entries must be 0."""
    s, phi = vec("s", K), vec("phi", K)
    P = softmax(s)
    d = [s[k] - phi[k] for k in range(K)]
    dbar = sum(P[k] * d[k] for k in range(K))
    L = kl_logits(s, phi)
    out = {f"dKL/ds_{k + 1} - c_rev_{k + 1}": sp.diff(L, s[k]) - P[k] * (d[k] - dbar) for k in range(K)}
    out["sum c_rev"] = sum(P[k] * (d[k] - dbar) for k in range(K))
    return out


def reverse_kl_coefficient_expr(K):
    """``(s, phi, c_rev)``: symbols and the derived ``c^rev = ∂KL(P‖softmax(φ))/∂s`` (for substitutions)."""
    s, phi = vec("s", K), vec("phi", K)
    L = kl_logits(s, phi)
    return s, phi, [sp.diff(L, v) for v in s]


def forward_kl_coefficients(K):
    """``∂ D_KL(softmax(φ)‖P)/∂s_k - (P_k - w*_k)`` (LPO Eq. 10), the sum ``Σ (P_k - w*_k)``, and the value of
    ``c^fwd`` at ``P = w*`` (self-correction, Cor. 1(c)). All entries must be 0."""
    s, phi = vec("s", K), vec("phi", K)
    P, w = softmax(s), softmax(phi)
    L = kl_logits(phi, s)
    out = {f"dKL/ds_{k + 1} - (P-w)_{k + 1}": sp.diff(L, s[k]) - (P[k] - w[k]) for k in range(K)}
    out["sum c_fwd"] = sum(P[k] - w[k] for k in range(K))
    at_target = dict(zip(s, phi))
    out.update({f"c_fwd_{k + 1} at P = w*": sp.diff(L, s[k]).subs(at_target) for k in range(K)})
    return out


def l1_is_twice_positive_part():
    """``‖P - w‖₁ = 2 TV(P, w)`` with ``TV = Σ_k max(P_k - w_k, 0)`` (the largest event difference). Per
    coordinate ``|x| = 2 max(x, 0) - x`` for real ``x``; summing over ``c = P - w`` with ``Σ c = 0`` gives
    ``Σ|c_k| = 2 Σ max(c_k, 0)``. Returns the per-coordinate identity (must be 0)."""
    x = sp.Symbol("x", real=True)
    return {"|x| - (2 max(x, 0) - x)": sp.simplify((sp.Abs(x) - 2 * sp.Max(x, 0) + x).rewrite(sp.Piecewise))}


# ---------------------------------------------------------------------------------------------
# lpo.pg_is_reverse_kl (LPO Prop. 1)
# ---------------------------------------------------------------------------------------------
def pg_on_policy(K):
    """At ``s = 0``: ``c^rev`` toward ``softmax(A)`` equals ``-(A - Ā)/K`` for *any* ``A`` (so ``-A/K`` when
    ``Σ A = 0``, the PG coefficient with the ascent sign flipped), and ``c^rev = P(d - d̄)`` there. Entries → 0."""
    s, phi, c = reverse_kl_coefficient_expr(K)
    A = vec("A", K)
    on = {**{v: 0 for v in s}, **dict(zip(phi, A))}
    Abar = sum(A) / K
    out = {f"c_rev_{k + 1}(s=0) + (A_{k + 1} - mean A)/K": c[k].subs(on) + (A[k] - Abar) / K for k in range(K)}
    zero_mean = {A[-1]: -sum(A[:-1])}
    out.update({f"c_rev_{k + 1}(s=0, ΣA=0) + A_{k + 1}/K": (c[k].subs(on) + A[k] / K).subs(zero_mean)
                for k in range(K)})
    return out


def pg_parameter_space(K, d):
    """Chain rule through ``s = X θ`` (``X`` a symbolic ``K×d`` feature matrix, on-policy at ``θ = 0``):
    ``(1/K) Σ_k A_k X_k + ∇_θ D_KL(softmax(Xθ)‖softmax(A))|_{θ=0} = 0`` for zero-mean ``A``. Entries → 0."""
    X = sp.Matrix(K, d, lambda i, j: sp.Symbol(f"X{i + 1}{j + 1}", real=True))
    th = sp.symbols(f"theta1:{d + 1}", real=True)
    A = vec("A", K)
    A = A[:-1] + [-sum(A[:-1])]                    # Σ A = 0
    s = list(X * sp.Matrix(th))
    L = kl_logits(s, A)
    at0 = {t: 0 for t in th}
    return {f"g_PG_{j + 1} + dKL/dtheta_{j + 1}":
            sum(A[k] * X[k, j] for k in range(K)) / K + sp.diff(L, th[j]).subs(at0) for j in range(d)}


def shift_invariance(K):
    """``softmax(A + b) = softmax(A)`` for a scalar baseline ``b``: the target ignores the mean of ``A``."""
    A = vec("A", K)
    b = sp.Symbol("b", real=True)
    P, Q = softmax(A), softmax([a + b for a in A])
    return {f"softmax(A+b)_{k + 1} - softmax(A)_{k + 1}": Q[k] - P[k] for k in range(K)}


# ---------------------------------------------------------------------------------------------
# lpo.gibbs_target (LPO Thm. 1)
# ---------------------------------------------------------------------------------------------
def gibbs_target(K):
    """Stationarity of the Lagrangian of ``Ĵ(w) = Σ w R - τ Σ w log(w/P_t)`` on ``Σ w = 1``, solved by SymPy.

    Returns ``identities`` (solved ``w_k`` minus ``P_{t,k} e^{R_k/τ}/Σ_j P_{t,j} e^{R_j/τ}``), ``n_solutions``
    (the number of stationary points found, must be 1) and ``hessian_eigs`` (eigenvalues of ``∇²Ĵ`` for ``w > 0``;
    all must be negative: strict concavity, hence uniqueness)."""
    w = sp.symbols(f"w1:{K + 1}", positive=True)
    Pt = sp.symbols(f"p1:{K + 1}", positive=True)
    R = vec("R", K)
    lam = sp.Symbol("lambda", real=True)
    J = sum(w[k] * R[k] for k in range(K)) - tau * sum(w[k] * sp.log(w[k] / Pt[k]) for k in range(K))
    Lag = J - lam * (sum(w) - 1)
    sol_w = []
    for k in range(K):
        sk = sp.solve(sp.diff(Lag, w[k]), w[k])
        if len(sk) != 1:
            return {"identities": {}, "n_solutions": len(sk), "hessian_eigs": []}
        sol_w.append(sk[0])
    lam_sol = sp.solve(sp.Eq(sum(sol_w), 1), lam)
    if len(lam_sol) != 1:
        return {"identities": {}, "n_solutions": len(lam_sol), "hessian_eigs": []}
    Z = sum(Pt[j] * sp.exp(R[j] / tau) for j in range(K))
    ids = {f"w_{k + 1} - P_t e^(R/tau)/Z": sol_w[k].subs(lam, lam_sol[0]) - Pt[k] * sp.exp(R[k] / tau) / Z
           for k in range(K)}
    H = sp.hessian(J, w)
    eigs = list(H.eigenvals().keys())
    return {"identities": ids, "n_solutions": 1, "hessian_eigs": eigs}


def gibbs_limits(K):
    """``w* = softmax(R/τ + s_t)`` as ``τ → 0⁺`` (``R_1`` the unique maximum, ``R_k = R_1 - a_k``, ``a_k > 0``):
    ``w*_1 → 1``; as ``τ → ∞``: ``w* → softmax(s_t) = P_t``. Returns ``name -> (limit, expected)``."""
    st = vec("s", K)
    r1 = sp.Symbol("R1", real=True)
    gaps = sp.symbols(f"a2:{K + 1}", positive=True)
    R = [r1] + [r1 - g for g in gaps]
    Pt = softmax(st)
    # w*_k = P_k e^{R_k/τ}/Σ_j P_j e^{R_j/τ}, divided through by e^{R_1/τ} (exact; keeps each exponent ≤ 0)
    num = [Pt[k] * sp.exp((R[k] - r1) / tau) for k in range(K)]
    den = sum(num)
    out = {}
    for k in range(K):
        out[f"tau->0 w_{k + 1}"] = (sp.limit(sp.simplify(num[k] / den), tau, 0, "+"), 1 if k == 0 else 0)
        out[f"tau->oo w_{k + 1}"] = (sp.limit(num[k] / den, tau, sp.oo), Pt[k])
    return out


# ---------------------------------------------------------------------------------------------
# lpo.zero_sum (LPO App. C.6)
# ---------------------------------------------------------------------------------------------
def general_divergence_coefficients(K):
    """For a generic (undefined) differentiable ``L(P)`` with ``P = softmax(s)``: ``∂L/∂s_k`` minus
    ``P_k(∂L/∂P_k - Σ_j P_j ∂L/∂P_j)``, and ``Σ_k`` of the latter. All entries must be 0."""
    s = vec("s", K)
    P = softmax(s)
    F = sp.Function("L")
    xs = sp.symbols(f"x1:{K + 1}")
    grad_P = [sp.Derivative(F(*xs), x).subs(dict(zip(xs, P))) for x in xs]
    mean = sum(P[j] * grad_P[j] for j in range(K))
    c = [P[k] * (grad_P[k] - mean) for k in range(K)]
    g = F(*P)
    out = {f"dL/ds_{k + 1} - c_{k + 1}": sp.diff(g, s[k]) - c[k] for k in range(K)}
    out["sum c"] = sum(c)
    # e_k = e^{s_k} > 0 is a bijection of the reals onto the positives: an identity in e is one in s, and
    # simplify decides it several times faster than with the exponentials.
    e = sp.symbols(f"e1:{K + 1}", positive=True)
    return {k: v.subs({sp.exp(s[i]): e[i] for i in range(K)}) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# lpo.rev_unbounded
# ---------------------------------------------------------------------------------------------
def reverse_growth(K):
    """At fixed ``s`` and ``R`` with ``φ = R/τ``, in the form ``c^rev = P(d - d̄)`` (proved equal to the derivative
    by :func:`reverse_kl_coefficients`): ``τ c^rev_k → -P_k (R_k - Σ_j P_j R_j)`` as ``τ → 0⁺``, i.e. ``c^rev``
    grows like ``1/τ`` unless ``R`` is constant. Returns ``name -> (limit, expected)``."""
    s, R = vec("s", K), vec("R", K)
    P = softmax(s)
    d = [s[k] - R[k] / tau for k in range(K)]
    dbar = sum(P[j] * d[j] for j in range(K))
    Rbar = sum(P[j] * R[j] for j in range(K))
    return {f"tau c_rev_{k + 1}": (sp.limit(sp.expand(tau * P[k] * (d[k] - dbar)), tau, 0, "+"),
                                   -P[k] * (R[k] - Rbar))
            for k in range(K)}


# ---------------------------------------------------------------------------------------------
# lpo.rev_is_proximal (LPO Prop. 3) and lpo.monotone_improvement (LPO Thm. 2(a))
# ---------------------------------------------------------------------------------------------
def proximal_identities(K):
    """With ``P = softmax(s)``, ``P_t = softmax(s_t)``, ``w* = softmax(R/τ + s_t)``, ``Ẑ = Σ P_t e^{R/τ}``:

    * Prop. 3: ``Ĵ(P) + τ KL(P‖w*) - τ log Ẑ`` with ``Ĵ(w) = Σ w R - τ KL(w‖P_t)``;
    * Thm. 2(a): ``R̂(w*) - R̂(P_t) - τ [KL(w*‖P_t) + KL(P_t‖w*)]``.

    Both must simplify to 0 for symbolic ``s, s_t, R, τ``."""
    s, st, R = vec("s", K), vec("t", K), vec("R", K)
    phi = [R[k] / tau + st[k] for k in range(K)]
    P, Pt, w = softmax(s), softmax(st), softmax(phi)
    logZhat = sp.log(sum(sp.exp(st[k]) * sp.exp(R[k] / tau) for k in range(K))) - sp.log(sum(sp.exp(v) for v in st))
    Jhat_P = sum(P[k] * R[k] for k in range(K)) - tau * kl_logits(s, st)
    prop3 = Jhat_P + tau * kl_logits(s, phi) - tau * logZhat
    Rhat = lambda q: sum(q[k] * R[k] for k in range(K))  # noqa: E731
    thm2a = Rhat(w) - Rhat(Pt) - tau * (kl_logits(phi, st) + kl_logits(st, phi))
    return {"Prop. 3": prop3, "Thm. 2(a)": thm2a}


# ---------------------------------------------------------------------------------------------
# lpo.implicit_targets (Table 1/2; RLOO)
# ---------------------------------------------------------------------------------------------
def rloo_advantage(K):
    """``A^RLOO_k = R_k - (1/(K-1)) Σ_{j≠k} R_j`` minus ``K/(K-1) (R_k - μ_G)``: so RLOO's implicit ``τ`` is
    exactly ``(K-1)/K``. Entries must be 0."""
    R = vec("R", K)
    mu = sum(R) / K
    return {f"A_RLOO_{k + 1} - K/(K-1)(R-mu)": R[k] - (sum(R) - R[k]) / (K - 1) - sp.Rational(K, K - 1) * (R[k] - mu)
            for k in range(K)}


def rloo_coefficients(K):
    """``c^rev`` at ``s = 0`` toward ``softmax(R/τ)`` with ``τ = (K-1)/K`` plus RLOO's PG coefficient ``A^RLOO/K``."""
    s, phi, c = reverse_kl_coefficient_expr(K)
    R = vec("R", K)
    t = sp.Rational(K - 1, K)
    on = {**{v: 0 for v in s}, **{phi[k]: R[k] / t for k in range(K)}}
    return {f"c_rev_{k + 1} + A_RLOO_{k + 1}/K": c[k].subs(on) + (R[k] - (sum(R) - R[k]) / (K - 1)) / K
            for k in range(K)}


# ---------------------------------------------------------------------------------------------
# lpo.length_normalisation (ambiguity A1)
# ---------------------------------------------------------------------------------------------
def length_normalised_net_coefficient():
    """``K = 2``, ``Σ A = 0``: the length-normalised PG coefficients ``A_k/(K|y_k|)`` sum to
    ``A_1 (|y_2| - |y_1|)/(2|y_1||y_2|)`` (returned with the sum), not 0, while the summed-log-prob coefficients
    ``A_k/K`` sum to 0. Returns ``(net_sum, stated_form, unnormalised_sum)``."""
    a = sp.Symbol("A1", real=True)
    L1, L2 = sp.symbols("L1 L2", positive=True)
    A = [a, -a]
    net = A[0] / (2 * L1) + A[1] / (2 * L2)
    return sp.simplify(net), a * (L2 - L1) / (2 * L1 * L2), sum(A) / 2, (L1, L2, a)
