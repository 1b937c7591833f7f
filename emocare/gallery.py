"""The error gallery: ``reports/test/errors.html``, the misclassified test posts as one self-contained page.

Each card shows the post's text, a thumbnail (a strip of sampled frames for a video), the true
and predicted class and the probabilities as small bars. Three filters (true class, predicted
class, modality combination) work with a few lines of inline script, and can be set from the URL
(``errors.html?true=anger&combo=text``); nothing is loaded from elsewhere, so the page opens
offline and can be attached to a message.
"""

from __future__ import annotations

import html

from emocare.labels import LabelSet
from emocare.media.thumbs import thumbnail

THUMB_PX = 160

_SCRIPT = """
const filters = Array.from(document.querySelectorAll('select[data-key]'));
const query = new URLSearchParams(location.search);  // errors.html?true=anger&combo=text opens filtered
filters.forEach(f => { if (query.get(f.dataset.key)) f.value = query.get(f.dataset.key); });
function apply() {
  let shown = 0;
  document.querySelectorAll('.card').forEach(card => {
    const ok = filters.every(f => !f.value || card.dataset[f.dataset.key] === f.value);
    card.style.display = ok ? '' : 'none';
    shown += ok;
  });
  document.getElementById('shown').textContent = shown;
}
filters.forEach(f => f.addEventListener('change', apply));
apply();
"""


def _select(key: str, label: str, values: list[tuple[str, str]]) -> str:
    options = "".join(f'<option value="{html.escape(v)}">{html.escape(t)}</option>' for v, t in values)
    return f'<label>{label} <select data-key="{key}"><option value="">all</option>{options}</select></label>'


def ocr_line(ocr_text) -> str:
    """The text read from a post's media (``text.ocr``), as a line under its own text; "" when there is none."""
    if not isinstance(ocr_text, str) or not ocr_text:
        return ""
    return f'<p class="ocr" title="text read from the media (OCR)">&#128444; {html.escape(ocr_text[:200])}</p>'


def attribution_line(attribution) -> str:
    """What each modality adds to the predicted label's probability (its fall when the modality is hidden), as a
    line; "" for a post with one modality."""
    if not isinstance(attribution, dict):
        return ""
    # a modality the post lacks: left out of a JSON result, null in a Parquet struct, NaN in an array
    parts = [f"{html.escape(m)} {100 * v:+.0f} pts" for m, v in attribution.items() if v is not None and v == v]
    if not parts:
        return ""
    return ('<p class="attr" title="how much each modality adds to the predicted label\'s probability: its fall '
            f'when the modality is hidden">why: {" &middot; ".join(parts)}</p>')


def _card(err: dict, classes: LabelSet) -> str:
    e = html.escape
    thumb = thumbnail(err.get("image"), err.get("video"), THUMB_PX)
    media = f'<img src="{thumb}" alt="{e(err["modalities"])}">' if thumb else '<div class="nomedia">text only</div>'
    bars = "".join(
        f'<div class="bar"><span class="name">{e(classes.display[c])}</span><span class="track"><span class="fill" '
        f'style="width:{100 * err["probabilities"][c]:.1f}%;background:{classes.colours[c]}"></span></span>'
        f'<span class="pct">{100 * err["probabilities"][c]:.0f}%</span></div>' for c in classes)
    true, pred = e(classes.display[err["true"]]), e(classes.display[err["predicted"]])
    return (f'<div class="card" data-true="{err["true"]}" data-pred="{err["predicted"]}" '
            f'data-combo="{e(err["modalities"])}">{media}<p>{e(err["text"][:200])}</p>{ocr_line(err.get("ocr_text"))}'
            f'{attribution_line(err.get("attribution"))}<div class="verdict">{true} &rarr; <b>{pred}</b> '
            f'<small>{e(err["modalities"])} &middot; {e(err["id"])}</small></div>{bars}</div>')


def error_gallery(errors: list[dict], total_test: int, classes: LabelSet) -> str:
    """The page for ``errors`` (records of ``errors.jsonl``: id, true, predicted, probabilities, text, media);
    its filters offer the classes of ``classes``."""
    options = [(c, classes.display[c]) for c in classes]
    combos = [(c, c) for c in sorted({err["modalities"] for err in errors})]
    cards = "".join(_card(err, classes) for err in errors)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>EmoCare: misclassified test posts</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 20px; color: #202124; }}
.filters label {{ margin-right: 16px; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; margin-top: 14px; }}
.card {{ width: 230px; border: 1px solid #dadce0; border-radius: 6px; padding: 8px; font-size: 13px; }}
.card img {{ display: block; max-width: {THUMB_PX}px; max-height: {THUMB_PX}px; margin: 0 auto 6px; }}
.nomedia {{ height: 40px; line-height: 40px; text-align: center; color: #80868b; background: #f1f3f4; }}
.card p {{ margin: 4px 0; min-height: 2.4em; }} .card p.ocr {{ min-height: 0; color: #5f6368; font-style: italic; }}
.card p.attr {{ min-height: 0; color: #5f6368; font-size: 12px; }}
.verdict {{ margin: 4px 0 6px; }} .verdict small {{ color: #5f6368; display: block; }}
.bar {{ display: flex; align-items: center; gap: 4px; font-size: 11px; }}
.bar .name {{ width: 82px; }} .bar .pct {{ width: 32px; text-align: right; }}
.bar .track {{ flex: 1; height: 8px; background: #f1f3f4; border-radius: 4px; overflow: hidden; }}
.bar .fill {{ display: block; height: 100%; }}
</style></head><body>
<h1>Misclassified test posts</h1>
<p>The {len(errors)} most confident mistakes among {total_test} test posts
(<code>evaluate.errors</code> in params.yaml); <span id="shown">{len(errors)}</span> shown.</p>
<div class="filters">{_select("true", "true class", options)}{_select("pred", "predicted", options)}
{_select("combo", "modalities", combos)}</div>
<div class="grid" id="gallery">{cards}</div>
<script>{_SCRIPT}</script>
</body></html>
"""
