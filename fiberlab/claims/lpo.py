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
              "(τ = μ_G) and REINFORCE++ w/ baseline (τ = σ_B') is the first-order reverse-KL projection toward "
              "softmax(R/τ) (ReMax: lpo.implicit_target_remax).")

implicit_target_remax = claim(
    "lpo.implicit_target_remax", paper="LPO", source="LPO Table 1 / Table 2 (App. C.3), ReMax row",
    status="conditional",
    statement="On-policy group PG of ReMax (A_k = R_k - b, b the greedy response's reward, τ = 1) is the "
              "first-order reverse-KL projection toward softmax(R): PG = -∇ D_KL(P_θ‖softmax(R)).",
    condition="Holds only with b = μ_G (centred advantages). Per group, PG + ∇KL = ((μ_G - b)/K) Σ_k ∇log π(y_k) "
              "exactly: zero in expectation under on-policy sampling, but not zero in a group with b ≠ μ_G.")

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

entropy_redundant = claim(
    "lpo.entropy_redundant", paper="LPO", source="LPO App. C.7",
    statement="-D_KL(P_θ‖w*) = Σ_k P_{θ,k} φ_k + H(P_θ) - log Z_φ (an implicit entropy bonus), and adding γH to the "
              "on-policy listwise objective gives the target softmax(R/(τ+γ)): an entropy bonus is redundant with τ.")

mode_coverage = claim(
    "lpo.mode_coverage", paper="LPO", source="LPO Cor. 2",
    statement="If w*_k ≥ α and D_KL(w*‖P_θ) ≤ D, then P_{θ,k} > α exp(-D/α - 1) (forward KL keeps mass on every "
              "mode of the target).")

full_space = claim(
    "lpo.full_space", paper="LPO", source="LPO Prop. 2",
    statement="With π_0(y) > 0 everywhere and bounded R, π_{t+1} ∝ π_t e^{R/τ} gives π_t ∝ π_0 e^{tR/τ} and "
              "E_{π_t}[R] → max_y R(y) (monotonically).")

k2_bce = claim(
    "lpo.k2_bce", paper="LPO", source="LPO App. C.5",
    statement="K = 2 on-policy with R_w = 1, R_l = 0: w*_w = σ(1/τ) and L_fwd = -σ(1/τ) log σ(s_w - s_l) - "
              "σ(-1/τ) log σ(s_l - s_w), a soft-label BCE (up to the constant H(w*)); the hard preference -log σ(s_w - s_l) "
              "is recovered as τ → 0.")

off_policy_gap = claim(
    "lpo.off_policy_gap", paper="LPO", source="LPO App. B.2 (Eq. 29)",
    statement="For zero-mean A and drift δ̄ = max_k |r_k - 1| < 1/2, Δ_k = c^PG_k - c^revKL_k = (1/K)[(s_k - s̄) + "
              "s̄ A_k + (1/K) Σ_m s_m A_m] + O(δ̄²) and |Δ_k| ≤ C δ̄(1 + ‖A‖∞)/K for a universal constant C.")

pointwise_target = claim(
    "lpo.pointwise_target", paper="LPO", source="LPO App. C.4 vs Eq. 8 (spec ambiguity A9)",
    status="conditional",
    statement="The pointwise (MPO/AWR) target is ∝ π_b(y_k) e^{R_k/τ}, and the pointwise coefficient c^point = -w* "
              "sums to -1 (a net pull) and never self-corrects.",
    condition="The π_b(y) factor is right only for the full-space density (K → ∞: π_b(y) e^{R(y)/τ}/Z) or when π_b is "
              "equal on the group's responses. As weights on a group sampled from π_b (SNIS, Eq. 8) the target is "
              "softmax(R/τ + s_t) with no π_b factor; with the factor the group weights converge to ∝ π_b² e^{R/τ}. "
              "Counterexample: π_b(y) = (0.8, 0.2), R = (1, 0), τ = 1 gives w_1 = 4e/(1+4e) ≈ 0.916 instead of "
              "e/(1+e) ≈ 0.731. The c^point statements hold with w* from Eq. 8.")
