"""LPO (Listwise Policy Optimization, arXiv 2605.06139 v2) in SymPy: listwise softmax, projections, targets.

Spec: ``spec/lpo.md``. For a group of ``K`` responses the *listwise logits* are the summed sequence log-ratios
``s_k = log π_θ(y_k|x) - log π_b(y_k|x)`` and the listwise distribution is ``P = softmax(s)`` (LPO Eq. 4);
on-policy ``s = 0`` and ``P = 1/K``. The target of LPO is ``w* = softmax(φ)``, ``φ = R/τ + s_t`` (LPO Thm. 1).

Every function here *derives* its result (``diff``, ``solve``, ``limit``) and returns what a check compares: a
dict ``name -> (derived, stated)`` of the two sides of each identity (or of a limit and its value), or a fact. The
checks (``fiberlab.claims``) hold the identity: they write ``derived - stated`` and its zero test
(``sp.simplify(...) == 0``) in one place. Nothing is typed in except the definitions (softmax, KL, the objective
Ĵ) and, where a statement is compared, the paper's formula.

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


# ---------------------------------------------------------------------------------------------
# Coefficients of the two projections (LPO Eqs. 10, 11, 14)
# ---------------------------------------------------------------------------------------------
def reverse_kl_coefficients(K):
    """``∂ D_KL(P‖softmax(φ))/∂s_k`` derived, minus the paper's ``c^rev_k = P_k (d_k - d̄)``, ``d = s - φ``,
    ``d̄ = Σ P_j d_j`` (LPO Eq. 11); and the sum ``Σ_k c^rev_k`` (to equal 0). Entries ``(derived, stated)``."""
    s, phi = vec("s", K), vec("phi", K)
    P = softmax(s)
    d = [s[k] - phi[k] for k in range(K)]
    dbar = sum(P[k] * d[k] for k in range(K))
    L = kl_logits(s, phi)
    out = {f"dKL/ds_{k + 1} - c_rev_{k + 1}": (sp.diff(L, s[k]), P[k] * (d[k] - dbar)) for k in range(K)}
    out["sum c_rev"] = (sum(P[k] * (d[k] - dbar) for k in range(K)), 0)
    return out


def reverse_kl_coefficient_expr(K):
    """``(s, phi, c_rev)``: symbols and the derived ``c^rev = ∂KL(P‖softmax(φ))/∂s`` (for substitutions)."""
    s, phi = vec("s", K), vec("phi", K)
    L = kl_logits(s, phi)
    return s, phi, [sp.diff(L, v) for v in s]


def forward_kl_coefficients(K):
    """``∂ D_KL(softmax(φ)‖P)/∂s_k - (P_k - w*_k)`` (LPO Eq. 10), the sum ``Σ (P_k - w*_k)``, and the value of
    ``c^fwd`` at ``P = w*`` (self-correction, Cor. 1(c)); the last two to equal 0. Entries ``(derived, stated)``."""
    s, phi = vec("s", K), vec("phi", K)
    P, w = softmax(s), softmax(phi)
    L = kl_logits(phi, s)
    out = {f"dKL/ds_{k + 1} - (P-w)_{k + 1}": (sp.diff(L, s[k]), P[k] - w[k]) for k in range(K)}
    out["sum c_fwd"] = (sum(P[k] - w[k] for k in range(K)), 0)
    at_target = dict(zip(s, phi))
    out.update({f"c_fwd_{k + 1} at P = w*": (sp.diff(L, s[k]).subs(at_target), 0) for k in range(K)})
    return out


def l1_is_twice_positive_part():
    """``‖P - w‖₁ = 2 TV(P, w)`` with ``TV = Σ_k max(P_k - w_k, 0)`` (the largest event difference). Per
    coordinate ``|x| = 2 max(x, 0) - x`` for real ``x``; summing over ``c = P - w`` with ``Σ c = 0`` gives
    ``Σ|c_k| = 2 Σ max(c_k, 0)``. Returns the per-coordinate identity ``(|x|, 2 max(x, 0) - x)``, both sides
    written piecewise."""
    x = sp.Symbol("x", real=True)
    return {"|x| - (2 max(x, 0) - x)": (sp.Abs(x).rewrite(sp.Piecewise), (2 * sp.Max(x, 0) - x).rewrite(sp.Piecewise))}


# ---------------------------------------------------------------------------------------------
# lpo.pg_is_reverse_kl (LPO Prop. 1)
# ---------------------------------------------------------------------------------------------
def pg_on_policy(K):
    """At ``s = 0``: ``c^rev`` toward ``softmax(A)`` equals ``-(A - Ā)/K`` for *any* ``A`` (so ``-A/K`` when
    ``Σ A = 0``, the PG coefficient with the ascent sign flipped), and ``c^rev = P(d - d̄)`` there. Entries
    ``(derived, stated)``."""
    s, phi, c = reverse_kl_coefficient_expr(K)
    A = vec("A", K)
    on = {**{v: 0 for v in s}, **dict(zip(phi, A))}
    Abar = sum(A) / K
    out = {f"c_rev_{k + 1}(s=0) + (A_{k + 1} - mean A)/K": (c[k].subs(on), -(A[k] - Abar) / K) for k in range(K)}
    zero_mean = {A[-1]: -sum(A[:-1])}
    out.update({f"c_rev_{k + 1}(s=0, ΣA=0) + A_{k + 1}/K": (c[k].subs(on).subs(zero_mean), (-A[k] / K).subs(zero_mean))
                for k in range(K)})
    return out


def pg_parameter_space(K, d):
    """Chain rule through ``s = X θ`` (``X`` a symbolic ``K×d`` feature matrix, on-policy at ``θ = 0``):
    ``(1/K) Σ_k A_k X_k = -∇_θ D_KL(softmax(Xθ)‖softmax(A))|_{θ=0}`` for zero-mean ``A``. Entries
    ``(PG, -∇KL)``."""
    X = sp.Matrix(K, d, lambda i, j: sp.Symbol(f"X{i + 1}{j + 1}", real=True))
    th = sp.symbols(f"theta1:{d + 1}", real=True)
    A = vec("A", K)
    A = A[:-1] + [-sum(A[:-1])]                    # Σ A = 0
    s = list(X * sp.Matrix(th))
    L = kl_logits(s, A)
    at0 = {t: 0 for t in th}
    return {f"g_PG_{j + 1} + dKL/dtheta_{j + 1}":
            (sum(A[k] * X[k, j] for k in range(K)) / K, -sp.diff(L, th[j]).subs(at0)) for j in range(d)}


def shift_invariance(K):
    """``softmax(A + b) = softmax(A)`` for a scalar baseline ``b``: the target ignores the mean of ``A``."""
    A = vec("A", K)
    b = sp.Symbol("b", real=True)
    P, Q = softmax(A), softmax([a + b for a in A])
    return {f"softmax(A+b)_{k + 1} - softmax(A)_{k + 1}": (Q[k], P[k]) for k in range(K)}


# ---------------------------------------------------------------------------------------------
# lpo.gibbs_target (LPO Thm. 1)
# ---------------------------------------------------------------------------------------------
def gibbs_target(K):
    """Stationarity of the Lagrangian of ``Ĵ(w) = Σ w R - τ Σ w log(w/P_t)`` on ``Σ w = 1``, solved by SymPy.

    Returns ``identities`` (solved ``w_k`` and ``P_{t,k} e^{R_k/τ}/Σ_j P_{t,j} e^{R_j/τ}``, a pair), ``n_solutions``
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
    ids = {f"w_{k + 1} - P_t e^(R/tau)/Z": (sol_w[k].subs(lam, lam_sol[0]), Pt[k] * sp.exp(R[k] / tau) / Z)
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
    ``P_k(∂L/∂P_k - Σ_j P_j ∂L/∂P_j)``, and ``Σ_k`` of the latter (to equal 0). Entries ``(derived, stated)``."""
    s = vec("s", K)
    P = softmax(s)
    F = sp.Function("L")
    xs = sp.symbols(f"x1:{K + 1}")
    grad_P = [sp.Derivative(F(*xs), x).subs(dict(zip(xs, P))) for x in xs]
    mean = sum(P[j] * grad_P[j] for j in range(K))
    c = [P[k] * (grad_P[k] - mean) for k in range(K)]
    g = F(*P)
    out = {f"dL/ds_{k + 1} - c_{k + 1}": (sp.diff(g, s[k]), c[k]) for k in range(K)}
    out["sum c"] = (sum(c), 0)
    # e_k = e^{s_k} > 0 is a bijection of the reals onto the positives: an identity in e is one in s, and
    # simplify decides it several times faster than with the exponentials.
    e = sp.symbols(f"e1:{K + 1}", positive=True)
    to_e = {sp.exp(s[i]): e[i] for i in range(K)}
    return {k: (sp.sympify(a).subs(to_e), sp.sympify(b).subs(to_e)) for k, (a, b) in out.items()}


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

    * Prop. 3: ``Ĵ(P)`` and ``-τ KL(P‖w*) + τ log Ẑ`` with ``Ĵ(w) = Σ w R - τ KL(w‖P_t)``;
    * Thm. 2(a): ``R̂(w*) - R̂(P_t)`` and ``τ [KL(w*‖P_t) + KL(P_t‖w*)]``.

    Returns the two pairs ``(derived, stated)``, equal for symbolic ``s, s_t, R, τ``."""
    s, st, R = vec("s", K), vec("t", K), vec("R", K)
    phi = [R[k] / tau + st[k] for k in range(K)]
    P, Pt, w = softmax(s), softmax(st), softmax(phi)
    logZhat = sp.log(sum(sp.exp(st[k]) * sp.exp(R[k] / tau) for k in range(K))) - sp.log(sum(sp.exp(v) for v in st))
    Jhat_P = sum(P[k] * R[k] for k in range(K)) - tau * kl_logits(s, st)
    Rhat = lambda q: sum(q[k] * R[k] for k in range(K))  # noqa: E731
    return {"Prop. 3": (Jhat_P, -tau * kl_logits(s, phi) + tau * logZhat),
            "Thm. 2(a)": (Rhat(w) - Rhat(Pt), tau * (kl_logits(phi, st) + kl_logits(st, phi)))}


# ---------------------------------------------------------------------------------------------
# lpo.implicit_targets (Table 1/2; RLOO)
# ---------------------------------------------------------------------------------------------
def rloo_advantage(K):
    """``A^RLOO_k = R_k - (1/(K-1)) Σ_{j≠k} R_j`` and ``K/(K-1) (R_k - μ_G)`` (a pair per ``k``): so RLOO's implicit
    ``τ`` is exactly ``(K-1)/K``."""
    R = vec("R", K)
    mu = sum(R) / K
    return {f"A_RLOO_{k + 1} - K/(K-1)(R-mu)": (R[k] - (sum(R) - R[k]) / (K - 1), sp.Rational(K, K - 1) * (R[k] - mu))
            for k in range(K)}


def rloo_coefficients(K):
    """``c^rev`` at ``s = 0`` toward ``softmax(R/τ)`` with ``τ = (K-1)/K``, and minus RLOO's PG coefficient ``A^RLOO/K``
    (a pair per ``k``)."""
    s, phi, c = reverse_kl_coefficient_expr(K)
    R = vec("R", K)
    t = sp.Rational(K - 1, K)
    on = {**{v: 0 for v in s}, **{phi[k]: R[k] / t for k in range(K)}}
    return {f"c_rev_{k + 1} + A_RLOO_{k + 1}/K": (c[k].subs(on), -(R[k] - (sum(R) - R[k]) / (K - 1)) / K)
            for k in range(K)}


# ---------------------------------------------------------------------------------------------
# lpo.implicit_target_remax (Table 1, ReMax row)
# ---------------------------------------------------------------------------------------------
def remax_gap(K):
    """ReMax's PG coefficient ``(R_k - b)/K`` minus the reverse-KL one ``-c^rev_k`` (``s = 0``, ``φ = R``, ``τ = 1``).

    On-policy the group PG is ``Σ_k (A_k/K) ∇log π(y_k)`` and ``-∇KL(P_θ‖softmax(R)) = Σ_k (-c^rev_k) ∇log π(y_k)``
    (``∂s_k/∂θ = ∇log π(y_k)`` at ``θ = θ_old``), so the gradients differ by ``Σ_k gap_k ∇log π(y_k)``. Returns
    ``(identities, gap, b, mu)``: ``identities`` maps ``gap_k - (μ_G - b)/K`` to the pair ``(gap_k, (μ_G - b)/K)``,
    ``gap`` is the common per-response gap (derived, simplified), ``b`` the baseline symbol and ``μ_G`` the group
    mean."""
    s, phi, c = reverse_kl_coefficient_expr(K)
    R = vec("R", K)
    b = sp.Symbol("b", real=True)
    mu = sum(R) / K
    on = {**{v: 0 for v in s}, **{phi[k]: R[k] for k in range(K)}}
    gaps = [sp.simplify((R[k] - b) / K + c[k].subs(on)) for k in range(K)]
    ids = {f"(R_{k + 1} - b)/K + c_rev_{k + 1} - (mu_G - b)/K": (gaps[k], (mu - b) / K) for k in range(K)}
    return ids, gaps[0], b, mu


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


# ---------------------------------------------------------------------------------------------
# lpo.entropy_redundant (LPO App. C.7)
# ---------------------------------------------------------------------------------------------
gamma = sp.Symbol("gamma", positive=True)  # entropy-bonus coefficient γ > 0


def max_ent_form(K):
    """``-D_KL(P‖softmax(φ)) - [Σ_k P_k φ_k + H(P) - log Z_φ]`` with ``P = softmax(s)``, ``Z_φ = Σ e^{φ}``,
    ``H(P) = -Σ P log P`` (LPO App. C.7: the reverse-KL objective carries an implicit entropy bonus), as a pair."""
    s, phi = vec("s", K), vec("phi", K)
    P, lP = softmax(s), log_softmax(s)
    H = -sum(P[k] * lP[k] for k in range(K))
    rhs = sum(P[k] * phi[k] for k in range(K)) + H - sp.log(sum(sp.exp(v) for v in phi))
    return {"-KL(P||w*) - (sum P phi + H(P) - log Z)": (-kl_logits(s, phi), rhs)}


def entropy_bonus_target(K):
    """Lagrange conditions of ``J_γ(w) = Σ w R - τ KL(w‖1/K) + γ H(w)`` on ``Σ w = 1`` (the on-policy listwise objective
    with an entropy bonus, App. C.7). Stationarity ``∂J_γ/∂w_k = λ`` is solved by SymPy for each ``w_k`` (one root,
    ``w_k ∝ e^{R_k/(τ+γ)}``); the candidate ``softmax(R/(τ+γ))`` is then substituted and ``∂J_γ/∂w_k - ∂J_γ/∂w_1``
    must vanish (a common multiplier λ). Returns ``identities`` (that difference, expanded, and 0), ``n_solutions``
    (roots per coordinate, must be 1), ``ratio_identities`` (``w_k/w_1`` of the solved stationary point and
    ``e^{(R_k - R_1)/(τ+γ)}``) and
    ``hessian_eigs`` (``-(τ+γ)/w_k``, all negative: strictly concave, so the stationary point is the maximiser)."""
    w = sp.symbols(f"w1:{K + 1}", positive=True)
    R = vec("R", K)
    lam = sp.Symbol("lambda", real=True)
    J = (sum(w[k] * R[k] for k in range(K)) - tau * sum(w[k] * sp.log(K * w[k]) for k in range(K))
         - gamma * sum(w[k] * sp.log(w[k]) for k in range(K)))
    grad = [sp.diff(J, v) for v in w]
    roots = [sp.solve(sp.Eq(grad[k], lam), w[k]) for k in range(K)]
    n = max(len(r) for r in roots)
    if any(len(r) != 1 for r in roots):
        return {"identities": {}, "ratio_identities": {}, "n_solutions": n, "hessian_eigs": []}
    ratio = {f"w_{k + 1}/w_1 - e^((R_{k + 1}-R_1)/(tau+gamma))":
             (sp.simplify(sp.expand(roots[k][0] / roots[0][0])), sp.exp((R[k] - R[0]) / (tau + gamma)))
             for k in range(1, K)}
    cand = softmax([r / (tau + gamma) for r in R])
    at = dict(zip(w, cand))
    # log of a positive quotient of exponentials: expand_log(force=True) is exact here (all arguments are > 0)
    ids = {f"dJ/dw_{k + 1} - dJ/dw_1 at softmax(R/(tau+gamma))":
           (sp.expand(sp.expand_log((grad[k] - grad[0]).subs(at), force=True)), 0) for k in range(1, K)}
    eigs = list(sp.hessian(J, w).eigenvals().keys())
    return {"identities": ids, "ratio_identities": ratio, "n_solutions": 1, "hessian_eigs": eigs}


# ---------------------------------------------------------------------------------------------
# lpo.mode_coverage (LPO Cor. 2)
# ---------------------------------------------------------------------------------------------
def mode_coverage():
    """The steps of Cor. 2, derived. ``x = w*_k ∈ (0, 1)``, ``p = P_k``, ``D ≥ 0``.

    * Data processing onto the event ``{k}`` gives ``D ≥ x log(x/p) + (1-x) log((1-x)/(1-p))``; dropping
      ``(1-x) log(1/(1-p)) ≥ 0`` leaves ``D ≥ x log(x/p) + (1-x) log(1-x)``. Solving the equality for ``p`` (SymPy)
      gives the bound ``p ≥ f(x) = x e^{-D/x} (1-x)^{(1-x)/x}`` (the solution is unique; ``x log(x/p)`` decreases in p).
    * ``d/dx log f = (D - log(1-x))/x²``; with ``x = 1 - e^{-v}`` (``v > 0``) it is ``(D + v)/x² > 0``: f increases,
      so ``w*_k ≥ α`` gives ``f(w*_k) ≥ f(α)``.
    * ``(1-α)^{(1-α)/α} > e^{-1}``: with ``α = 1 - e^{-v}``, ``log`` of it is ``-v/(e^v - 1)`` and
      ``-v/(e^v - 1) > -1 ⇔ q(v) = e^v - 1 - v > 0``, true since ``q(0) = 0`` and ``q' = e^v - 1 > 0``; the constant
      ``e^{-1}`` is sharp (the limit as ``α → 0⁺``).

    Returns ``(identities, facts)``: ``name -> (derived, stated)`` and booleans that must be True."""
    x, p = sp.symbols("x p", positive=True)
    D = sp.Symbol("D", nonnegative=True)
    v = sp.Symbol("v", positive=True)
    f = x * sp.exp(-D / x) * (1 - x) ** ((1 - x) / x)
    sols = sp.solve(sp.Eq(x * sp.log(x / p) + (1 - x) * sp.log(1 - x), D), p)
    ids, facts = {}, {"one solution of the binary bound for p": len(sols) == 1}
    if len(sols) == 1:
        # x = 1/(1+u), u > 0 parametrises x ∈ (0, 1) with 1 - x = u/(1+u) > 0, so SymPy picks the real branches
        u = sp.Symbol("u", positive=True)
        ids["solved p - f(x)"] = (sols[0].subs(x, 1 / (1 + u)), f.subs(x, 1 / (1 + u)))
    dlogf = sp.diff(sp.expand_log(sp.log(f), force=True), x)
    ids["d log f/dx - (D - log(1-x))/x^2"] = (dlogf, (D - sp.log(1 - x)) / x ** 2)
    num = (D - sp.log(1 - x)).subs(x, 1 - sp.exp(-v))
    ids["(D - log(1-x)) at x = 1 - e^-v minus (D + v)"] = (num, D + v)
    facts["D + v > 0 (so d log f/dx > 0)"] = (D + v).is_positive is True
    a = sp.Symbol("alpha", positive=True)
    g_log = ((1 - a) / a * sp.log(1 - a)).subs(a, 1 - sp.exp(-v))
    ids["log (1-a)^((1-a)/a) at a = 1 - e^-v plus v/(e^v - 1)"] = (g_log, -v / (sp.exp(v) - 1))
    q = sp.exp(v) - 1 - v
    facts["q(0) = 0"] = sp.simplify(q.subs(v, 0)) == 0
    t = sp.Symbol("t", real=True)
    ids["q'(v) - ∫_0^v e^t dt"] = (sp.diff(q, v), sp.integrate(sp.exp(t), (t, 0, v)))
    facts["q'(v) > 0: the integrand e^t is positive on (0, v)"] = sp.exp(t).is_positive is True
    ids["lim_{a->0+} (1-a)^((1-a)/a) - e^-1"] = (sp.limit((1 - a) ** ((1 - a) / a), a, 0, "+"), sp.exp(-1))
    return ids, facts


# ---------------------------------------------------------------------------------------------
# lpo.full_space (LPO Prop. 2)
# ---------------------------------------------------------------------------------------------
def full_space_iteration(M):
    """Prop. 2 on ``M`` responses, ``π_0 = softmax(l)`` (so ``π_0 > 0``), real ``R``, step ``t ≥ 0``:

    * induction step: ``π_t e^{R/τ}/Σ π_t e^{R/τ} - softmax(l + (t+1)R/τ)`` with ``π_t = softmax(l + tR/τ)`` (base
      case ``t = 0`` is ``π_0`` itself);
    * monotonicity: ``d/dt E_{π_t}[R] - Var_{π_t}(R)/τ`` (so ``E_{t+1} - E_t = ∫_t^{t+1} Var/τ ≥ 0``);
    * convergence: with ``R_1`` the unique maximum (``R_k = R_1 - a_k``, ``a_k > 0``), ``lim_{t→∞} π_{t,1} = 1`` and
      ``lim π_{t,k} = 0`` (hence ``E_{π_t}[R] → R_1 = max R`` for bounded R).

    Returns ``(identities, limits)``: ``name -> (derived, stated)`` and ``name -> (limit, expected)``."""
    l, R = vec("l", M), vec("R", M)
    t = sp.Symbol("t", nonnegative=True)
    pi_t = softmax([l[k] + t * R[k] / tau for k in range(M)])
    z = sum(pi_t[k] * sp.exp(R[k] / tau) for k in range(M))
    pi_next = softmax([l[k] + (t + 1) * R[k] / tau for k in range(M)])
    ids = {f"step_{k + 1} - pi_(t+1),{k + 1}": (pi_t[k] * sp.exp(R[k] / tau) / z, pi_next[k]) for k in range(M)}
    ids.update({f"pi_0,{k + 1} - softmax(l)_{k + 1}": (pi_t[k].subs(t, 0), softmax(l)[k]) for k in range(M)})
    E = sum(pi_t[k] * R[k] for k in range(M))
    var = sum(pi_t[k] * (R[k] - E) ** 2 for k in range(M))
    ids["dE/dt - Var/tau"] = (sp.diff(E, t), var / tau)
    r1 = sp.Symbol("R1", real=True)
    gaps = sp.symbols(f"a2:{M + 1}", positive=True)
    Rg = [r1] + [r1 - g for g in gaps]
    # π_{t,k} with numerator and denominator divided by e^{t R_1/τ} (exact; each exponent ≤ 0)
    num = [sp.exp(l[k] + t * (Rg[k] - r1) / tau) for k in range(M)]
    den = sum(num)
    lims = {f"t->oo pi_t,{k + 1}": (sp.limit(num[k] / den, t, sp.oo), 1 if k == 0 else 0) for k in range(M)}
    return ids, lims


# ---------------------------------------------------------------------------------------------
# lpo.k2_bce (LPO App. C.5)
# ---------------------------------------------------------------------------------------------
def _log_sigmoid(x):
    return -sp.log(1 + sp.exp(-x))


def k2_soft_bce():
    """``K = 2``, on-policy (``s_t = 0``), ``R = (1, 0)`` so ``φ = (1/τ, 0)``. ``L_fwd = D_KL(w*‖P_θ)`` is taken in its
    cross-entropy form ``CE = -Σ w*_k log P_{θ,k}`` (Eq. 10 minus the constant ``H(w*)``; same gradient). Entries
    ``(derived, stated)`` (the stated side 0 where the entry is a difference):

    * ``w*_w - σ(1/τ)``;
    * ``D_KL(w*‖P) - (CE - H(w*))``;
    * ``CE - BCE`` with ``BCE = -σ(1/τ) log σ(s_w - s_l) - σ(-1/τ) log σ(s_l - s_w)``, shown by both partial derivatives
      vanishing and the value at ``s = 0`` being 0 (a function of two reals with zero gradient is constant);
    * ``BCE + log σ(Δ) - σ(-1/τ) Δ`` (``Δ = s_w - s_l``; same method in Δ): the distance to the hard preference
      ``-log σ(Δ)`` is exactly ``σ(-1/τ) Δ``;
    * limits ``σ(1/τ) → 1``, ``σ(-1/τ) → 0`` as ``τ → 0⁺`` (returned as ``name -> (limit, expected)``).

    Returns ``(identities, limits)``."""
    sw, sl, Dl = sp.symbols("s_w s_l Delta", real=True)
    s, phi = [sw, sl], [1 / tau, sp.Integer(0)]
    w = softmax(phi)
    lP = log_softmax(s)
    sig = lambda x: 1 / (1 + sp.exp(-x))  # noqa: E731
    ce = -sum(w[k] * lP[k] for k in range(2))
    H = -sum(w[k] * log_softmax(phi)[k] for k in range(2))
    bce = -sig(1 / tau) * _log_sigmoid(sw - sl) - sig(-1 / tau) * _log_sigmoid(sl - sw)
    d = ce - bce
    ids = {"w*_w - sigma(1/tau)": (w[0], sig(1 / tau)),
           "KL(w*||P) - (CE - H(w*))": (kl_logits(phi, s), ce - H),
           "d(CE - BCE)/ds_w": (sp.diff(d, sw), 0), "d(CE - BCE)/ds_l": (sp.diff(d, sl), 0),
           "(CE - BCE) at s = 0": (d.subs({sw: 0, sl: 0}), 0)}
    bce_d = -sig(1 / tau) * _log_sigmoid(Dl) - sig(-1 / tau) * _log_sigmoid(-Dl)
    gap = bce_d + _log_sigmoid(Dl) - sig(-1 / tau) * Dl
    ids["d/dDelta [BCE + log sigma(Delta) - sigma(-1/tau) Delta]"] = (sp.diff(gap, Dl), 0)
    ids["[BCE + log sigma(Delta) - sigma(-1/tau) Delta] at Delta = 0"] = (gap.subs(Dl, 0), 0)
    lims = {"tau->0 sigma(1/tau)": (sp.limit(sig(1 / tau), tau, 0, "+"), 1),
            "tau->0 sigma(-1/tau)": (sp.limit(sig(-1 / tau), tau, 0, "+"), 0)}
    return ids, lims


# ---------------------------------------------------------------------------------------------
# lpo.off_policy_gap (LPO App. B.2, Eq. 29)
# ---------------------------------------------------------------------------------------------
def off_policy_expansion(K):
    """Sign convention (ascent): both coefficients multiply ``∇_θ log π_θ(y_k|x)`` in an *ascent* direction,
    ``c^PG_k = r_k A_k/K`` (unclipped IS-weighted PG, ``r_k = e^{s_k}``) and ``c^revKL_k = -P_k(d_k - d̄)`` (minus the
    descent coefficient of Eq. 11), ``d = s - A`` (target ``softmax(A)``), ``Σ A = 0``. With ``s = ε u``:

    * ``Δ_k(0)`` (to equal 0: the two agree on-policy);
    * ``dΔ_k/dε(0) - (1/K)[(u_k - ū) + ū A_k + (1/K) Σ_m u_m A_m]`` (the spec's first-order Δ, divided by ε);
    * ``dc^revKL_k/dε(0) - (1/K)[u_k A_k - ū A_k - (1/K) Σ u_m A_m - (u_k - ū)]`` (Eq. 29's three groups) and
      ``c^revKL_k(0) - A_k/K``, ``dc^PG_k/dε(0) - u_k A_k/K``.

    Also returns ``uncentred``: ``Δ_1(0)`` for a general ``A`` (equal to ``Ā/K``), showing ``Σ A = 0`` is needed.
    Returns ``(identities, uncentred, Abar_over_K)``, ``identities`` as ``name -> (derived, stated)``."""
    e = sp.Symbol("varepsilon", real=True)
    u = vec("u", K)
    A = vec("A", K)
    Az = A[:-1] + [-sum(A[:-1])]                              # Σ A = 0

    def coeffs(Av):
        s = [e * v for v in u]
        P = softmax(s)
        d = [s[k] - Av[k] for k in range(K)]
        dbar = sum(P[j] * d[j] for j in range(K))
        c_pg = [sp.exp(s[k]) * Av[k] / K for k in range(K)]
        c_rev = [-P[k] * (d[k] - dbar) for k in range(K)]
        return c_pg, c_rev
    c_pg, c_rev = coeffs(Az)
    ubar = sum(u) / K
    uA = sum(u[m] * Az[m] for m in range(K))
    ids = {}
    for k in range(K):
        delta = c_pg[k] - c_rev[k]
        ids[f"Delta_{k + 1}(0)"] = (delta.subs(e, 0), 0)
        ids[f"dDelta_{k + 1}/de(0) - first order"] = (sp.diff(delta, e).subs(e, 0),
                                                      ((u[k] - ubar) + ubar * Az[k] + uA / K) / K)
        ids[f"c_revKL_{k + 1}(0) - A_{k + 1}/K"] = (c_rev[k].subs(e, 0), Az[k] / K)
        ids[f"dc_revKL_{k + 1}/de(0) - Eq. 29"] = (sp.diff(c_rev[k], e).subs(e, 0),
                                                   (u[k] * Az[k] - ubar * Az[k] - uA / K - (u[k] - ubar)) / K)
        ids[f"dc_PG_{k + 1}/de(0) - u A/K"] = (sp.diff(c_pg[k], e).subs(e, 0), u[k] * Az[k] / K)
    g_pg, g_rev = coeffs(A)
    return ids, sp.simplify((g_pg[0] - g_rev[0]).subs(e, 0)), sum(A) / K ** 2    # Ā/K = ΣA/K²


# ---------------------------------------------------------------------------------------------
# lpo.pointwise_target (ambiguity A9; App. C.4 vs Eq. 8)
# ---------------------------------------------------------------------------------------------
def pointwise_target(K):
    """App. C.4's pointwise target ``w^C4_k ∝ π_b(y_k) e^{R_k/τ}`` against Eq. 8's on-policy ``w* = softmax(R/τ)``
    (``b_k = π_b(y_k) > 0``), and the pointwise coefficient ``c^point = ∂L_point/∂s`` with
    ``L_point = -Σ w*_k log π_θ(y_k|x)`` and ``log π_θ(y_k|x) = s_k + log π_b(y_k|x)`` (π_b frozen).

    Returns ``(identities, facts, counterexample)``:

    * identities, as ``name -> (derived, stated)``: ``(w^C4_1/w*_1)/(w^C4_2/w*_2) - b_1/b_2`` (the two agree iff π_b
      is equal on the group);
      ``c^point_k + w*_k``; ``Σ c^point + 1``; ``c^fwd`` at ``P = w*`` (0, self-correcting); the SNIS limit over a
      finite response space, ``b g/Σ b g`` with Eq. 8's weight ``g = e^{R/τ}``, minus the KL-regularised target
      ``b e^{R/τ}/Σ b e^{R/τ}``; and with C.4's weight ``g = b e^{R/τ}`` minus ``b² e^{R/τ}/Σ b² e^{R/τ}``;
    * facts: the C.4 target differs from w* at ``b = (4/5, 1/5)``, ``R = (1, 0)``, ``τ = 1`` (for K > 2 the other
      responses share 1/5 and have reward 0); ``c^point`` at
      ``P = w*`` is not 0 (it never self-corrects);
    * counterexample: that instance's two targets, exact."""
    R, s = vec("R", K), vec("s", K)
    b = sp.symbols(f"b1:{K + 1}", positive=True)
    w = softmax([r / tau for r in R])
    zc4 = sum(b[j] * sp.exp(R[j] / tau) for j in range(K))
    wc4 = [b[k] * sp.exp(R[k] / tau) / zc4 for k in range(K)]
    ids = {"(wC4_1/w_1)/(wC4_2/w_2) - b1/b2": ((wc4[0] / w[0]) / (wc4[1] / w[1]), b[0] / b[1])}
    L_point = -sum(w[k] * (s[k] + sp.log(b[k])) for k in range(K))
    c_point = [sp.diff(L_point, v) for v in s]
    ids.update({f"c_point_{k + 1} + w*_{k + 1}": (c_point[k], -w[k]) for k in range(K)})
    ids["sum c_point + 1"] = (sum(c_point), -1)
    L_fwd = kl_logits([r / tau for r in R], s)
    at_target = {s[k]: R[k] / tau for k in range(K)}
    ids.update({f"c_fwd_{k + 1} at P = w*": (sp.diff(L_fwd, s[k]).subs(at_target), 0) for k in range(K)})
    g8 = [sp.exp(R[k] / tau) for k in range(K)]
    gc4 = [b[k] * sp.exp(R[k] / tau) for k in range(K)]
    snis = lambda g: [b[k] * g[k] / sum(b[j] * g[j] for j in range(K)) for k in range(K)]  # noqa: E731
    ids.update({f"SNIS(Eq. 8)_{k + 1} - b e^(R/tau)/Z": (snis(g8)[k], b[k] * sp.exp(R[k] / tau) / zc4) for k in range(K)})
    z2 = sum(b[j] ** 2 * sp.exp(R[j] / tau) for j in range(K))
    ids.update({f"SNIS(C.4)_{k + 1} - b^2 e^(R/tau)/Z2": (snis(gc4)[k], b[k] ** 2 * sp.exp(R[k] / tau) / z2)
                for k in range(K)})
    # π_b(y_1) = 4/5 and the other responses share 1/5 (distinct responses: Σ π_b(y_k) ≤ 1); K = 2 gives (4/5, 1/5)
    inst = {b[0]: sp.Rational(4, 5), R[0]: 1, tau: 1,
            **{b[k]: sp.Rational(1, 5 * (K - 1)) for k in range(1, K)}, **{R[k]: 0 for k in range(1, K)}}
    wc4_i, w_i = sp.simplify(wc4[0].subs(inst)), sp.simplify(w[0].subs(inst))
    facts = {"C.4 target ≠ Eq. 8 target at b = (4/5, 1/5 shared), R = (1, 0, ...), τ = 1":
             sp.simplify(wc4_i - w_i) != 0,
             "c_point at P = w* is not 0": all(sp.simplify(c_point[k].subs(at_target) + w[k]) == 0 for k in range(K))
             and sp.simplify(c_point[0].subs(at_target)) != 0}
    return ids, facts, {"b": [inst[v] for v in b], "wC4_1": wc4_i, "w*_1": w_i}


# ---------------------------------------------------------------------------------------------
# lpo.single_response (LPO App. C.2): the K = 1 virtual simplex
# ---------------------------------------------------------------------------------------------
def _sigmoid(z):
    return 1 / (1 + sp.exp(-z))


def single_response(stated=None):
    """App. C.2: a single response (listwise logit ``s``, reward ``R``) and a *virtual* response (logit ``v``, reward
    the batch baseline ``b``). ``L = D_KL(softmax(R/τ, b/τ) ‖ softmax(s, v))`` (Eq. 10 on the two-point simplex) is
    differentiated, not typed in. ``stated(x)`` is the paper's on-policy coefficient as a function of
    ``x = (R - b)/τ`` (default ``½ - σ(x)``; a test passes a wrong one).

    Returns ``(identities, facts, limits)``:

    * identities, as ``name -> (derived, stated)``: ``∂L/∂s - (σ(s - v) - σ(x))``; ``∂L/∂s`` at ``s = v = 0`` minus
      ``stated(x)``; the same minus
      ``-½ tanh(x/2)``; ``∂L/∂s + ∂L/∂v`` (the *pair* is zero-sum, App. C.6: the virtual response carries ``-c``, and
      having no parameters it drops out of the gradient);
    * facts: ``½ - c = σ(x) > 0`` and ``½ + c = σ(-x) > 0`` (so ``|c| < ½``); ``c = 0`` only at ``R = b`` (SymPy
      solves ``c = 0`` for ``R``: one root, ``b``), so the single coefficient, which is all the gradient keeps,
      does not sum to zero;
    * limits ``x → ±∞``: ``c → ∓½`` (the bound ½ is sharp and not attained)."""
    s, v, R, b = sp.symbols("s v R b", real=True)
    x = sp.Symbol("x", real=True)
    stated = stated or (lambda z: sp.Rational(1, 2) - _sigmoid(z))
    L = kl_logits([R / tau, b / tau], [s, v])
    c, c_v = sp.diff(L, s), sp.diff(L, v)
    on = {s: 0, v: 0}
    c0 = c.subs(on)
    ids = {"dL/ds - (sigma(s - v) - sigma((R-b)/tau))": (c, _sigmoid(s - v) - _sigmoid((R - b) / tau)),
           "c(s=0) - stated((R-b)/tau)": (c0, stated((R - b) / tau)),
           "c(s=0) + tanh((R-b)/(2 tau))/2": (c0.rewrite(sp.exp), (-sp.tanh((R - b) / (2 * tau)) / 2).rewrite(sp.exp)),
           "dL/ds + dL/dv (pair is zero-sum)": (c, -c_v)}
    cx = sp.Rational(1, 2) - _sigmoid(x)                       # c0 as a function of x (identity above)
    ids["c(s=0) - (1/2 - sigma(x)) at x = (R-b)/tau"] = (c0, cx.subs(x, (R - b) / tau))
    roots = sp.solve(sp.Eq(c0, 0), R)
    facts = {"1/2 - c = sigma(x) > 0": sp.simplify(sp.Rational(1, 2) - cx - _sigmoid(x)) == 0
             and _sigmoid(x).is_positive is True,
             "1/2 + c = sigma(-x) > 0": sp.simplify(sp.Rational(1, 2) + cx - _sigmoid(-x)) == 0
             and _sigmoid(-x).is_positive is True,
             "c = 0 only at R = b": len(roots) == 1 and sp.simplify(roots[0] - b) == 0}
    limits = {"x->+oo c": (sp.limit(cx, x, sp.oo), -sp.Rational(1, 2)),
              "x->-oo c": (sp.limit(cx, x, -sp.oo), sp.Rational(1, 2))}
    return ids, facts, limits


# ---------------------------------------------------------------------------------------------
# lpo.inexact_projection (LPO Thm. 2 with the ε_proj of 1-2 gradient steps)
# ---------------------------------------------------------------------------------------------
def binary_group_gain():
    """On-policy group with ``n`` successes (reward 1) and ``m`` failures (reward 0), ``K = n + m``, ``x = e^{1/τ}``:
    ``w*_succ = x/(nx + m)``, ``w*_fail = 1/(nx + m)``, ``P_t = 1/K``. Returns identities ``name -> (derived, stated)``:

    * ``n(w_s - 1/K) + m(w_f - 1/K)`` (zero-sum), so for ``x ≥ 1`` ``TV(P_t, w*) = n(w_s - 1/K)``;
    * ``[R̂(w*) - R̂(P_t)] - TV(P_t, w*)``: the target gain τ·Jeffreys (Thm. 2(a)) *equals* TV(P_t, w*).

    Hence Thm. 2 certifies ``R̂(P_{t+1}) ≥ R̂(P_t)`` iff ``2 R_max ε_proj ≤ TV(P_t, w*)``: with the literal
    ``R_max = max|R_k| = 1`` the projection must halve the TV distance to the target; with the rewards centred
    (``R_max = ½``) it need only not increase it."""
    n, m, x = sp.symbols("n m x", positive=True)
    K = n + m
    ws, wf = x / (n * x + m), 1 / (n * x + m)
    tv0 = n * (ws - 1 / K)
    gain = n * ws * 1 + m * wf * 0 - (n * 1 + m * 0) / K
    return {"n(w_s - 1/K) + m(w_f - 1/K)": (n * (ws - 1 / K) + m * (wf - 1 / K), 0),
            "[R(w*) - R(P_t)] - TV(P_t, w*)": (gain, tv0),
            "w_s - 1/K at x = 1": (ws.subs(x, 1), 1 / K)}
