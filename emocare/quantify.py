"""Quantification: each class's share of a set of posts, estimated from the model's probabilities.

Counting each post's top label (classify and count) inherits the classifier's bias, and a share of posts
moves with the mix the classifier was trained on. The estimators (Forman 2008; Bella et al. 2010):

* ``count``: the share of posts whose top label is the class;
* ``pcc``: probabilistic classify and count, the mean calibrated probability;
* ``acc``: adjusted classify and count: the top-label shares ``q`` solved for the true shares ``p`` in
  ``q = M p``, with ``M[i, j]`` the validation split's rate of predicting ``i`` for a post of class ``j``;
* ``pacc``: the same with mean probabilities on both sides;
* ``em``: maximum likelihood under prior shift (Saerens et al. 2002): the calibrated probabilities are
  re-weighted by the ratio of the period's shares to the validation mix until the shares they average to
  stop moving. With a bias-corrected calibration it is hard to beat (Alexandari et al. 2020).

The adjusted estimators and ``em`` need the bundle's validation statistics (:func:`validation_stats`, stored in the
fusion checkpoint and in a predictions file's ``.models.json``). ``em`` is the default: on shifted periods of four
real text sets it had the lowest error (``benchmarks/quantification.py``). Intervals (:func:`interval`) come from
the bootstrap of a period's posts, for ``em`` from draws of the period's own shares from their posterior
(:func:`_posterior_shares`); with the validation posts in the statistics, each draw less a draw of the classifier's
error (the estimator's error on a copy of them re-mixed to the period's estimate; for ``em`` also how far a
calibration fitted on another validation split would move it), so that they hold the classifier's error as well as
the period's.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

METHODS = ("count", "pcc", "acc", "pacc", "em")
NEEDS_STATS = ("acc", "pacc", "em")
DEFAULT = "em"  # chosen on shifted periods of four real text sets: README, Trends that follow the community
EM_STEPS = 200
NEWTON_STEPS = 20  # 3 to 6 from near the maximum, a few more with shares held at 0 (rows still moving: EM)
EM_TOL = 1e-6
OUTER_NUMBERS = 8_000_000  # Newton's per-post outer products kept up to this many numbers (64 MB)
BOOTSTRAP = 100  # resamples (em: posterior draws) per interval: the coverage in docs/trends.md was measured with 100
# em's posterior draws (_posterior_shares): sweeps from em's maximum before draws are kept, and between kept draws
# (one sweep's shares lean on the last one's; with a weak classifier most of a post's label is the shares' doing)
BURN_SWEEPS = 50
THIN_SWEEPS = 10
KEPT_POSTS = 5000  # validation posts kept in the bundle's statistics (about 7 bytes a class each, as JSON)
LEVEL = 0.95
DESCRIPTIONS = {
    "count": "the share of posts whose top label it is (biased toward the classes training weighted up)",
    "pcc": "the mean calibrated probability (probabilistic classify and count)",
    "acc": "top-label shares adjusted with the validation confusion matrix (adjusted classify and count)",
    "pacc": "mean probabilities adjusted with the validation split's (probabilistic adjusted count)",
    "em": "the calibrated probabilities re-weighted to the period's own class mix (EM, Saerens et al. 2002)"}


def interval_covers(method: str, stats: dict | None = None) -> str:
    """What :func:`interval` of ``method`` with the validation statistics ``stats`` accounts for, in words (the
    trends page and ``trends.csv`` say it)."""
    from_validation = method in NEEDS_STATS and bool(stats and stats.get("labels"))
    if method == "em":
        period = f"the period's sampling error ({BOOTSTRAP} draws of its posts' labels from their posterior)"
        if from_validation:
            return (f"{period} and the classifier's error (each draw less how far the estimate moves with the "
                    "calibration fitted on a bootstrap copy of the bundle's validation posts, and less the "
                    "estimator's error on a bootstrap copy of them re-mixed to the period's estimate)")
        return f"{period}; not the classifier's error"
    period = f"the period's sampling error ({BOOTSTRAP} bootstrap resamples of its posts)"
    if from_validation:
        return (f"the period's sampling error and the classifier's error ({BOOTSTRAP} bootstrap resamples of its "
                "posts, each less the estimator's error on a bootstrap copy of the bundle's validation posts "
                "re-mixed to the period's estimate)")
    if method in ("acc", "pacc"):
        return (f"{period} and the classifier's error as the adjustment knows it (each resample also redraws the "
                "validation statistics, as another validation split of that size would give them)")
    return f"{period}; not the classifier's error"


def validation_stats(probs: np.ndarray, labels: np.ndarray, keeps_prior_shift: bool = False) -> dict:
    """What the adjusted estimators need from the validation split: per true class (columns), the rate of each
    top label (``confusion``), the mean probability of each class (``mean_probs``), the class mix (``prior``), and
    the posts themselves (``probs``, ``labels``; up to :data:`KEPT_POSTS`), from which :func:`interval` draws
    periods whose truth it knows.

    ``keeps_prior_shift``: the calibration keeps the class weights' shift of the probabilities (temperature
    scaling, none): they are calibrated for another mix than the validation labels', which em must re-weight from
    (``em_prior``, :func:`calibrated_mix`); with the labels' mix its shares were as far off as not adjusting at all
    (docs/trends.md, small bundles)."""
    k = probs.shape[1]
    confusion, mean_probs = np.zeros((k, k)), np.zeros((k, k))
    for j in range(k):
        rows = labels == j
        if rows.any():
            confusion[:, j] = np.bincount(probs[rows].argmax(1), minlength=k) / rows.sum()
            mean_probs[:, j] = probs[rows].mean(0)
        else:  # a class the split lacks: assume it is recognised perfectly rather than invent an error rate
            confusion[j, j] = mean_probs[j, j] = 1.0
    prior = np.bincount(labels, minlength=k) / max(len(labels), 1)
    kept = np.sort(np.random.default_rng(0).permutation(len(labels))[:KEPT_POSTS])
    return {"posts": int(len(labels)), "confusion": confusion.round(6).tolist(),
            "mean_probs": mean_probs.round(6).tolist(), "prior": prior.round(6).tolist(),
            "probs": probs[kept].round(4).tolist(), "labels": labels[kept].tolist(),
            **({"em_prior": calibrated_mix(probs, prior).round(6).tolist()} if keeps_prior_shift else {})}


def calibrated_mix(probs: np.ndarray, prior: np.ndarray, steps: int = EM_STEPS) -> np.ndarray:
    """The class mix ``probs`` [N, C] are calibrated for, given that their posts' mix is ``prior``: the ``m`` for
    which re-weighting them by ``prior / m`` makes them average to ``prior`` (what bcts's per-class biases meet
    when fitted), by iterative scaling."""
    ratio = np.ones(probs.shape[1])
    for _ in range(steps):
        moved = probs * ratio
        mean = (moved / moved.sum(1, keepdims=True)).mean(0)
        if np.abs(mean - prior).max() < EM_TOL:
            break
        ratio = ratio * np.where(prior > 0, prior / mean.clip(1e-12), 1.0)
    mix = np.where(prior > 0, prior / ratio, 0.0)
    return mix / mix.sum()


def _em_prior(stats: dict) -> np.ndarray:
    """The mix em re-weights from: the one the probabilities are calibrated for (the validation labels' unless the
    calibration kept the class weights' shift)."""
    return np.asarray(stats.get("em_prior", stats["prior"]), float)


def _adjust(observed: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The shares ``p`` (non-negative, summing to 1) nearest to solving ``observed = matrix @ p``."""
    p = np.linalg.lstsq(matrix, observed, rcond=None)[0].clip(0, None)
    return p / p.sum() if p.sum() > 0 else observed


def _newton(a: np.ndarray, weights: np.ndarray, shares: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Newton's method for em's fixed point: the shares ``p`` that maximise the log-likelihood
    ``L(p) = sum_i w_i log(a_i . p)`` on the simplex (``a`` [N, C] the probabilities over the validation mix), for
    each row of ``weights`` [B, N] from ``shares`` [B, C]. ``L`` is concave, so its maximum is the point EM converges
    to, and Newton reaches it in a few steps where EM needs dozens (each a pass over [B, N]).

    The maximum may put a share at 0 (EM only crawls toward it): a step that would take a share below 0 stops there
    and holds it at 0 (an active set); once the others have converged, a held share whose gradient is above the total
    weight (the gradient of every share inside at the maximum) is let go. Returns the shares and which rows converged
    (the others are left to EM)."""
    n_rows, k = shares.shape
    # the curvature sum_i w_i a_i a_i' / fit_i^2 in one product with the posts' outer products [N, C * C] where
    # they fit in OUTER_NUMBERS, else a class at a time (5x slower; memory that of the weights)
    outer = (a[:, :, None] * a[:, None, :]).reshape(len(a), -1) if a.size * k <= OUTER_NUMBERS else None
    shares, held, done = shares.copy(), np.zeros((n_rows, k), bool), np.zeros(n_rows, bool)
    total = weights.sum(1, keepdims=True)
    for _ in range(NEWTON_STEPS):
        todo = np.flatnonzero(~done)
        if not len(todo):
            break
        p, w, hold, mass = shares[todo], weights[todo], held[todo], total[todo]
        fit = np.maximum(p @ a.T, 1e-100)  # [B, N]: a_i . p (a floor whose square stays above 0: no 0 / 0)
        gradient = (w / fit) @ a
        free = ~hold
        # the Newton step on the free shares keeping their sum: [curvature 1; 1' 0] [step; multiplier] = [gradient; 0]
        system = np.zeros((len(todo), k + 1, k + 1))
        bend = w / fit ** 2
        curvature = ((bend @ outer).reshape(-1, k, k) if outer is not None else
                     np.stack([(bend * a[:, c]) @ a for c in range(k)], 1))
        system[:, :k, :k] = curvature * free[:, :, None] * free[:, None, :]
        # a held share's row says its step is 0; a tiny ridge on the others keeps a flat direction (one post) solvable
        scale = np.trace(system[:, :k, :k], axis1=1, axis2=2)[:, None] / k + 1e-300
        system[:, :k, :k] += np.eye(k) * np.where(hold, 1.0, 1e-10 * scale)[:, None, :]
        system[:, :k, k] = system[:, k, :k] = free
        rhs = np.concatenate([gradient * free, np.zeros((len(todo), 1))], 1)[..., None]
        step = np.linalg.solve(system, rhs)[:, :k, 0] * free
        # as far as the first share that would fall below 0, which is then held there
        falling = step < 0
        room = np.where(falling, p / np.where(falling, -step, 1), np.inf)
        length = np.minimum(1.0, room.min(1, keepdims=True))
        new = p + length * step
        stops = falling & (room <= length)
        new[stops] = 0.0
        shares[todo], held[todo] = new / new.sum(1, keepdims=True), hold | stops
        # at the maximum over the free shares, a held share whose gradient is above the total weight would raise the
        # likelihood: the one that would raise it most is let go, and the row goes on
        settled = (length[:, 0] == 1.0) & (np.abs(step).max(1) < EM_TOL)
        pull = np.where(hold, gradient / mass, 0.0)
        leaving = settled & (pull.max(1) > 1 + 1e-9)
        held[todo[leaving], pull[leaving].argmax(1)] = False
        done[todo] = settled & ~leaving
    return shares, done


def _em(probs: np.ndarray, weights: np.ndarray, prior: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """The shares under which the prior-adjusted posteriors of ``probs`` [N, C] average to themselves, for each row of
    ``weights`` [B, N] (each post counted that many times) at once: [B, C]. ``prior`` [C] is the mix the
    probabilities were calibrated for.

    A post's adjusted posterior is ``probs * r / (probs @ r)`` with ``r = shares / prior``: the shares are the
    maximum of the likelihood ``sum_i w_i log(probs_i . r)``. Rows get there by Newton's method (:func:`_newton`);
    the few it does not bring there in :data:`NEWTON_STEPS` steps, by EM from the start, whose steps are accelerated
    with SQUAREM (Varadhan & Roland 2008), which reaches the same fixed point: a jump is taken only where it raises
    the likelihood. A row stops once its shares stop moving."""
    prior = prior.clip(1e-6, None)
    a = probs / prior
    shares = np.broadcast_to(prior if start is None else start, (len(weights), len(prior))).copy()
    shares, converged = _newton(a, weights, shares)
    active = np.flatnonzero(~converged)
    shares[active] = np.broadcast_to(prior if start is None else start, (len(active), len(prior)))
    for _ in range(EM_STEPS):
        if not len(active):
            break
        w = weights[active]
        total = w.sum(1, keepdims=True)

        def step(x: np.ndarray, w=w, total=total) -> np.ndarray:
            return x * ((w / np.maximum(x @ a.T, 1e-300)) @ a) / total

        def loglik(x: np.ndarray, w=w) -> np.ndarray:
            return (w * np.log(np.maximum(x @ a.T, 1e-300))).sum(1)

        now = shares[active]
        once = step(now)
        twice = step(once)
        r, v = once - now, twice - 2 * once + now
        alpha = -np.sqrt((r ** 2).sum(1, keepdims=True) / np.maximum((v ** 2).sum(1, keepdims=True), 1e-300))
        alpha = np.minimum(alpha, -1.0)  # -1 is the plain double step
        jump = now - 2 * alpha * r + alpha ** 2 * v
        # a jump off the simplex, onto its edge (a share at 0 never leaves it) or to a lower likelihood is not taken
        inside = (jump > 0).all(1)
        jump = np.where(inside[:, None], jump, twice)
        jump = jump / jump.sum(1, keepdims=True)
        taken = inside & (loglik(jump) >= loglik(twice))
        new = step(np.where(taken[:, None], jump, twice))
        shares[active] = new
        active = active[np.abs(new - now).max(1) >= EM_TOL]
    return shares


def estimate(probs: np.ndarray, method: str, stats: dict | None = None, weights: np.ndarray | None = None
             ) -> np.ndarray:
    """Each class's estimated share [C] among the posts ``probs`` [N, C] (each post counted ``weights`` times)."""
    if method not in METHODS:
        raise ValueError(f"quantification method must be one of {', '.join(METHODS)}, not {method!r}")
    if method in NEEDS_STATS and not (stats and (method != "em" or "prior" in stats)):
        raise ValueError(f"{method} needs the bundle's validation statistics (a predictions file from "
                         "`emocare predict` with this version writes them to its .models.json); use pcc or count")
    w = np.ones(len(probs)) if weights is None else weights
    if method == "em":
        return _em(probs, w[None], _em_prior(stats))[0]
    if method in ("count", "acc"):
        observed = np.bincount(probs.argmax(1), weights=w, minlength=probs.shape[1]) / w.sum()
    else:
        observed = w @ probs / w.sum()
    if method in ("count", "pcc"):
        return observed
    return _adjust(observed, np.asarray(stats["confusion" if method == "acc" else "mean_probs"]))


def _posterior_shares(probs: np.ndarray, prior: np.ndarray, start: np.ndarray, draws: int, rng: np.random.Generator
                      ) -> np.ndarray:
    """``draws`` draws [draws, C] of the period's own class shares (the share of its posts ``probs`` [N, C] whose
    label is each class) from their posterior under prior shift, by data augmentation (Tanner & Wong 1987): each
    sweep draws every post's label from its posterior under the current shares (``probs`` re-weighted as in
    :func:`_em`), then the shares from a Dirichlet with the label counts plus one. Starts at em's maximum
    ``start``; keeps every :data:`THIN_SWEEPS`-th sweep after :data:`BURN_SWEEPS`.

    Unlike a bootstrap of em's maximum, whose resamples pile at 0 with it where a class has a handful of posts, the
    posterior keeps the shares the posts cannot rule out, and it is of the period's own shares rather than of the
    mix it was drawn from (measured: ``benchmarks/quantification.py``, coverage by share size)."""
    # classes first ([C, N]): a sweep's sums run along rows (1.6x faster than across them)
    a = np.ascontiguousarray((probs / prior.clip(1e-6, None)).T)
    k, n = a.shape
    shares, out = (start + 1e-3) / (start + 1e-3).sum(), np.empty((draws, k))
    for sweep in range(BURN_SWEEPS + draws * THIN_SWEEPS):
        odds = np.cumsum(a * shares[:, None], axis=0)
        labels = (odds < rng.random(n) * odds[-1]).sum(0)  # each post's label, by inversion
        counts = np.bincount(labels, minlength=k)
        shares = rng.dirichlet(counts + 1.0)
        kept, rest = divmod(sweep - BURN_SWEEPS, THIN_SWEEPS)
        if sweep >= BURN_SWEEPS and not rest:
            out[kept] = counts / n
    return out


def _redrawn(stats: dict, draws: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``draws`` copies of the validation statistics as other validation splits of the same size would give them:
    the class mix redrawn (multinomial), then each class's confusion column (multinomial) and mean probabilities
    (Dirichlet with the same mean and a multinomial's variance) from that many posts. Returns confusion [B, C, C]
    and mean_probs [B, C, C]."""
    posts, prior = max(int(stats.get("posts", 0)), 1), np.asarray(stats["prior"], float)
    counts = rng.multinomial(posts, prior / prior.sum(), size=draws)
    mats = {}
    for key in ("confusion", "mean_probs"):
        base = np.asarray(stats.get(key, np.eye(len(prior))), float)
        out = np.broadcast_to(base, (draws, *base.shape)).copy()
        for b in range(draws):
            for j in np.flatnonzero(counts[b]):
                column = base[:, j].clip(0, None)
                if key == "confusion":
                    out[b, :, j] = rng.multinomial(counts[b, j], column / column.sum()) / counts[b, j]
                else:
                    out[b, :, j] = rng.dirichlet(np.maximum(column / column.sum() * counts[b, j], 1e-3))
        mats[key] = out
    return mats["confusion"], mats["mean_probs"]


# Its matrix products are thin ([B, N] by C classes): a second BLAS thread costs more than it gives (per period, 5x
# slower on the shared 2-core machine under load), so the bootstrap runs on one
@threadpool_limits.wrap(limits=1, user_api="blas")
def interval(probs: np.ndarray, method: str, stats: dict | None = None, resamples: int = BOOTSTRAP,
             seed: int = 0, classifier_error: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The central ``LEVEL`` interval (low [C], high [C]) of the share :func:`estimate` estimates.

    ``resamples`` draws of the period's shares (its sampling error): for ``em`` from their posterior
    (:func:`_posterior_shares`), else estimates on bootstrap resamples of its posts (:func:`_bootstrap`). For the
    methods that adjust with the validation statistics (:data:`NEEDS_STATS`) and ``classifier_error``, each draw
    also has a draw of the classifier's error taken off where the statistics keep the validation posts: the
    estimator's error on a bootstrap copy of them re-mixed to the period's estimate (:func:`_classifier_errors`:
    how far the calibration is off at that mix), and for ``em`` also how far the estimate moves with the
    calibration fitted on a bootstrap copy of them (:func:`_refit_errors`: another validation split's). ``acc``
    and ``pacc`` from older bundles (no validation posts) are estimated with redrawn validation statistics
    instead, as another validation split of that size would give them."""
    rng = np.random.default_rng(seed)
    estimate(probs[:1], method, stats)  # a bad method or missing statistics fail here, before any work
    # the classifier's error from the validation posts, where the statistics keep them (else as far as redrawing
    # the statistics shows it, _bootstrap): subtracted from each draw of the period, draw by draw
    from_validation = classifier_error and method in NEEDS_STATS and bool(stats.get("labels"))
    # the period's estimate, where a draw is centred on it or the classifier's error is taken at its mix: once
    share = estimate(probs, method, stats) if method == "em" or from_validation else None
    if method == "em":
        draws = _posterior_shares(probs, _em_prior(stats), share, resamples, rng)
        # em's only validation statistic is the mix its calibration was fitted on; the calibration's bias moves with
        # that mix, so without the validation posts there is no error of the classifier's to draw
        if from_validation:
            draws = draws - _refit_errors(share, probs, stats, resamples, rng)
    else:
        draws = _bootstrap(probs, method, stats, resamples, rng, classifier_error and not from_validation)
    if from_validation:
        draws = draws - _classifier_errors(share, method, stats, resamples, rng)
    tail = 100 * (1 - LEVEL) / 2
    return np.percentile(draws, tail, axis=0).clip(0, 1), np.percentile(draws, 100 - tail, axis=0).clip(0, 1)


def _bootstrap(probs: np.ndarray, method: str, stats: dict | None, resamples: int, rng: np.random.Generator,
               redraw: bool) -> np.ndarray:
    """``resamples`` estimates [resamples, C] of ``method`` (not ``em``) on bootstrap resamples of the period's posts
    ``probs``; with ``redraw``, ``acc`` and ``pacc`` each with redrawn validation statistics (:func:`_redrawn`). Draws
    go in blocks of about two million post weights, so memory stays bounded for any period size."""
    # for acc and pacc from a bundle without validation posts, redrawing their statistics is the classifier's error
    # we have
    redraw = redraw and method in ("acc", "pacc")
    confusion, mean_probs = _redrawn(stats, resamples, rng) if redraw else (None, None)
    n, k = probs.shape
    draws, block = [], max(1, 2_000_000 // max(n, 1))
    for first in range(0, resamples, block):
        size = min(block, resamples - first)
        picks = rng.integers(0, n, (size, n)) + n * np.arange(size)[:, None]  # draw b's posts, offset to row b
        weights = np.bincount(picks.ravel(), minlength=size * n).reshape(size, n).astype(float)
        if method in ("count", "pcc"):  # linear in the weights: every resample in one product
            counted = probs if method == "pcc" else np.eye(k)[probs.argmax(1)]
            draws.append(weights @ counted / weights.sum(1, keepdims=True))
            continue
        for b in range(size):
            redrawn = stats if not redraw else {**stats, "confusion": confusion[first + b],
                                                "mean_probs": mean_probs[first + b]}
            draws.append(estimate(probs, method, redrawn, weights[b])[None])
    return np.concatenate(draws)


def _refit_errors(share: np.ndarray, probs: np.ndarray, stats: dict, draws: int, rng: np.random.Generator
                  ) -> np.ndarray:
    """How far em's estimate ``share`` of the period ``probs`` would move [draws, C] had the calibration been fitted
    on another validation split of the same size. Each draw takes a bootstrap copy of the validation posts kept in
    ``stats`` and the change ``d`` of the calibration's per-class biases that makes their mean probability match the
    copy's class mix again, as fitting on the copy would (the fitted biases match the split's own mix: the bias
    terms' condition at the minimum of the log-loss), to first order: one Newton step from the fitted biases. em then
    runs on the probabilities that calibration gives (each post's odds times ``exp(d)``) for the mix it was fitted
    on (the copy's): em with the prior ``mix * exp(-d)``. The mix must move with the biases: the part of ``d`` that
    only follows the copy's mix cancels in em, and a fixed prior would count it as error. Probabilities calibrated
    for another mix (``em_prior``) are first re-weighted to the validation labels' mix, as the biases would."""
    val, labels = np.asarray(stats["probs"], float), np.asarray(stats["labels"], int)
    shift = np.asarray(stats["prior"], float).clip(1e-6, None) / _em_prior(stats).clip(1e-6, None)
    val = val * shift  # rows rounded in the statistics: sums of 1 (below) keep the biases' level free
    val = val / val.sum(1, keepdims=True)
    n, k = val.shape
    onehot = np.eye(k)[labels]
    picks = rng.integers(0, n, (draws, n)) + n * np.arange(draws)[:, None]
    copies = np.bincount(picks.ravel(), minlength=draws * n).reshape(draws, n)
    mix = copies @ onehot / n  # [draws, C]: each copy's class mix
    gap = mix - copies @ val / n  # and its mean probability short of it
    slope = np.diag(val.mean(0)) - val.T @ val / n  # how the mean probability moves with the biases
    change = gap @ np.linalg.pinv(slope, rcond=1e-10, hermitian=True)  # a common level of the biases is no change
    prior = mix.clip(1e-6, None) * np.exp(-(change - change.mean(1, keepdims=True))) / shift
    one = np.ones((1, len(probs)))
    return np.concatenate([_em(probs, one, p, share) for p in prior]) - share


def _classifier_errors(share: np.ndarray, method: str, stats: dict, draws: int, rng: np.random.Generator
                       ) -> np.ndarray:
    """The classifier's error in the estimate at the mix ``share`` [draws, C]: the estimator's errors (estimate -
    true shares) on bootstrap copies of the validation posts re-mixed to ``share`` (as many posts as validation has,
    drawn with replacement within each class; each class given one post's worth more, so that a class estimated at
    0 is still drawn). They hold how far the calibration and confusions are off at that mix, and how much they
    would move had another validation split fitted them."""
    probs, labels = np.asarray(stats["probs"], float), np.asarray(stats["labels"], int)
    n, k = probs.shape
    present = np.bincount(labels, minlength=k) > 0
    mix = np.where(present, (n * share.clip(0, 1) + 1) / (n + k), 0)
    counts = rng.multinomial(n, mix / mix.sum(), size=draws)
    out, block = [], max(1, 2_000_000 // n)
    for first in range(0, draws, block):
        part = counts[first:first + block]
        picks = []  # draw b's posts, offset to row b (as flat indices into weights [draws, n])
        for c in np.flatnonzero(present):
            rows, draw = np.flatnonzero(labels == c), np.repeat(np.arange(len(part)), part[:, c])
            picks.append(rows[rng.integers(0, len(rows), len(draw))] + n * draw)
        weights = np.bincount(np.concatenate(picks), minlength=len(part) * n).reshape(len(part), n).astype(float)
        if method == "em":
            found = _em(probs, weights, _em_prior(stats), mix)
        else:
            found = np.stack([estimate(probs, method, stats, w) for w in weights])
        out.append(found - part / n)
    return np.concatenate(out)
