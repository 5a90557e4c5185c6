"""Which stage of a chained (text -> LLM -> music) task two executions parted in.

A chain's audio stage is conditioned on its text stage's answer, so a difference in the
text stage explains any difference after it: the text stage is blamed first, the audio stage
only when the text stages agree bit for bit. Inputs are the digests of two records (as
``Output.digests()`` writes them: one entry per array name).
"""

from __future__ import annotations

from collections.abc import Mapping

TEXT_ARRAYS = ("text_token_ids",)
AUDIO_ARRAYS = ("codes", "latents", "waveform")


def attribute_stage(digests_a: Mapping[str, str], digests_b: Mapping[str, str]) -> str | None:
    """``"text"`` when the text stages' token ids differ, ``"audio"`` when the text stages agree
    but an audio array (codes, latents or waveform) differs, None when every stage agrees.

    An array present in one record and missing from the other counts as a difference; an
    array missing from both is not compared.
    """

    def differs(names: tuple[str, ...]) -> bool:
        return any(digests_a.get(n) != digests_b.get(n) for n in names if n in digests_a or n in digests_b)

    if differs(TEXT_ARRAYS):
        return "text"
    if differs(AUDIO_ARRAYS):
        return "audio"
    return None
