"""Which manifold to believe after cross-validation: the simplest candidate the data do not
rank below the best, given which candidates contain which.

Held-out likelihood rewards fit, not parsimony: a model whose latent manifold contains the true
one (S³ contains the Clifford torus, R² contains a ring, a circle contains any short arc) can
score as well as the true one, and by chance a little better. So the rule is:

1. **Best**: the candidate with the best mean score over the folds.
2. **Not worse**: every candidate whose fold-by-fold (paired) difference to the best is within
   one standard error of that difference (``n_se``; the "one-standard-error rule" of
   cross-validated model selection, applied to paired differences because the candidates share
   the folds' splits). These are the candidates the data do not rank below the best.
3. **Simplest**: among those, the ones that contain no other one of them
   (:func:`nested_in`). If that leaves one candidate, it is the recommendation; if it leaves
   several that do not contain one another (say T² and S²), the data cannot decide between
   them and the recommendation is *undecided*, with that set.

With fewer than two folds in common there is no standard error and no recommendation. The
containment relation (:func:`nested_in`) is a statement about the models' function classes: a
latent path on ``a`` can be reproduced, up to the smoothness of the tuning curves, by a path
on ``b``. It is written by hand here (no library describes it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Recommendation", "nested_in", "recommend"]

_FACTOR = re.compile(r"^(T|R|S)(\d+)$|^(SO3)$")


def _factors(name: str) -> list[tuple[str, int]]:
    """``"T1xR2"`` -> ``[("T", 1), ("R", 2)]``; SO(3) is ``("SO3", 3)``."""
    out = []
    for part in name.upper().replace("×", "X").split("X"):
        m = _FACTOR.match(part.strip())
        if m is None:
            raise ValueError(f"cannot read the manifold name {name!r} (part {part!r})")
        out.append(("SO3", 3) if m.group(3) else (m.group(1), int(m.group(2))))
    return out


def _dim(factors: list[tuple[str, int]]) -> int:
    return sum(d for _, d in factors)


def _factor_in(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """One factor inside another (``a != b``)."""
    (ka, da), (kb, db) = a, b
    if a == b:
        return False
    if ka == "R":  # a bounded flat latent fits in a patch of any manifold of its dimension
        return db >= da
    if ka == "T":
        if da == 1:  # a circle embeds in any manifold of dimension >= 2
            return db >= 2
        return ((kb == "T" and db > da) or (kb == "R" and db >= 2 * da)
                or (kb == "S" and db >= 2 * da - 1)  # Clifford tori: T^d in S^(2d-1)
                or (kb == "SO3" and da == 2))  # tori embed in SO(3) (and in S^3, its cover)
    if ka == "S":
        return (kb == "S" and db > da) or (kb == "R" and db > da)
    if ka == "SO3":  # S^3 double-covers SO(3): SO(3) tuning curves are even ones on S^3
        return (kb == "S" and db == 3) or (kb == "R" and db >= 5)
    return False


def nested_in(a: str, b: str) -> bool:
    """True when the model on manifold ``a`` is (up to the smoothness of its tuning curves) a
    special case of the model on ``b``, ``a != b``: every latent path on ``a`` has a copy on
    ``b``. Examples: R¹ ⊂ T¹ (an arc), T¹ ⊂ R² (a ring), T² ⊂ S³ (a Clifford torus),
    T² ⊂ SO(3), SO(3) ⊂ S³ (its double cover), Rᵈ ⊂ Rᵈ⁺¹; products factor by factor, or
    a manifold inside one factor of a product."""
    fa, fb = _factors(a), _factors(b)
    if sorted(fa) == sorted(fb):
        return False
    if len(fa) == 1 and len(fb) == 1:
        return _factor_in(fa[0], fb[0])
    if len(fa) == 1:  # inside one factor of b (constant in the others), or a flat patch
        return any(fa[0] == f or _factor_in(fa[0], f) for f in fb) or (
            fa[0][0] == "R" and _dim(fb) >= fa[0][1])
    if len(fa) == len(fb):  # factor by factor, in some order
        from itertools import permutations

        return any(all(x == y or _factor_in(x, y) for x, y in zip(fa, perm, strict=True))
                   for perm in permutations(fb))
    return False


@dataclass
class Recommendation:
    """Outcome of :func:`recommend`.

    ``choice``: the manifold to believe, or None when the data cannot decide (``undecided``);
    ``best``: the best mean score; ``not_worse``: the candidates within ``n_se`` paired standard
    errors of the best (the best included); ``simplest``: those of them that contain no other
    one of them (``choice`` is its only element when decided); ``reason``: one sentence.
    """

    choice: str | None
    best: str
    not_worse: list[str]
    simplest: list[str]
    reason: str
    n_folds: int
    n_se: float = 1.0
    differences: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def undecided(self) -> bool:
        return self.choice is None

    def headline(self) -> str:
        """One line for reports: the recommendation and its grounds."""
        if self.choice is None:
            return (f"undecided between {', '.join(self.simplest)}: {self.reason}")
        return f"{self.choice}: {self.reason}"


def recommend(result: Any, metric: str = "ll_per_datum", n_se: float = 1.0) -> Recommendation:
    """The manifold to believe from a :class:`~mgplvm.crossval.CVResult` (see the module
    docstring for the rule). ``n_se``: how many paired standard errors below the best a
    candidate may score and still count as not worse (1, the one-standard-error rule)."""
    from mgplvm.crossval import METRICS

    if not n_se >= 0:
        raise ValueError(f"n_se must be >= 0, got {n_se}")
    sign = 1.0 if METRICS[metric] else -1.0
    scores = {m: sign * s for m, s in result.scores(metric).items()}
    means = {m: float(np.nanmean(s)) for m, s in scores.items() if np.isfinite(s).any()}
    if not means:
        raise RuntimeError("every fold failed: nothing to recommend; see CVResult.failed")
    best = max(means, key=means.get)
    diffs: dict[str, dict[str, float]] = {}
    n_common = []
    for m in means:
        ok = np.isfinite(scores[m]) & np.isfinite(scores[best])
        d = scores[m][ok] - scores[best][ok]
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
        diffs[m] = {"mean": float(d.mean()) if len(d) else float("nan"), "se": se,
                    "n": int(len(d))}
        if m != best:
            n_common.append(len(d))
    n_folds = min(n_common, default=int(np.isfinite(scores[best]).sum()))
    if len(means) > 1 and n_folds < 2:
        return Recommendation(None, best, sorted(means), sorted(means),
                              f"fewer than two folds in common ({n_folds}): no standard error, "
                              "no recommendation", n_folds, n_se, diffs)
    not_worse = [m for m in result.manifolds if m in means and (
        m == best or diffs[m]["mean"] >= -n_se * diffs[m]["se"])]
    simplest = [m for m in not_worse if not any(nested_in(o, m) for o in not_worse if o != m)]
    if len(not_worse) == 1:
        reason = (f"best in {n_folds} folds, every other candidate more than {n_se:g} paired "
                  "s.e. below it")
        return Recommendation(best, best, not_worse, simplest, reason, n_folds, n_se, diffs)
    if len(simplest) == 1:
        choice = simplest[0]
        others = [m for m in not_worse if m != choice]
        reason = (f"{', '.join(others)} {'is' if len(others) == 1 else 'are'} within {n_se:g} "
                  f"paired s.e. of the best ({best}) over {n_folds} folds and contain"
                  f"{'s' if len(others) == 1 else ''} {choice}: the simpler is preferred")
        if choice == best:
            reason = (f"best over {n_folds} folds; {', '.join(others)} (within {n_se:g} paired "
                      f"s.e.) contain{'s' if len(others) == 1 else ''} it")
        return Recommendation(choice, best, not_worse, simplest, reason, n_folds, n_se, diffs)
    reason = (f"within {n_se:g} paired s.e. of the best ({best}) over {n_folds} folds, and "
              f"{'neither contains the other' if len(simplest) == 2 else 'none contains another'}"
              ": the data cannot decide")
    return Recommendation(None, best, not_worse, simplest, reason, n_folds, n_se, diffs)
