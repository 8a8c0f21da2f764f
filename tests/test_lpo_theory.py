"""LPO theory layer: the SymPy derivations of fiberlab.theory.lpo, and proofs that the checks can fail."""

import sympy as sp

import fiberlab.claims  # noqa: F401  (declares the claims and attaches every layer's checks)
from fiberlab import registry
from fiberlab.claims._symbolic import proof_evidence, symbolic_evidence
from fiberlab.theory import lpo as T

LPO_IDS = ("lpo.pg_is_reverse_kl", "lpo.gibbs_target", "lpo.zero_sum", "lpo.fwd_bounded", "lpo.rev_unbounded",
           "lpo.rev_is_proximal", "lpo.implicit_targets", "lpo.monotone_improvement", "lpo.length_normalisation",
           "lpo.implicit_target_remax")


def _all_zero(pairs):
    """Every ``name -> (derived, stated)`` pair of a derivation is an identity."""
    return all(sp.simplify(derived - stated) == 0 for derived, stated in pairs.values())


def _theory_check(claim_id):
    return next(ch for ch in registry.get_claim(claim_id).checks if ch.layer == "theory")


def test_every_lpo_claim_has_theory_and_numerics_checks():
    for cid in LPO_IDS:
        c = registry.get_claim(cid)
        assert c.paper == "LPO" and {"theory", "numerics"} <= set(c.layers), cid
    assert registry.get_claim("lpo.length_normalisation").status == "conditional"
    assert registry.get_claim("lpo.length_normalisation").condition


def test_softmax_and_kl_definitions():
    s = T.vec("s", 3)
    P = T.softmax(s)
    assert sp.simplify(sum(P) - 1) == 0
    assert sp.simplify(T.kl_logits(s, s)) == 0
    assert _all_zero({k: (sp.exp(v), P[k]) for k, v in enumerate(T.log_softmax(s))})


def test_reverse_and_forward_coefficients_k2():
    assert _all_zero(T.reverse_kl_coefficients(2))
    assert _all_zero(T.forward_kl_coefficients(2))


def test_pg_on_policy_k2_and_rloo_k2():
    assert _all_zero(T.pg_on_policy(2))
    assert _all_zero(T.rloo_advantage(2))


def test_rloo_with_tau_one_is_not_exact():
    """Table 1's 'τ ≈ 1' for RLOO: at τ = 1 the reverse-KL coefficient misses RLOO's by the factor K/(K-1)."""
    K = 3
    s, phi, c = T.reverse_kl_coefficient_expr(K)
    R = T.vec("R", K)
    on = {**{v: 0 for v in s}, **dict(zip(phi, R))}
    diff = c[0].subs(on) + (R[0] - (sum(R) - R[0]) / (K - 1)) / K
    assert sp.simplify(diff) != 0


def test_growth_limit_is_nonzero_for_nonconstant_rewards():
    lim, expected = T.reverse_growth(2)["tau c_rev_1"]
    assert sp.simplify(lim - expected) == 0
    R1, R2 = sp.symbols("R1 R2", real=True)
    assert sp.simplify(expected.subs({R1: 1, R2: 0})) != 0


def test_symbolic_evidence_fails_on_nonzero_identity():
    x = sp.Symbol("x", positive=True)
    ev = symbolic_evidence({"x": x}, {"fact": False})
    assert not ev.passed and "not proved" in ev.detail
    ev = proof_evidence({"x = 0": sp.simplify(x) == 0, "fact": False, "1 = 1": True})
    assert not ev.passed and ev.cases == 3 and "x = 0" in ev.detail and "fact" in ev.detail and "1 = 1" not in ev.detail


def test_forward_kl_in_place_of_reverse_fails_prop1_check(monkeypatch):
    """KL(softmax(A)‖P) instead of KL(P‖softmax(A)) gives c = P - w*, not P(d - d̄): the check must fail."""
    orig = T.kl_logits
    monkeypatch.setattr(T, "kl_logits", lambda a, b: orig(b, a))
    assert registry.run_check(_theory_check("lpo.pg_is_reverse_kl")).status == "fail"


def test_wrong_target_fails_proximal_check(monkeypatch):
    """Dropping s_t from the target (w* = softmax(R/τ) off-policy) breaks Prop. 3: the check must fail."""
    def wrong(K):
        s, st, R = T.vec("s", K), T.vec("t", K), T.vec("R", K)
        phi_wrong = [R[k] / T.tau for k in range(K)]
        logZ = sp.log(sum(sp.exp(st[k] + R[k] / T.tau) for k in range(K))) - sp.log(sum(sp.exp(v) for v in st))
        J = sum(T.softmax(s)[k] * R[k] for k in range(K)) - T.tau * T.kl_logits(s, st)
        return {"Prop. 3": (J, -T.tau * T.kl_logits(s, phi_wrong) + T.tau * logZ)}
    monkeypatch.setattr(T, "proximal_identities", wrong)
    assert registry.run_check(_theory_check("lpo.rev_is_proximal")).status == "fail"


# ---------------------------------------------------------------------------------------------
# Claims added later: lpo.entropy_redundant, ...
# ---------------------------------------------------------------------------------------------
def test_entropy_bonus_target_k2_and_declaration():
    c = registry.get_claim("lpo.entropy_redundant")
    assert c.paper == "LPO" and {"theory", "numerics"} <= set(c.layers)
    out = T.entropy_bonus_target(2)
    assert out["n_solutions"] == 1 and _all_zero(out["identities"]) and _all_zero(out["ratio_identities"])
    assert _all_zero(T.max_ent_form(2))


def test_entropy_target_at_tau_alone_fails(monkeypatch):
    """If the bonus were not redundant with τ (target softmax(R/τ)), the Lagrange conditions must not hold."""
    orig = T.softmax
    w = sp.symbols("w1:3", positive=True)
    R = T.vec("R", 2)
    J = (sum(w[k] * R[k] for k in range(2)) - T.tau * sum(w[k] * sp.log(2 * w[k]) for k in range(2))
         - T.gamma * sum(w[k] * sp.log(w[k]) for k in range(2)))
    wrong = orig([r / T.tau for r in R])
    g = [sp.diff(J, v).subs(dict(zip(w, wrong))) for v in w]
    assert sp.simplify(sp.expand(sp.expand_log(g[1] - g[0], force=True))) != 0
    # and the check itself fails when the max-ent identity is broken (entropy term dropped)
    monkeypatch.setattr(T, "max_ent_form", lambda K: {"dropped H": (-T.kl_logits(T.vec("s", K), T.vec("phi", K)),
                                                                    sum(p * f for p, f in zip(T.softmax(T.vec("s", K)),
                                                                                              T.vec("phi", K)))
                                                                    - sp.log(sum(sp.exp(v) for v in T.vec("phi", K))))})
    assert registry.run_check(_theory_check("lpo.entropy_redundant")).status == "fail"


def test_mode_coverage_theory_and_failure(monkeypatch):
    c = registry.get_claim("lpo.mode_coverage")
    assert c.paper == "LPO" and {"theory", "numerics"} <= set(c.layers)
    ids, facts = T.mode_coverage()
    assert _all_zero(ids) and all(v is True for v in facts.values())
    # a wrong derivative (sign of the log term flipped) is not proved
    x, D = sp.Symbol("x", positive=True), sp.Symbol("D", nonnegative=True)
    f = x * sp.exp(-D / x) * (1 - x) ** ((1 - x) / x)
    dlogf, wrong = sp.diff(sp.expand_log(sp.log(f), force=True), x), (D + sp.log(1 - x)) / x ** 2
    assert sp.simplify(dlogf - wrong) != 0
    monkeypatch.setattr(T, "mode_coverage", lambda: ({"wrong d log f": (dlogf, wrong)}, {}))
    assert registry.run_check(_theory_check("lpo.mode_coverage")).status == "fail"


def test_full_space_theory_and_failure(monkeypatch):
    c = registry.get_claim("lpo.full_space")
    assert c.paper == "LPO" and {"theory", "numerics"} <= set(c.layers)
    ids, lims = T.full_space_iteration(2)
    assert _all_zero(ids) and _all_zero(lims)
    # the wrong exponent (π_t ∝ π_0 e^{(t+1)R/τ} as the t-th iterate) breaks the base case: the check must fail
    orig = T.full_space_iteration

    def shifted(M):
        ids, lims = orig(M)
        l, R = T.vec("l", M), T.vec("R", M)
        ids["wrong base"] = (T.softmax([l[k] + R[k] / T.tau for k in range(M)])[0], T.softmax(l)[0])
        return ids, lims
    monkeypatch.setattr(T, "full_space_iteration", shifted)
    assert registry.run_check(_theory_check("lpo.full_space")).status == "fail"


def test_k2_bce_theory_and_failure(monkeypatch):
    c = registry.get_claim("lpo.k2_bce")
    assert c.paper == "LPO" and {"theory", "numerics"} <= set(c.layers)
    ids, lims = T.k2_soft_bce()
    assert _all_zero(ids) and _all_zero(lims)
    # swapped soft labels (σ(-1/τ) on the winner) is not the forward-KL loss: its s_w-derivative differs
    sw, sl = sp.symbols("s_w s_l", real=True)
    w = T.softmax([1 / T.tau, sp.Integer(0)])
    ce = -sum(w[k] * T.log_softmax([sw, sl])[k] for k in range(2))
    swapped = -w[1] * T._log_sigmoid(sw - sl) - w[0] * T._log_sigmoid(sl - sw)
    assert sp.simplify(sp.diff(ce - swapped, sw)) != 0
    monkeypatch.setattr(T, "k2_soft_bce", lambda: ({"swapped labels": (sp.diff(ce - swapped, sw), 0)}, {}))
    assert registry.run_check(_theory_check("lpo.k2_bce")).status == "fail"


def test_off_policy_expansion_k2_and_wrong_sign_fails(monkeypatch):
    c = registry.get_claim("lpo.off_policy_gap")
    assert c.paper == "LPO" and {"theory", "numerics"} <= set(c.layers)
    ids, unc, abar = T.off_policy_expansion(2)
    assert _all_zero(ids) and sp.simplify(unc - abar) == 0
    orig = T.off_policy_expansion

    def flipped(K):
        """The descent sign for c^revKL (c^PG + c^rev): the gap no longer vanishes on-policy."""
        ids, unc, abar = orig(K)
        A = T.vec("A", K)
        ids["Delta with descent sign at s = 0"] = (2 * (A[0] - sum(A) / K) / K, 0)
        return ids, unc, abar
    monkeypatch.setattr(T, "off_policy_expansion", flipped)
    assert registry.run_check(_theory_check("lpo.off_policy_gap")).status == "fail"


def test_pointwise_target_conditional_and_failure(monkeypatch):
    c = registry.get_claim("lpo.pointwise_target")
    assert c.status == "conditional" and "π_b" in c.condition and {"theory", "numerics"} <= set(c.layers)
    ids, facts, ce = T.pointwise_target(2)
    assert _all_zero(ids) and all(v is True for v in facts.values())
    assert sp.simplify(ce["wC4_1"] - 4 * sp.E / (1 + 4 * sp.E)) == 0 and sp.simplify(ce["w*_1"] - sp.E / (1 + sp.E)) == 0
    # if π_b were equal on the group the counterexample would vanish: the check must then fail
    orig = T.pointwise_target

    def uniform_b(K):
        ids, facts, ce = orig(K)
        facts = dict(facts)
        b = sp.symbols(f"b1:{K + 1}", positive=True)
        R = T.vec("R", K)
        w = T.softmax([r / T.tau for r in R])
        z = sum(b[0] * sp.exp(R[j] / T.tau) for j in range(K))
        facts = {k: (sp.simplify(b[0] * sp.exp(R[0] / T.tau) / z - w[0]) != 0) if k.startswith("C.4") else v
                 for k, v in facts.items()}
        return ids, facts, ce
    monkeypatch.setattr(T, "pointwise_target", uniform_b)
    assert registry.run_check(_theory_check("lpo.pointwise_target")).status == "fail"


def test_remax_gap_is_the_uncentred_baseline():
    """(R_k - b)/K + c^rev_k(s = 0, φ = R) - (μ_G - b)/K simplifies to 0; the gap vanishes only at b = μ_G."""
    ids, gap, b, mu = T.remax_gap(3)
    assert _all_zero(ids)
    assert sp.solve(sp.Eq(gap, 0), b) == [mu]
    assert registry.get_claim("lpo.implicit_target_remax").status == "conditional"
    assert "b = μ_G" in registry.get_claim("lpo.implicit_target_remax").condition
