"""LPO theory layer: the SymPy derivations of fiberlab.theory.lpo, and proofs that the checks can fail."""

import sympy as sp

import fiberlab.claims  # noqa: F401  (declares the claims and attaches every layer's checks)
from fiberlab import registry
from fiberlab.claims import lpo_theory
from fiberlab.theory import lpo as T

LPO_IDS = ("lpo.pg_is_reverse_kl", "lpo.gibbs_target", "lpo.zero_sum", "lpo.fwd_bounded", "lpo.rev_unbounded",
           "lpo.rev_is_proximal", "lpo.implicit_targets", "lpo.monotone_improvement", "lpo.length_normalisation")


def _all_zero(d):
    return all(sp.simplify(v) == 0 for v in d.values())


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
    assert _all_zero({k: sp.exp(v) - P[k] for k, v in enumerate(T.log_softmax(s))})


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
    ev = lpo_theory._symbolic({"x": x}, {"fact": False})
    assert not ev.passed and "not proved" in ev.detail


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
        return {"Prop. 3": J + T.tau * T.kl_logits(s, phi_wrong) - T.tau * logZ}
    monkeypatch.setattr(T, "proximal_identities", wrong)
    assert registry.run_check(_theory_check("lpo.rev_is_proximal")).status == "fail"
