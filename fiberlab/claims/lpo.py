"""LPO's claims (Listwise Policy Optimization, arXiv 2605.06139 v2; spec ``spec/lpo.md``).

Notation: a group of ``K`` responses, listwise logits ``s_k = log π_θ(y_k|x) - log π_b(y_k|x)`` (summed over
tokens), ``P_θ = softmax(s)`` (Eq. 4), target ``w* = softmax(R/τ + s_t)`` (Thm. 1), ``c^fwd = P - w*`` (Eq. 10),
``c^rev = P(d - d̄)`` with ``d = s - φ`` (Eq. 11). Where the spec lists an ambiguity the reading it calls most
plausible is used (A1: summed sequence log-probs; A4: population σ_G; A8: Pinsker with the square root).
"""

from fiberlab.registry import claim

pg_is_reverse_kl = claim(
    "lpo.pg_is_reverse_kl", paper="LPO", source="LPO Prop. 1",
    statement="For zero-mean A, at π_θ = π_b: (1/K) Σ_k A_k ∇_θ log π_θ(y_k|x) = -∇_θ D_KL(P_θ‖softmax(A)); "
              "a per-prompt baseline does not change the target softmax(A).")

gibbs_target = claim(
    "lpo.gibbs_target", paper="LPO", source="LPO Thm. 1",
    statement="Ĵ(w) = Σ_k w_k R_k - τ D_KL(w‖P_t) has the unique maximiser w* = softmax(R/τ + s_t) on the simplex; "
              "w* → argmax R as τ → 0 and w* → P_t as τ → ∞.")

zero_sum = claim(
    "lpo.zero_sum", paper="LPO", source="LPO App. C.6",
    statement="For any differentiable L(P_θ), c_k = ∂L/∂s_k = P_k(∂L/∂P_k - Σ_j P_j ∂L/∂P_j) and Σ_k c_k = 0.")

fwd_bounded = claim(
    "lpo.fwd_bounded", paper="LPO", source="LPO Cor. 1",
    statement="c^fwd = P_θ - w* is bounded (|c_k| ≤ 1, Σ|c_k| = 2 TV(P_θ, w*) ≤ 2), zero-sum, and self-correcting "
              "(c^fwd → 0 as P_θ → w*).")

rev_unbounded = claim(
    "lpo.rev_unbounded", paper="LPO", source="LPO §3.3 (Eq. 11; boundedness not claimed)",
    statement="c^rev_k = P_k(d_k - d̄) is not bounded: |c^rev_k| ≤ max_j d_j - min_j d_j, and at fixed R, s it grows "
              "like 1/τ as τ → 0.")

rev_is_proximal = claim(
    "lpo.rev_is_proximal", paper="LPO", source="LPO Prop. 3",
    statement="Ĵ(P_θ) = -τ D_KL(P_θ‖w*) + τ log Ẑ, so minimising reverse KL maximises the proximal objective.")

implicit_targets = claim(
    "lpo.implicit_targets", paper="LPO", source="LPO Table 1 / Table 2 (App. C.3)",
    statement="On-policy group PG of GRPO/DAPO (τ = σ_G), Dr.GRPO (τ = 1), RLOO (τ = (K-1)/K exactly), MaxRL "
              "(τ = μ_G), ReMax (τ = 1) and REINFORCE++ w/ baseline (τ = σ_B') is the first-order reverse-KL "
              "projection toward softmax(R/τ).")

monotone_improvement = claim(
    "lpo.monotone_improvement", paper="LPO", source="LPO Thm. 2",
    statement="R̂(P_{t+1}) ≥ R̂(P_t) + τ[D_KL(w*‖P_t) + D_KL(P_t‖w*)] - 2 R_max ε_proj when TV(P_{t+1}, w*) ≤ ε_proj, "
              "with R̂(w*) - R̂(P_t) = τ·Jeffreys exactly and TV ≤ √(KL/2) (Pinsker, spec A8).")

length_normalisation = claim(
    "lpo.length_normalisation", paper="LPO", source="LPO Eq. 2/3 vs Prop. 1 (spec ambiguity A1)",
    status="conditional",
    statement="The group PG of Eq. 2/3 equals -∇ D_KL(P_θ‖softmax(A)) on-policy (Prop. 1) and its coefficients sum "
              "to zero.",
    condition="Only with summed sequence log-probs (no per-sequence 1/|y_k|) or equal lengths; with Eq. 2's "
              "1/|y_k| weights and unequal lengths the on-policy PG is neither equal nor parallel to "
              "-∇ D_KL(P_θ‖softmax(A)) and its coefficients A_k/(K|y_k|) no longer sum to zero.")
